#!/usr/bin/env bash
# Shared stages of the LM pruning recipes (paper 002; egs/kjv/lm1 and egs/librispeech/lm1 link
# to this file, ESPnet style). Run from a recipe folder (its run.sh does).
#
#   1  text      sprune lm text --corpus C -> data/<C>/{train,dev,test}.txt + .ids, stats.json
#   2  bpe       sprune lm bpe on data/<C>/train.txt -> data/bpe<N>/bpe.model + tokens.txt
#   3  dense     sprune lm train -> exp/<tag>/dense (--dense-steps updates)
#   4  grid      sprune lm prune: every criterion x method x schedule x size, fine-tuned for
#                --finetune-steps updates -> exp/<tag>/<method>_<criterion>_<schedule>_<size>;
#                and the from-scratch baselines of each size with the same step budget as a
#                pruned model (dense + fine-tuning updates) -> exp/<tag>/scratch_<size>;
#                --nj jobs at once, --threads torch threads each
#   5  eval      sprune lm eval on data/<C>/test.txt (perplexity, parameters, FLOPs/token,
#                ms/token) of each run's LM: shrunk/ (structured, lowrank) or final/
#   6  results   sprune lm results -> exp/<tag>/RESULTS.md, results.csv, ppl_vs_*.png
#
# conf/<tag>.conf, when it exists, holds the tag's settings (name=value lines: configs, sizes,
# step budget); options on the command line win over it. Finished work is skipped (a run
# with outcome.json, an eval JSON newer than its LM); a killed run resumes from its last
# checkpoint: re-run the same command. data/<C>/test.txt is held out from everything here.
set -euo pipefail

stage=1
stop_stage=100
corpus=kjv              # sprune lm text --corpus: kjv | librispeech | file
source=                 # sprune lm text --source (the bible reader, a path or a URL)
max_lines=              # use only the first N lines (verses) of the corpus ('' = all)
text_opts=              # more sprune lm text options, e.g. "--dev 5000 --test 5000"
bpe_size=500            # BPE vocabulary (<blank>, <unk>, <sos/eos> included)
tag=mini                # experiment exp/<tag>; conf/<tag>.conf holds its settings
train_config=conf/train.yaml   # dense LM + scratch baselines (sprune lm train --config)
prune_config=conf/prune.yaml   # pruning + fine-tuning defaults (sprune lm prune --config)
dense_steps=            # updates of the dense LM (required: conf/<tag>.conf sets it)
finetune_steps=         # fine-tuning updates of every pruned run (required, likewise)
sizes=                  # target sizes in parameters (space-separated; required, likewise)
criteria="magnitude taylor"              # add wanda or random if wanted
methods="unstructured structured lowrank"
schedules="one-shot cubic"               # one-shot | cubic | linear
scratch=true            # train the from-scratch baselines of each size
nj=2                    # training / pruning jobs at once (stage 4)
threads=1               # torch threads per job (stage 3 uses nj x threads)
train_opts=             # more sprune lm train options, e.g. "--set train.lr=5e-4"
prune_opts=             # more sprune lm prune options, e.g. "--set criterion_batches=4"
eval_opts=              # more sprune lm eval options, e.g. "--latency-repeats 9"
note=                   # a paragraph for RESULTS.md (corpus, configs)

help_message="Usage: $0 [options]
  --stage N / --stop-stage N   1 text, 2 bpe, 3 dense, 4 grid (prune + scratch), 5 eval,
                               6 results (default $stage..$stop_stage)
  --tag NAME                   experiment exp/NAME; conf/NAME.conf, when present, sets the
                               options below for it (default $tag)
  --corpus NAME / --source S   sprune lm text --corpus / --source (default $corpus)
  --max-lines N                only the first N lines of the corpus (default: all)
  --text-opts OPTS             more sprune lm text options
  --bpe-size N                 BPE vocabulary size (default $bpe_size)
  --train-config FILE          dense LM config (default $train_config)
  --prune-config FILE          pruning config (default $prune_config)
  --dense-steps N              updates of the dense LM
  --finetune-steps N           fine-tuning updates of each pruned run; the scratch baselines
                               get dense + fine-tuning updates
  --sizes LIST                 target sizes in parameters, e.g. \"350000 250000\"
  --criteria LIST              pruning criteria (default \"$criteria\"; also wanda, random)
  --methods LIST               pruning methods (default \"$methods\")
  --schedules LIST             one-shot, cubic, linear (default \"$schedules\")
  --scratch true|false         train the from-scratch baselines (default $scratch)
  --nj N / --threads N         jobs at once in stage 4 / torch threads each (default $nj / $threads)
  --train-opts / --prune-opts / --eval-opts OPTS   more options of sprune lm train / prune / eval
  --note TEXT                  a paragraph under the title of RESULTS.md"

. ./path.sh
. utils/launch.sh             # --ngpu, --num-nodes, ...: stages 3-4 train under torchrun
help_message+=$launch_help
args=("$@")
. utils/parse_options.sh      # first pass: --help, and which --tag
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
if [ -f "conf/$tag.conf" ]; then  # the tag's settings, then the command line again over them
  set -- --config "conf/$tag.conf" "${args[@]}"
  . utils/parse_options.sh
fi

log() { echo "$(date '+%H:%M:%S') [$(basename "$0")] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
die() { echo "$0: $*" >&2; exit 2; }
is_count() { case $1 in ''|*[!0-9]*) return 1;; *) [ "$1" -gt 0 ];; esac; }
for name in dense_steps finetune_steps nj threads bpe_size; do
  is_count "${!name}" || die "--${name//_/-} must be a positive integer, got '${!name}' (conf/$tag.conf sets the step budget)"
done
[ -z "$max_lines" ] || is_count "$max_lines" || die "--max-lines must be a positive integer, got '$max_lines'"
[ -n "$sizes" ] || die "--sizes is empty: give target sizes in parameters (conf/$tag.conf sets them)"
for s in $sizes; do is_count "$s" || die "--sizes: '$s' is not a number of parameters"; done
for f in "$train_config" "$prune_config"; do [ -f "$f" ] || die "config $f not found"; done
case $scratch in true|false) ;; *) die "--scratch takes true or false, got '$scratch'";; esac
launch_check
# every job of stage 4 trains: under torchrun one at a time, each using every process
# (--ngpu x --num-nodes), so that jobs do not share GPUs or the rendezvous endpoint; stage 3
# then gives each process --threads torch threads
nj=$(launch_jobs "$nj")

data=data/$corpus
bpe=data/bpe$bpe_size/bpe.model
exp=exp/$tag
scratch_steps=$((dense_steps + finetune_steps))
# shellcheck disable=SC2206  # the *_opts hold several words
train_extra=($train_opts)
# shellcheck disable=SC2206
prune_extra=($prune_opts)
# shellcheck disable=SC2206
eval_extra=($eval_opts)
pool_log_dir=$exp/log
# shellcheck disable=SC1091  # the job pool beside the real lm.sh: egs/TEMPLATE
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../TEMPLATE/job_pool.sh"

# label 350000 -> 350k, 2000000 -> 2M (run folder names)
label() {
  local n=$1
  if [ $((n % 1000000)) -eq 0 ]; then echo "$((n / 1000000))M"
  elif [ $((n % 1000)) -eq 0 ]; then echo "$((n / 1000))k"
  else echo "$n"; fi
}

if run_stage 1; then
  log "stage 1: text ($corpus${source:+ from $source}${max_lines:+, first $max_lines lines}) -> $data"
  # sprune lm text skips itself when $data was made with the same options
  # shellcheck disable=SC2086
  sprune lm text --corpus "$corpus" ${source:+--source "$source"} \
    ${max_lines:+--max-lines "$max_lines"} $text_opts --out "$data" --quiet
fi

if run_stage 2; then
  if [ -f "$bpe" ] && [ "$bpe" -nt "$data/train.txt" ]; then
    log "stage 2: $bpe is newer than $data/train.txt; skipping"
  else
    log "stage 2: BPE ($bpe_size units) -> $bpe"
    sprune lm bpe --text "$data/train.txt" --vocab-size "$bpe_size" --out "$bpe" --quiet
  fi
fi

if run_stage 3; then
  if [ -f "$exp/dense/outcome.json" ]; then
    log "stage 3: $exp/dense finished before; skipping"
  else
    log "stage 3: dense LM, $dense_steps updates -> $exp/dense"
    OMP_NUM_THREADS=$((nj * threads)) MKL_NUM_THREADS=$((nj * threads)) \
      sprune_train lm train --config "$train_config" --text "$data" --bpe "$bpe" --out "$exp/dense" \
      --set "train.max_steps=$dense_steps" "${train_extra[@]}"
  fi
fi

if run_stage 4; then
  [ -f "$exp/dense/outcome.json" ] || die "stage 4: $exp/dense is not trained (run stage 3)"
  export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
  todo=0
  if [ "$scratch" = true ]; then   # the longest jobs first
    for size in $sizes; do
      run=$exp/scratch_$(label "$size")
      [ -f "$run/outcome.json" ] && continue
      todo=$((todo + 1))
      log "stage 4: from scratch at $size parameters, $scratch_steps updates -> $run"
      pool_spawn "$(basename "$run")" sprune_train lm train --config "$train_config" --text "$data" \
        --bpe "$bpe" --target-params "$size" --out "$run" \
        --set "train.max_steps=$scratch_steps" "${train_extra[@]}"
    done
  fi
  for size in $sizes; do
    for method in $methods; do
      for criterion in $criteria; do
        for schedule in $schedules; do
          run=$exp/${method}_${criterion}_${schedule}_$(label "$size")
          [ -f "$run/outcome.json" ] && continue
          todo=$((todo + 1))
          log "stage 4: $method / $criterion / $schedule to $size parameters -> $run"
          pool_spawn "$(basename "$run")" sprune_train lm prune --config "$prune_config" \
            --lm "$exp/dense/final" --text "$data" --method "$method" --criterion "$criterion" \
            --schedule "$schedule" --target-params "$size" --out "$run" \
            --set "train.max_steps=$finetune_steps" "${prune_extra[@]}"
        done
      done
    done
  done
  pool_finish "stage 4"
  [ "$todo" -gt 0 ] || log "stage 4: every run finished before; skipping"
fi

if run_stage 5; then
  # the LM each run is measured as: shrunk/ (structured, lowrank) else final/
  lms=()
  for run in "$exp"/*/; do
    run=${run%/}
    [ -f "$run/outcome.json" ] || continue
    lm=$run/final
    [ -d "$run/shrunk" ] && lm=$run/shrunk
    [ -f "$lm/eval_test.json" ] && [ "$lm/eval_test.json" -nt "$lm/model.safetensors" ] && continue
    lms+=("$lm")
  done
  if [ ${#lms[@]} -eq 0 ]; then
    log "stage 5: every LM has its eval_test.json; skipping"
  else
    # one process, one thread: latencies measured alike, one at a time
    log "stage 5: test perplexity, FLOPs and latency of ${#lms[@]} LMs on $data/test.txt"
    OMP_NUM_THREADS=1 sprune lm eval "${lms[@]}" --text "$data/test.txt" --latency \
      --threads 1 --device cpu "${eval_extra[@]}" | tee "$exp/eval_test.log"
  fi
fi

if run_stage 6; then
  log "stage 6: results -> $exp/RESULTS.md"
  about="Dense LM: $train_config, $dense_steps updates; pruning: $prune_config,"
  about+=" $finetune_steps fine-tuning updates per run (cubic / linear ramp inside them);"
  about+=" from-scratch baselines: $scratch_steps updates (dense + fine-tuning)."
  about+=" BPE: $bpe_size units. Text: $data (test.txt held out)."
  sprune lm results "$exp" --title "$tag: LM pruning on $corpus (paper 002)" --quiet \
    --note "${note:+$note }$about"
fi
log "done"
