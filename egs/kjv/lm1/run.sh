#!/usr/bin/env bash
# Paper 002 (neural LM pruning) offline, on the King James Bible of Debian's bible-kjv
# reader: text prep with held-out chapters, BPE, a dense Transformer LM, the grid of
# criterion x method x schedule x size with fine-tuning, same-size from-scratch baselines,
# test perplexity / FLOPs / latency, and RESULTS.md answering the paper's three questions.
#
#   ./run.sh                       # --tag mini: the toy study, about 25 min on 2 cores (README)
#   ./run.sh --criteria "magnitude taylor wanda" --tag mini_wanda
#   ./run.sh --tag full            # paper-size LM and sizes 1M-15M (conf/full.conf; not run here)
#
# Stages and options: ./run.sh --help (the stages live in lm.sh; conf/<tag>.conf holds a
# tag's sizes and step budget). data/kjv/test.txt (+ test.ids) is held out: the next recipe
# speaks it for a transducer, so keep it out of any training.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

./lm.sh --corpus kjv --tag mini "$@"
