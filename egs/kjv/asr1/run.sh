#!/usr/bin/env bash
# Paper 002's ASR measurement offline: a transducer on the tiny pretrained upstream, trained
# on King James verses spoken by espeak-ng (the LM recipe's training text; dev and test are
# its held-out chapters, spoken by voices never heard in training), decoded without an LM,
# with the dense LM and with every pruned and from-scratch LM of ../lm1 fused by sprune's
# batched beam search; RESULTS.md gives WER against LM parameters / FLOPs per criterion,
# method and schedule, and the three questions by WER.
#
#   (cd ../lm1 && ./run.sh)      # first: the LM pruning study (its BPE units are shared)
#   ./run.sh                     # 26 min on 2 cores (README, Results)
#   ./run.sh --stage 5 --lodr-weights "0 0.1 0.2"    # re-decode with LODR
#
# Stages and options: ./run.sh --help (the stages live in transducer.sh; local/data.sh
# speaks the corpus). Experiment: exp/<tag>/dense (RESULTS.md, decode_*/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

lm_tag=mini           # the LM recipe's experiment ../lm1/exp/<lm_tag>
bpe_size=500          # the LM recipe's BPE (../lm1/data/bpe<size>/bpe.model)
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --lm-tag) lm_tag=$2; shift 2 ;;
    --bpe-size) bpe_size=$2; shift 2 ;;
    --help|-h)
      echo "Usage: $0 [--lm-tag NAME (default $lm_tag)] [--bpe-size N (default $bpe_size)] [transducer.sh options]"
      ./transducer.sh --help; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
./transducer.sh --tag kjv --train-config conf/transducer.yaml \
  --bpe "../lm1/data/bpe$bpe_size/bpe.model" --lm-exp "../lm1/exp/$lm_tag" \
  --note "Corpus: King James verses of at most 15 words spoken by espeak-ng (local/data.sh)." \
  "${args[@]}"
