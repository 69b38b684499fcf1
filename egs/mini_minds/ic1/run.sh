#!/usr/bin/env bash
# Offline spoken-intent recipe: the synthetic MINDS-14-like corpus (espeak-ng speech), the
# shipped tiny pretrained HuBERT, and every unstructured pruning method of papers 000 and 001.
# `make demo` runs it at demo scale (en-US + en-GB, 2 epochs, sparsities 0.3 / 0.6 / 0.9, one
# training seed: RESULTS.md says which differences are noise); pass e.g.
#   --seeds "1 2 3" --local-data-opts "--langs all" --prune-opts "--set train.epochs=10"
# for a fuller study with mean ± std over seeds. Stages and options: ./run.sh --help (the
# stages live in ic.sh).
# Corpus seed 1, not 0: the shipped upstream was pretrained on a seed-0 corpus whose first
# speakers are the voices a smaller seed-0 corpus draws too (its test speakers included).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

./ic.sh \
  --finetune-config conf/finetune.yaml \
  --methods "rp mpi omp imp parp parp-p" \
  --sparsities "0.3 0.6 0.9" \
  --local-data-opts "--langs en-US,en-GB --seed 1" \
  "$@"
