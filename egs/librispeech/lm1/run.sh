#!/usr/bin/env bash
# Paper 002 (neural LM pruning) on the LibriSpeech LM corpus (openslr 11,
# librispeech-lm-norm.txt.gz, 1.4 GB): text prep with held-out blocks, BPE, the paper-size
# dense Transformer LM, the grid of criterion x method x schedule x size with fine-tuning,
# same-size from-scratch baselines, test perplexity / FLOPs / latency, RESULTS.md.
#
#   ./run.sh --source /data/librispeech-lm-norm.txt.gz   # a local copy (or the folder holding it)
#   ./run.sh                                            # downloads it into data/librispeech/downloads
#   ./run.sh --max-lines 500000 --sizes "10000000 5000000" --tag small
#
# Stages and options: ./run.sh --help (the stages are ../../TEMPLATE/lm1/lm.sh's; conf/paper.conf
# holds the default tag's sizes, step budget and --max-lines). Paper-size runs want a GPU
# (the configs use train.device auto) or many cores; tested on a small fixture only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

./lm.sh --corpus librispeech --tag paper "$@"
