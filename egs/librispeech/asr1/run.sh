#!/usr/bin/env bash
# LSR of paper 001 (Fig. 3): CTC fine-tuning of an English-pretrained wav2vec 2.0 on the
# Libri-light limited-resource sets (10 min / 1 h / 10 h, conf/finetune_<split>.yaml), every
# unstructured pruning method at every sparsity, WER on LibriSpeech dev/test.
#
#   ./run.sh --split 10min --librispeech-root /data --librilight-root /data \
#            --upstream /models/wav2vec2-base
#
# Stages (asr.sh): 1 data, 2 phonemize (char units: skipped), 3 dense, 4 prune, 5 retrain,
# 6 evaluate, 7 results + analysis; see ./asr.sh --help. Experiments: exp/finetune_<split>/.
# Stage 8 decodes the dense run with torchaudio's flashlight CTC decoder: greedy, beam,
# + lexicon, + a word 3-gram of the training transcripts, + a sprune LM when --neural-lm names
# one (e.g. ../lm1's dense LM), weights tuned on the dev set; the table goes into
# exp/<tag>/RESULTS.md (../../TEMPLATE/asr1/ctc_decode.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

split=10min           # 10min | 1h | 10h (conf/finetune_<split>.yaml)
librispeech_root=     # folder holding LibriSpeech/ (dev and test sets)
librilight_root=      # folder holding librispeech_finetuning/ (training sets)
download=false        # true: download both corpora into data/downloads (needs network access)
upstream=             # pretrained wav2vec 2.0 (HF dir, s3prl/fairseq .pt, torchaudio:..., sprune dir)
dev_set=dev-other     # LibriSpeech split used during fine-tuning
test_sets="test-clean test-other"   # LibriSpeech splits decoded in stage 6
methods="rp mpi omp imp parp parp-p"
sparsities="0.1 0.3 0.5 0.7 0.9"
stage=1
stop_stage=100
tag=                  # default: finetune_<split>
nj=1
threads=0
prune_opts=
neural_lm=            # stage 8: a sprune LM folder (../lm1/exp/<tag>/dense/final) to fuse
decode_opts=          # stage 8: more ../../TEMPLATE/asr1/ctc_decode.sh options

help_message="Usage: $0 --upstream SPEC (--librispeech-root DIR --librilight-root DIR | --download true) [options]
  --split NAME              10min, 1h or 10h (default $split)
  --librispeech-root DIR    folder holding LibriSpeech/<split>/
  --librilight-root DIR     folder holding librispeech_finetuning/
  --download BOOL           fetch the corpora from openslr.org / dl.fbaipublicfiles.com
  --upstream SPEC           pretrained upstream (required)
  --dev-set NAME            LibriSpeech dev split (default $dev_set)
  --test-sets LIST          LibriSpeech test splits (default \"$test_sets\")
  --methods LIST            pruning methods (default \"$methods\")
  --sparsities LIST         target sparsities (default \"$sparsities\")
  --stage N / --stop-stage N / --tag NAME / --nj N / --threads N / --prune-opts OPTS
                            as in ./asr.sh --help; stage 8: CTC decoding of the dense run
  --neural-lm DIR           stage 8: a sprune LM to fuse (default: none)
  --decode-opts OPTS        stage 8: more ctc_decode.sh options (e.g. \"--beam 64\")"

. utils/launch.sh   # --ngpu, --num-nodes, ...: passed on to ./asr.sh (torchrun)
help_message+=$launch_help
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
launch_check
[ -f "conf/finetune_$split.yaml" ] || { echo "$0: unknown --split '$split' (conf/finetune_$split.yaml missing; use 10min, 1h or 10h)" >&2; exit 2; }
[ -n "$upstream" ] || { echo "$0: pass --upstream (a local pretrained wav2vec 2.0); see --help" >&2; exit 2; }

. local/data_opts.sh
data_opts=$(data_opts "$split" "$dev_set $test_sets")
tests=()
for t in $test_sets; do tests+=("data/${t//-/_}"); done

./asr.sh \
  --finetune-config "conf/finetune_$split.yaml" \
  --upstream "$upstream" \
  --methods "$methods" \
  --sparsities "$sparsities" \
  --local-data-opts "$data_opts" \
  --train-set "data/train_$split" --dev-set "data/${dev_set//-/_}" --test-sets "${tests[*]}" \
  --stage "$stage" --stop-stage "$stop_stage" --tag "${tag:-finetune_$split}" \
  --nj "$nj" --threads "$threads" --prune-opts "$prune_opts" "${launch_opts[@]}"

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  expdir=exp/${tag:-finetune_$split}
  # shellcheck disable=SC2086
  ../../TEMPLATE/asr1/ctc_decode.sh --run "$expdir/dense" --train-set "data/train_$split" \
    --dev-set "data/${dev_set//-/_}" --test-set "${tests[0]}" --lm-dir "$expdir/decode_lm" \
    --lm-config none ${neural_lm:+--neural-lm "$neural_lm"} --report "$expdir/RESULTS.md" \
    $decode_opts
fi
