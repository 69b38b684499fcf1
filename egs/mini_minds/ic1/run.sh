#!/usr/bin/env bash
# Offline spoken-intent recipe: the synthetic MINDS-14-like corpus (espeak-ng speech), the
# shipped tiny pretrained HuBERT, and every unstructured pruning method of papers 000 and 001.
# `make demo` runs it. Stages and options: ./run.sh --help (stages live in ic.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

./ic.sh \
  --finetune-config conf/finetune.yaml \
  --methods "rp mpi omp imp parp parp-p" \
  --sparsities "0.5" \
  --local-data-opts "--langs en-US,en-GB,fr-FR,de-DE,es-ES,it-IT --seed 0" \
  "$@"
