#!/usr/bin/env bash
# Shared stages of the transducer recipes with LM fusion (paper 002's ASR measurement; the
# design card's "decoding with shallow fusion of a pruned NNLM into a transducer").
# egs/kjv/asr1 and egs/librispeech/asr1 link to this file (ESPnet style); run it from a
# recipe folder (its run.sh does).
#
#   1  data       local/data.sh $local_data_opts -> data/{train,dev,test} (recipe-specific)
#   2  lodr       sprune lm ngram on data/train's transcripts -> data/lodr.2gram (LODR)
#   3  train      sprune prune --method dense: the transducer on --bpe (the LM recipe's units)
#                 -> exp/<tag>/dense
#   4  nolm       sprune decode without an LM: greedy (decode_greedy) and beam --beam
#                 (decode_nolm) on the test set
#   5  dense LM   sprune decode with the LM recipe's dense LM, LM weight, LODR weight and
#                 length bonus tuned on dev over --lm-weights x --lodr-weights x
#                 --length-bonuses -> decode_lm_dense
#   6  every LM   every pruned and from-scratch LM of --lm-exp (shrunk/ when it exists, else
#                 final/), with the dense LM's weights (--tune-each false) or its own dev-tuned
#                 ones (--tune-each true) -> decode_lm_<LM run>; --nj decodes at once
#   7  results    sprune lm results --asr-run -> exp/<tag>/dense/RESULTS.md (WER against LM
#                 parameters / FLOPs per criterion, method, schedule; the three questions by
#                 WER), results.csv, wer_vs_{params,flops}.png
#
# Finished work is skipped (a trained run, a result.json newer than its LM); a killed
# training resumes from its last checkpoint: re-run the same command.
set -euo pipefail

stage=1
stop_stage=100
tag=transducer          # exp/<tag>
train_config=conf/transducer.yaml   # the transducer fine-tuning config (task: transducer)
upstream=               # default: the config's upstream
bpe=                    # the LM recipe's BPE model (required): LM and transducer share units
lm_exp=                 # the LM recipe's experiment folder (its dense/ and every other run)
local_data_opts=        # options of local/data.sh (stage 1)
train_set=data/train
dev_set=data/dev
test_set=data/test
beam=4                  # beam of every decoding with and without an LM
lm_weights="0.1 0.2 0.3 0.4 0.5"   # the dev grid of the dense LM's weight
lodr_weights="0"        # LODR weights tried with each LM weight (e.g. "0 0.1 0.2")
length_bonuses="0 1 2 3"   # per-token bonuses tried with them (fusion favours deletions)
tune_each=false         # true: every LM gets its own dev-tuned weights (slower)
nj=2                    # decoding jobs at once (stage 6)
threads=1               # torch threads per decoding job; training uses nj x threads
train_opts=             # more sprune prune options, e.g. "--set train.max_steps=2000"
decode_opts=            # more sprune decode options, e.g. "--blank-penalty 0.5"
note=                   # a paragraph for RESULTS.md

help_message="Usage: $0 --bpe MODEL --lm-exp DIR [options]
  --stage N / --stop-stage N   1 data, 2 lodr, 3 train, 4 no-LM decoding, 5 dense LM,
                               6 every LM, 7 results (default $stage..$stop_stage)
  --tag NAME                   experiment exp/NAME (default $tag)
  --train-config FILE          transducer fine-tuning config (default $train_config)
  --upstream SPEC              upstream (default: the config's)
  --bpe MODEL                  the LM recipe's BPE model (required)
  --lm-exp DIR                 the LM recipe's experiment folder (required from stage 5)
  --local-data-opts OPTS       options of local/data.sh
  --train-set / --dev-set / --test-set DIR   data dirs (default $train_set, $dev_set, $test_set)
  --beam N                     beam size (default $beam)
  --lm-weights LIST            LM weights tuned on dev (default \"$lm_weights\")
  --lodr-weights LIST          LODR weights tuned with them (default \"$lodr_weights\")
  --length-bonuses LIST        per-token bonuses tuned with them (default \"$length_bonuses\")
  --tune-each true|false       tune the weights of every LM, not only the dense one's
                               (default $tune_each)
  --nj N / --threads N         decoding jobs at once / torch threads each (default $nj / $threads)
  --train-opts / --decode-opts OPTS   more options of sprune prune / sprune decode
  --note TEXT                  a paragraph under the title of RESULTS.md"

. ./path.sh
. utils/launch.sh            # --ngpu, --num-nodes, ...: stage 3 trains under torchrun
help_message+=$launch_help
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
launch_check

log() { echo "$(date '+%H:%M:%S') [$(basename "$0")] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
die() { echo "$0: $*" >&2; exit 2; }
is_count() { case $1 in ''|*[!0-9]*) return 1;; *) [ "$1" -gt 0 ];; esac; }
for name in beam nj threads; do
  is_count "${!name}" || die "--${name//_/-} must be a positive integer, got '${!name}'"
done
[ -n "$bpe" ] || die "--bpe is empty: give the LM recipe's BPE model (e.g. ../lm1/data/bpe500/bpe.model)"
[ -f "$train_config" ] || die "config $train_config not found"
comma() { echo "$*" | tr -s ' ' ','; }
# torch threads of the training: nj x threads for one process; under torchrun each of its
# processes gets --threads
train_threads=$(( $(launch_jobs "$nj") * threads ))

run=exp/$tag/dense
lodr=data/lodr.2gram
# shellcheck disable=SC2206  # the *_opts hold several words
train_extra=($train_opts)
# shellcheck disable=SC2206
decode_extra=($decode_opts)
pool_log_dir=exp/$tag/log
# shellcheck disable=SC1091  # the job pool beside the real transducer.sh: egs/TEMPLATE
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../job_pool.sh"
lodr_args=()
[ "$lodr_weights" = 0 ] || lodr_args=(--lodr "$lodr")

if run_stage 1; then
  log "stage 1: data -> $train_set $dev_set $test_set"
  eval "local/data.sh $local_data_opts"   # eval: the options may hold quoted words
fi

if run_stage 2; then
  [ -f "$bpe" ] || die "stage 2: BPE model $bpe not found (run the LM recipe's stage 2)"
  if [ -f "$lodr" ] && [ "$lodr" -nt "$train_set/text" ] && [ "$lodr" -nt "$bpe" ]; then
    log "stage 2: $lodr is newer than $train_set/text and $bpe; skipping"
  else
    log "stage 2: LODR bigram of $train_set's transcripts -> $lodr"
    sprune lm ngram --data "$train_set" --bpe "$bpe" --out "$lodr"
  fi
fi

if run_stage 3; then
  if [ -f "$run/outcome.json" ]; then
    log "stage 3: $run finished before; skipping"
  else
    log "stage 3: transducer ($train_config) on $train_set -> $run"
    OMP_NUM_THREADS=$train_threads MKL_NUM_THREADS=$train_threads \
      sprune_train prune --config "$train_config" --method dense ${upstream:+--upstream "$upstream"} \
      --train "$train_set" --dev "$dev_set" --out "$run" --set "transducer.bpe=$bpe" \
      "${train_extra[@]}"
  fi
fi

# fresh NAME [LM_DIR]: $run/decode_NAME/result.json is newer than the run and than the LM's
# weights, so that decoding is skipped (delete the folder to decode again, e.g. with another
# weight grid)
fresh() {
  local result=$run/decode_$1/result.json
  [ -f "$result" ] && [ "$result" -nt "$run/outcome.json" ] \
    && { [ -z "${2:-}" ] || [ "$result" -nt "$2/model.safetensors" ]; }
}
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

if run_stage 4; then
  [ -f "$run/outcome.json" ] || die "stage 4: $run is not trained (run stage 3)"
  for name in greedy nolm; do
    width=$beam
    [ "$name" = greedy ] && width=1
    if fresh "$name"; then
      log "stage 4: $run/decode_$name is up to date; skipping"
      continue
    fi
    log "stage 4: decoding $test_set without an LM, beam $width -> $run/decode_$name"
    sprune decode "$run" --test "$test_set" --beam "$width" --name "$name" "${decode_extra[@]}"
  done
fi

lm_of() {   # the LM a run of the LM recipe is measured as: shrunk/ if any, else final/
  if [ -d "$1/shrunk" ]; then echo "$1/shrunk"; else echo "$1/final"; fi
}

if run_stage 5; then
  [ -n "$lm_exp" ] || die "--lm-exp is empty: give the LM recipe's experiment folder (e.g. ../lm1/exp/mini)"
  [ -f "$lm_exp/dense/outcome.json" ] || die "stage 5: $lm_exp/dense is not trained (run the LM recipe first)"
  if fresh lm_dense "$lm_exp/dense/final"; then
    log "stage 5: $run/decode_lm_dense is up to date; skipping"
  else
    log "stage 5: the dense LM, weights tuned on $dev_set -> $run/decode_lm_dense"
    sprune decode "$run" --dev "$dev_set" --test "$test_set" --beam "$beam" \
      --lm "$lm_exp/dense/final" --lm-weight "$(comma $lm_weights)" "${lodr_args[@]}" \
      --lodr-weight "$(comma $lodr_weights)" --length-bonus "$(comma $length_bonuses)" \
      --name lm_dense "${decode_extra[@]}"
  fi
fi

if run_stage 6; then
  dense_result=$run/decode_lm_dense/result.json
  [ -f "$dense_result" ] || die "stage 6: $dense_result is missing (run stage 5)"
  read -r dense_lm_weight dense_lodr_weight dense_bonus < <(python -c "import json, sys; d = json.load(open(sys.argv[1])); print(d['lm_weight'], d['lodr_weight'], d['length_bonus'])" "$dense_result")
  todo=0
  for lm_run in "$lm_exp"/*/; do
    lm_run=${lm_run%/}
    name=$(basename "$lm_run")
    [ "$name" = dense ] || [ ! -f "$lm_run/outcome.json" ] && continue
    lm=$(lm_of "$lm_run")
    fresh "lm_$name" "$lm" && continue
    todo=$((todo + 1))
    if [ "$tune_each" = true ]; then
      weights=(--dev "$dev_set" --lm-weight "$(comma $lm_weights)" --lodr-weight "$(comma $lodr_weights)"
               --length-bonus "$(comma $length_bonuses)")
    else
      weights=(--lm-weight "$dense_lm_weight" --lodr-weight "$dense_lodr_weight"
               --length-bonus "$dense_bonus")
    fi
    log "stage 6: $lm -> $run/decode_lm_$name"
    pool_spawn "decode_lm_$name" sprune decode "$run" --test "$test_set" --beam "$beam" \
      --lm "$lm" "${weights[@]}" "${lodr_args[@]}" --name "lm_$name" "${decode_extra[@]}"
  done
  pool_finish "stage 6"
  [ "$todo" -gt 0 ] || log "stage 6: every LM was decoded before; skipping"
fi

if run_stage 7; then
  log "stage 7: results -> $run/RESULTS.md"
  about="Transducer: $train_config on $train_set (exp/$tag/dense), BPE $bpe shared with the LMs"
  about+=" of $lm_exp; beam $beam; grid: LM weight \"$lm_weights\", LODR \"$lodr_weights\","
  about+=" length bonus \"$length_bonuses\""
  about+=" (tuned on $dev_set $([ "$tune_each" = true ] && echo "for every LM" || echo "for the dense LM, reused for the others"))."
  sprune lm results "$lm_exp" --asr-run "$run" --quiet \
    --title "$tag: WER with each LM fused (paper 002)" --note "${note:+$note }$about"
fi
log "done"
