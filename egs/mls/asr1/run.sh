#!/usr/bin/env bash
# Dynamic ASR Pathways (paper 003) on Multilingual LibriSpeech (openslr.org/94): English,
# French, Italian and Dutch as in the paper, the 10 h limited-supervision training sets, the
# MLS dev and test sets. Data: local/data.sh downloads mls_<language>_opus.tar.gz (resumable;
# or --local-data-opts "--mls-root DIR" reads unpacked copies) and prepares data/<code>/
# (`sprune prep mls`), linked as data/<tag>/. The stages are egs/TEMPLATE/asr1/pathways.sh:
# dense multilingual XLSR-53 + CTC, then per seed and sparsity IMP and adaptive masks per
# language, ASR Pathways, Dynamic ASR Pathways from IMP masks and from LAP; RESULTS.md.
#
#   ./run.sh --nj 1                                      # on one GPU
#   ./run.sh --local-data-opts "--mls-root /data/mls"    # archives unpacked before
#   ./run.sh --upstream /models/xlsr53                   # a local checkpoint (no hub)
#   ./run.sh --local-data-opts "--train-set 1h" --train-name train_1h   # the 1 h sets
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

exec ./pathways.sh --finetune-config conf/finetune.yaml --dense-config conf/dense.yaml \
  --langs "en-US fr-FR it-IT nl-NL" --train-name train_10h \
  --local-data-opts "--langs en,fr,it,nl --train-set 10h" \
  --sparsities "0.5 0.7" --seeds "1 2 3" --tag mls "$@"
