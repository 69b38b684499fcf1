#!/usr/bin/env bash
# Paper 002's ASR measurement on LibriSpeech: a transducer (conf/transducer_<split>.yaml) on a
# pretrained wav2vec 2.0, fine-tuned on a Libri-light set, decoded on LibriSpeech without an
# LM, with the dense LibriSpeech LM of ../lm1 and with every pruned and from-scratch LM of it,
# fused by sprune's batched beam search (LM weights tuned on the dev set).
#
#   (cd ../lm1 && ./run.sh --source /data/librispeech-lm-norm.txt.gz)   # the LMs first
#   ./run_transducer.sh --split 10h --librispeech-root /data --librilight-root /data \
#       --upstream /models/wav2vec2-base
#
# Stages (transducer.sh): 1 data, 2 LODR bigram, 3 transducer, 4 no-LM decoding, 5 dense LM,
# 6 every LM, 7 results; see ./transducer.sh --help. Experiment: exp/transducer_<split>/dense.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

split=10h             # 10min | 1h | 10h (conf/transducer_<split>.yaml)
librispeech_root=     # folder holding LibriSpeech/ (dev and test sets)
librilight_root=      # folder holding librispeech_finetuning/ (training sets)
download=false        # true: download both corpora into data/downloads (needs network access)
upstream=             # pretrained wav2vec 2.0 (HF dir, s3prl/fairseq .pt, torchaudio:..., sprune dir)
dev_set=dev-other     # LibriSpeech split the LM weights are tuned on
test_set=test-other   # LibriSpeech split decoded with every LM
lm_tag=paper          # the LM recipe's experiment ../lm1/exp/<lm_tag>
bpe_size=500          # the LM recipe's BPE units (../lm1/data/bpe<size>/bpe.model)
stage=1
stop_stage=100

help_message="Usage: $0 --upstream SPEC (--librispeech-root DIR --librilight-root DIR | --download true) [options]
  --split NAME              10min, 1h or 10h (default $split)
  --librispeech-root DIR    folder holding LibriSpeech/<split>/
  --librilight-root DIR     folder holding librispeech_finetuning/
  --download BOOL           fetch the corpora from openslr.org / dl.fbaipublicfiles.com
  --upstream SPEC           pretrained upstream (required)
  --dev-set NAME / --test-set NAME   LibriSpeech splits (default $dev_set / $test_set)
  --lm-tag NAME / --bpe-size N       the LM recipe's experiment and units (default $lm_tag / $bpe_size)
  --stage N / --stop-stage N         as in ./transducer.sh --help
  -- OPTIONS                what follows -- goes to ./transducer.sh as it is, e.g.
                            -- --lm-weights \"0.2 0.4\" --nj 4"

. utils/launch.sh   # --ngpu, --num-nodes, ...: passed on to ./transducer.sh (torchrun)
help_message+=$launch_help
. utils/parse_options.sh   # stops at --: the rest stays in "$@" for transducer.sh
launch_check
[ -f "conf/transducer_$split.yaml" ] || { echo "$0: unknown --split '$split' (conf/transducer_$split.yaml missing; use 10min, 1h or 10h)" >&2; exit 2; }
[ -n "$upstream" ] || { echo "$0: pass --upstream (a local pretrained wav2vec 2.0); see --help" >&2; exit 2; }

. local/data_opts.sh
data_opts=$(data_opts "$split" "$dev_set $test_set")

./transducer.sh --tag "transducer_$split" --train-config "conf/transducer_$split.yaml" \
  --upstream "$upstream" --local-data-opts "$data_opts" \
  --train-set "data/train_$split" --dev-set "data/${dev_set//-/_}" \
  --test-set "data/${test_set//-/_}" --bpe "../lm1/data/bpe$bpe_size/bpe.model" \
  --lm-exp "../lm1/exp/$lm_tag" --stage "$stage" --stop-stage "$stop_stage" \
  "${launch_opts[@]}" "$@"
