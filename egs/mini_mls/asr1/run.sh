#!/usr/bin/env bash
# Dynamic ASR Pathways (paper 003) at toy scale, offline: four languages as in MLS (en, fr,
# it, nl) from Debian text packages spoken by espeak-ng (local/data.sh), the shipped tiny
# HuBERT upstream pretrained on the synthetic corpus' nine languages, character CTC.
#
# One dense multilingual model, then for each seed and sparsity: IMP per language, adaptive
# masks per language (from IMP's mask), ASR Pathways (IMP masks, fixed), Dynamic ASR Pathways
# from the IMP masks and from one language-agnostic mask (LAP); RESULTS.md with mean and
# spread over the seeds (the stages are egs/TEMPLATE/asr1/pathways.sh; ./run.sh --help).
# Every run is decoded by flashlight's beam search with a character 6-gram of the training
# transcripts (weight tuned on dev with the dense model); --unit-lm-order 0: greedy.
#
#   ./run.sh                                  # the default study (see README.md for its time)
#   ./run.sh --seeds 1 --sparsities 0.7       # a quicker look
#   ./run.sh --stage 6                        # RESULTS.md again
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

exec ./pathways.sh --finetune-config conf/finetune.yaml --dense-config conf/dense.yaml \
  --langs "en-US fr-FR it-IT nl-NL" --sparsities "0.5 0.7" --seeds "1 2 3" \
  --nj 2 --threads 1 --dense-threads 2 --multi-opts "--set train.max_steps=160" \
  --unit-lm-order 6 \
  --tag mini "$@"
