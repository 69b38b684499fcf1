#!/usr/bin/env bash
# Shared stages of the CTC ASR recipes (egs/*/asr1 link to this file, ESPnet style).
#
#   1  data       local/data.sh writes the data dirs (the recipe's own data prep)
#   2  phonemize  text.phones for phone units (`sprune phonemize`; skipped for char / bpe)
#   3  dense      fine-tune every weight with the CTC head (baseline; OMP prunes its weights)
#   4  prune      find each method's mask at each sparsity (RP, MPI, OMP, IMP levels; PARP and
#                 PARP-P find and fine-tune their subnetwork here in one run)
#   5  retrain    fine-tune the subnetworks found in stage 4 (RP/MPI/OMP), retrain IMP's ticket
#   6  evaluate   every finished run on each test set (eval_<test set name>.json): WER and
#                 CER (PER for phones), overall and per language; stages 3-5 decode the runs
#                 they finish already (`sprune prune --test`), so this stage fills in the rest
#   7  results    exp/<tag>/RESULTS.md, results.csv, <metric>_vs_sparsity.png and
#                 exp/<tag>/analysis/ (`sprune analyze`: curves, mask IOU, transfer, PARP IOU)
#
# Every stage skips work that finished before, and a killed stage resumes from its last
# checkpoint: re-run the same command. Methods are conf/prune_<method>.yaml files.
#
# --seeds "1 2 3" runs stages 3-6 (dense too) once per training seed (train.seed) into
# exp/<tag>/seed<N>/; RESULTS.md then shows mean ± standard deviation over the seeds, and
# --mask-from EXP takes seed N's masks from EXP/seed<N>/ when that folder exists. Without it
# the runs use the config's train.seed and go to exp/<tag>/ directly.
#
# Mask transfer (paper 001 Fig. 7): --mask-from EXP takes every run's mask from the run of
# the same sparsity under EXP (EXP/<mask-method>_s<S>, e.g. another language's OMP masks)
# instead of finding one; rp/mpi/omp then sub-fine-tune that mask, parp/parp-p start from it.
# Stages 2-4 are not needed then (nothing is pruned here).
set -euo pipefail

stage=1
stop_stage=100
finetune_config=conf/finetune.yaml   # task (ctc), units, head and fine-tuning settings
upstream=                            # upstream spec; empty: `upstream:` of the finetune config
methods="rp mpi omp imp parp parp-p" # conf/prune_<method>.yaml for each
sparsities="0.5"                     # target sparsities (space-separated)
seeds=                               # training seeds, e.g. "1 2 3" (empty: the config's)
local_data_opts=                     # options passed to local/data.sh (shell quoting applies)
tag=                                 # experiment folder exp/<tag> (default: finetune config name)
train_set=data/train
dev_set=data/dev
test_sets=data/test                  # space-separated; results are eval_<dir name>.json
phonemize=auto                       # auto: stage 2 runs when the config's ctc.units is phone
phonemize_opts=                      # more `sprune phonemize` options, e.g. "--lang-voice nl=nl"
mask_from=                           # transfer: take masks from runs under this exp folder
mask_method=omp                      # ... from its <mask_method>_s<S> runs
nj=1                                 # fine-tuning runs at once in stages 4-6
threads=0                            # torch CPU threads per run (0: torch's choice)
prune_opts=                          # more `sprune prune` options, e.g. "--set train.epochs=3"
metric=                              # error rate of the tables: wer, cer, per (default: per
                                     # for phones, else wer)
analyze_opts=                        # more `sprune analyze` options, e.g. "--iou-sparsity 0.5"

help_message="Usage: $0 [options]
  --stage N / --stop-stage N   stages to run (1 data, 2 phonemize, 3 dense, 4 prune, 5 retrain,
                               6 evaluate, 7 results; default $stage..$stop_stage)
  --finetune-config FILE       CTC task and fine-tuning config (default $finetune_config)
  --upstream SPEC              upstream checkpoint (default: the config's upstream:)
  --methods LIST               pruning methods, conf/prune_<m>.yaml each (default \"$methods\")
  --sparsities LIST            target sparsities (default \"$sparsities\")
  --seeds LIST                 training seeds (train.seed of every run, dense too), e.g.
                               \"1 2 3\": seed N's runs go to exp/<tag>/seed<N>/ and
                               RESULTS.md shows mean ± std (default: the config's seed, one
                               run per cell in exp/<tag>/)
  --local-data-opts OPTS       options for local/data.sh
  --tag NAME                   experiment folder exp/NAME (default: finetune config name)
  --train-set DIR / --dev-set DIR   data dirs (default $train_set, $dev_set)
  --test-sets LIST             test data dirs, space-separated; the first one is the split of
                               RESULTS.md and the analysis (default $test_sets)
  --phonemize auto|true|false  write text.phones in stage 2 (default $phonemize: when
                               \`sprune config\` resolves ctc.units to phone)
  --phonemize-opts OPTS        more options for sprune phonemize (e.g. \"--lang-voice nl=nl\")
  --mask-from EXP              mask transfer: take each run's mask from EXP/<mask-method>_s<S>
  --mask-method M              method of the source runs (default $mask_method)
  --nj N                       fine-tuning runs at once in stages 4-6 (default $nj)
  --threads N                  torch CPU threads per run (default $threads: torch's choice;
                               with --nj 2 on 2 cores use 1)
  --prune-opts OPTS            more options for sprune prune (e.g. \"--set train.max_steps=300\")
  --metric NAME                error rate of RESULTS.md and the analysis (default: per for
                               phone units, else wer)
  --analyze-opts OPTS          more options for sprune analyze"

. ./path.sh
. utils/launch.sh            # --ngpu, --num-nodes, ...: stages 3-5 train under torchrun
help_message+=$launch_help
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
launch_check

tag=${tag:-$(basename "$finetune_config" .yaml)}
expdir=exp/$tag
log() { echo "$(date '+%H:%M:%S') [$(basename "$0")] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
common=(--config "$finetune_config" --train "$train_set" --dev "$dev_set")
[ -z "$upstream" ] || common+=(--upstream "$upstream")
# shellcheck disable=SC2206  # prune_opts holds several words
extra=($prune_opts)
if [ "$threads" != 0 ]; then export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads; fi
[ -f "$finetune_config" ] || { echo "$0: --finetune-config $finetune_config not found" >&2; exit 2; }
# shellcheck disable=SC1091
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../job_pool.sh"
pool_check_nj
# fine-tuning runs at once in stages 4-5: one under torchrun, whose job uses every process
# (--ngpu x --num-nodes); stage 6's decoding jobs keep --nj
train_nj=$(launch_jobs "$nj")
case $phonemize in
  auto|true|false) ;;
  *) echo "$0: --phonemize takes auto, true or false, got '$phonemize'" >&2; exit 2 ;;
esac
for m in $methods; do
  [ -f "conf/prune_$m.yaml" ] || { echo "$0: conf/prune_$m.yaml not found (--methods)" >&2; exit 2; }
done
# --seeds: seed_list, seed_dir, seed_opts (egs/TEMPLATE/seeds.sh, beside job_pool.sh)
# shellcheck disable=SC1091
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../seeds.sh"
if [ -n "$mask_from" ]; then
  [ -d "$mask_from" ] || { echo "$0: --mask-from $mask_from is not a folder" >&2; exit 2; }
  for m in $methods; do
    case $m in imp|dense) echo "$0: --mask-from: method '$m' finds its own masks" >&2; exit 2;; esac
  done
fi

# Jobs of a stage run $nj at a time; each writes its output to $expdir/log/<name>.log and a
# failed one is named with the end of its log (egs/TEMPLATE/job_pool.sh, sourced above from
# beside the target of the recipes' asr.sh symlink).
pool_log_dir=$expdir/log
# train_spawn NAME COMMAND...: pool_spawn with at most $train_nj training runs at once
train_spawn() { local nj=$train_nj; pool_spawn "$@"; }

if run_stage 1; then
  # The stamp names the data options, so other languages or seeds prepare the data again.
  stamp=data/.done.$(echo "$local_data_opts" | md5sum | cut -c1-8)
  ready=true
  for d in "$train_set" "$dev_set" $test_sets; do [ -d "$d" ] || ready=false; done
  if [ -f "$stamp" ] && [ "$ready" = true ]; then
    log "stage 1: data ready ($stamp); skipping"
  else
    log "stage 1: data ($local_data_opts)"
    rm -f data/.done.*
    eval "local/data.sh $local_data_opts data"   # eval: the options may hold quoted words
    # shellcheck disable=SC2086
    sprune data validate "$train_set" "$dev_set" $test_sets
    touch "$stamp"
  fi
fi

if run_stage 2 && [ "$phonemize" = auto ]; then
  # the config as the runs resolve it: defaults and the --set overrides of --prune-opts count
  sets=()
  for ((i = 0; i < ${#extra[@]}; i++)); do
    case ${extra[i]} in
      --set) sets+=(--set "${extra[i + 1]:-}") ;;
      --set=*) sets+=("${extra[i]}") ;;
    esac
  done
  units=$(sprune config "$finetune_config" "${sets[@]}" --get ctc.units) || exit
  if [ "$units" = phone ]; then phonemize=true; else phonemize=false; fi
fi
if run_stage 2 && [ "$phonemize" = true ]; then
  todo=()
  for d in "$train_set" "$dev_set" $test_sets; do
    [ -f "$d/text.phones" ] && [ "$d/text.phones" -nt "$d/text" ] || todo+=("$d")
  done
  if [ ${#todo[@]} -eq 0 ]; then
    log "stage 2: text.phones up to date; skipping"
  else
    log "stage 2: phone transcripts for ${todo[*]}"
    # shellcheck disable=SC2086
    sprune phonemize "${todo[@]}" $phonemize_opts
  fi
fi

# Finished runs are decoded on the test sets by the process that trained them (--test);
# stage 6 decodes whatever is still missing.
tests=()
for t in $test_sets; do tests+=(--test "$t"); done

# dense_run SEED: the dense fine-tuning of one seed
dense_run() {
  # shellcheck disable=SC2046  # seed_opts prints whole words
  sprune_train prune "${common[@]}" --method dense --out "$(seed_dir "$1")/dense" "${tests[@]}" \
    $(seed_opts "$1") "${extra[@]}"
}

if run_stage 3 && [ -z "$mask_from" ]; then
  for seed in "${seed_list[@]}"; do
    log "stage 3: dense CTC fine-tuning -> $(seed_dir "$seed")/dense"
    if [ ${#seed_list[@]} -gt 1 ]; then
      train_spawn "dense${seed:+.seed$seed}" dense_run "$seed"
    else
      dense_run "$seed"
    fi
  done
  pool_finish "stage 3"
fi

# run_done DIR: the run finished and has each test set's result (newer than outcome.json), as
# `sprune prune` would find it; checked here to save a torch start-up per finished run
run_done() {
  [ -f "$1/outcome.json" ] || return 1
  local t
  for t in $test_sets; do decoded "$1" "$(basename "$t")" || return 1; done
}
# decoded RUN NAME: RUN's eval_NAME.json is newer than its outcome.json
decoded() { [ "$1/eval_$2.json" -nt "$1/outcome.json" ]; }

# prune_run METHOD SPARSITY SEED [--no-retrain]: one method at one sparsity and seed
prune_run() {
  local m=$1 s=$2 seed=$3 source=() from=$mask_from dir
  shift 3
  dir=$(seed_dir "$seed")
  if [ -n "$mask_from" ]; then
    [ -z "$seed" ] || [ ! -d "$mask_from/seed$seed" ] || from=$mask_from/seed$seed
    source=(--mask-from "$from/${mask_method}_s$s")
  else
    source=(--dense "$dir/dense")
  fi
  # shellcheck disable=SC2046  # seed_opts prints whole words
  sprune_train prune "${common[@]}" --method "conf/prune_$m.yaml" --sparsity "$s" "${source[@]}" \
    --out "$dir/${m}_s$s" "${tests[@]}" "$@" $(seed_opts "$seed") "${extra[@]}"
}

if run_stage 4 && [ -z "$mask_from" ]; then
  for seed in "${seed_list[@]}"; do
    dir=$(seed_dir "$seed")
    for m in $methods; do
      for s in $sparsities; do
        run_done "$dir/${m}_s$s" && continue
        log "stage 4: $m at sparsity $s -> $dir/${m}_s$s"
        train_spawn "prune.${m}_s$s${seed:+.seed$seed}" prune_run "$m" "$s" "$seed" --no-retrain
      done
    done
  done
  pool_finish "stage 4"
fi

if run_stage 5; then
  for seed in "${seed_list[@]}"; do
    dir=$(seed_dir "$seed")
    for m in $methods; do
      for s in $sparsities; do
        if run_done "$dir/${m}_s$s"; then
          log "stage 5: $m at sparsity $s${seed:+, seed $seed}: finished (and decoded) before"
          continue
        fi
        log "stage 5: $m at sparsity $s${seed:+, seed $seed}: fine-tune the subnetwork${mask_from:+ (mask from $mask_from)}"
        train_spawn "retrain.${m}_s$s${seed:+.seed$seed}" prune_run "$m" "$s" "$seed"
      done
    done
  done
  pool_finish "stage 5"
fi

if run_stage 6; then
  for test_set in $test_sets; do
    name=$(basename "$test_set")
    for run in "$expdir"/*/ "$expdir"/seed*/*/; do
      run=${run%/}
      [ -f "$run/outcome.json" ] || continue
      decoded "$run" "$name" && continue
      log "stage 6: decode $run on $test_set"
      job=${run#"$expdir"/}
      pool_spawn "eval_$name.${job//\//.}" sprune evaluate "$run" --data "$test_set" --name "$name"
    done
  done
  pool_finish "stage 6"
fi

if run_stage 7; then
  log "stage 7: results and analysis"
  metric_opt=()
  [ -z "$metric" ] || metric_opt=(--metric "$metric")
  sprune results "$expdir" --title "$tag: CTC error rates by pruning method" "${metric_opt[@]}" \
    > /dev/null
  # shellcheck disable=SC2086
  sprune analyze "$expdir" --split "$(basename "${test_sets%% *}")" --title "$tag" "${metric_opt[@]}" $analyze_opts
  log "wrote $expdir/RESULTS.md, $expdir/results.csv and $expdir/analysis/ANALYSIS.md"
fi
