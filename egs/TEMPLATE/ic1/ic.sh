#!/usr/bin/env bash
# Shared stages of the spoken-intent recipes (egs/*/ic1 link to this file, ESPnet style).
#
#   1  data       local/data.sh writes data/{train,dev,test} (the recipe's own data prep)
#   2  dense      fine-tune every weight (baseline; OMP prunes its weights)
#   3  prune      find each method's mask at each sparsity (RP, MPI, OMP, IMP levels; PARP and
#                 PARP-P find and fine-tune their subnetwork here in one run); when stage 4
#                 runs in the same call, every run fine-tunes its subnetwork here already
#   4  retrain    fine-tune the subnetworks found in stage 3 (RP/MPI/OMP), retrain IMP's ticket
#   5  evaluate   every finished run on the test set that stages 2-4 did not score (they
#                 pass --test to sprune prune when the test dir is named test)
#   6  results    exp/<tag>/RESULTS.md, results.csv, accuracy_vs_sparsity.png and FIDELITY.md
#                 (papers 000 / 001's claims checked on these runs: sprune fidelity)
#
# --seeds "1 2 3" runs everything (dense too) once per training seed (train.seed) into
# exp/<tag>/seed<N>/; RESULTS.md then shows mean ± standard deviation over the seeds. Without
# it the runs use the config's train.seed and go to exp/<tag>/ directly.
#
# Every stage skips work that finished before, and a killed stage resumes from its last
# checkpoint: re-run the same command. Methods are conf/prune_<method>.yaml files.
set -euo pipefail

stage=1
stop_stage=100
finetune_config=conf/finetune.yaml   # task, head and fine-tuning settings
upstream=                            # upstream spec; empty: `upstream:` of the finetune config
methods="rp mpi omp imp parp parp-p" # conf/prune_<method>.yaml for each
sparsities="0.5"                     # target sparsities (space-separated)
seeds=                               # training seeds, e.g. "1 2 3" (empty: the config's)
local_data_opts=                     # options passed to local/data.sh
tag=                                 # experiment name (default: the finetune config's name)
train_set=data/train
dev_set=data/dev
test_set=data/test
prune_opts=                          # more `sprune prune` options, e.g. "--set train.epochs=3"
nj=1                                 # runs at once in stages 2-5
threads=0                            # torch CPU threads per run (0: torch's choice)

help_message="Usage: $0 [options]
  --stage N / --stop-stage N   stages to run (1 data, 2 dense, 3 prune, 4 retrain, 5 evaluate,
                               6 results; default $stage..$stop_stage)
  --finetune-config FILE       task and fine-tuning config (default $finetune_config)
  --upstream SPEC              upstream checkpoint (default: the config's upstream:)
  --methods LIST               pruning methods, conf/prune_<m>.yaml each (default \"$methods\")
  --sparsities LIST            target sparsities (default \"$sparsities\")
  --seeds LIST                 training seeds (train.seed of every run, dense too), e.g.
                               \"1 2 3\": seed N's runs go to exp/<tag>/seed<N>/ and
                               RESULTS.md shows mean ± std (default: the config's seed, one
                               run per cell in exp/<tag>/)
  --local-data-opts OPTS       options for local/data.sh
  --tag NAME                   experiment folder exp/NAME (default: finetune config name)
  --prune-opts OPTS            more options for sprune prune (e.g. \"--set train.epochs=3\")
  --nj N                       runs at once in stages 2-5; their output goes to
                               exp/<tag>/log/stage<N>_<run>.log (default $nj)
  --threads N                  torch CPU threads per run (default $threads: torch's choice;
                               with --nj 2 on 2 cores use 1)"

. ./path.sh
. utils/launch.sh            # --ngpu, --num-nodes, ...: stages 2-4 train under torchrun
help_message+=$launch_help
. utils/parse_options.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../job_pool.sh"
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
launch_check
pool_check_nj
if [ "$threads" != 0 ]; then export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads; fi

tag=${tag:-$(basename "$finetune_config" .yaml)}
expdir=exp/$tag
pool_log_dir=$expdir/log
# training jobs run one at a time under torchrun (utils/launch.sh)
train_nj=$(launch_jobs "$nj")
log() { echo "$(date '+%H:%M:%S') [$(basename "$0")] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
common=(--config "$finetune_config" --train "$train_set" --dev "$dev_set")
[ -z "$upstream" ] || common+=(--upstream "$upstream")
# A finished training run scores the test set in its own process (no torch start-up per run
# in stage 5, which then only evaluates what is missing); `sprune prune --test` writes
# eval_<dir name>.json, so only a test set named `test` can stand in for stage 5's --name test.
test_opts=()
[ "$(basename "$test_set")" != test ] || test_opts=(--test "$test_set")
common+=("${test_opts[@]}")
# shellcheck disable=SC2206  # prune_opts holds several words
extra=($prune_opts)

# finished RUN: trained (outcome.json) and scored on the test set if stages 2-4 score it, and
# no --restart asked: starting `sprune prune` (a torch start-up) only to hear so is skipped.
finished() {
  [ -f "$1/outcome.json" ] && [[ " $prune_opts " != *" --restart "* ]] || return 1
  [ "${#test_opts[@]}" -eq 0 ] || [ "$1/eval_test.json" -nt "$1/outcome.json" ]
}

for m in $methods; do
  [ -f "conf/prune_$m.yaml" ] || { echo "$0: conf/prune_$m.yaml not found (--methods)" >&2; exit 2; }
done
# --seeds: seed_list, seed_dir, seed_opts (egs/TEMPLATE/seeds.sh)
# shellcheck disable=SC1091
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../seeds.sh"

if run_stage 1; then
  # The stamp names the data options, so other languages or seeds prepare the data again.
  stamp=data/.done.$(echo "$local_data_opts" | md5sum | cut -c1-8)
  if [ -f "$stamp" ] && [ -d "$train_set" ] && [ -d "$dev_set" ] && [ -d "$test_set" ]; then
    log "stage 1: data ready ($stamp); skipping"
  else
    log "stage 1: data ($local_data_opts)"
    rm -f data/.done.*
    # shellcheck disable=SC2086
    local/data.sh $local_data_opts data
    sprune data validate "$train_set" "$dev_set" "$test_set"
    touch "$stamp"
  fi
fi

if run_stage 2; then
  # fewer dense runs (seeds) than job slots: the idle slots' threads go to the dense runs
  if [ "$threads" != 0 ] && [ "${#seed_list[@]}" -lt "$train_nj" ]; then
    dense_threads=$(( threads * train_nj / ${#seed_list[@]} ))
    export OMP_NUM_THREADS=$dense_threads MKL_NUM_THREADS=$dense_threads
  fi
  for seed in "${seed_list[@]}"; do
    if finished "$(seed_dir "$seed")/dense"; then
      log "stage 2: $(seed_dir "$seed")/dense finished before; skipping"
      continue
    fi
    log "stage 2: dense fine-tuning -> $(seed_dir "$seed")/dense"
    # shellcheck disable=SC2046  # seed_opts prints whole words
    nj=$train_nj pool_spawn "stage2_dense${seed:+_seed$seed}" \
      sprune_train prune "${common[@]}" --method dense --out "$(seed_dir "$seed")/dense" \
      $(seed_opts "$seed") "${extra[@]}"
  done
  pool_finish "stage 2"
  if [ "$threads" != 0 ]; then export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads; fi
fi

# prune_all STAGE [--no-retrain]: every method at every sparsity, for every seed, $nj at once
prune_all() {
  local stage_no=$1 seed dir m s
  shift
  for seed in "${seed_list[@]}"; do
    dir=$(seed_dir "$seed")
    for m in $methods; do
      for s in $sparsities; do
        if finished "$dir/${m}_s$s"; then
          log "stage $stage_no: $dir/${m}_s$s finished before; skipping"
          continue
        fi
        log "stage $stage_no: $m at sparsity $s${seed:+, seed $seed} -> $dir/${m}_s$s"
        # shellcheck disable=SC2046  # seed_opts prints whole words
        nj=$train_nj pool_spawn "stage${stage_no}_${m}_s$s${seed:+_seed$seed}" \
          sprune_train prune "${common[@]}" --method "conf/prune_$m.yaml" --sparsity "$s" \
          --dense "$dir/dense" --out "$dir/${m}_s$s" "$@" $(seed_opts "$seed") "${extra[@]}"
      done
    done
  done
  pool_finish "stage $stage_no"
}
# Stage 3 finds the masks. When stage 4 runs too, each run goes on to fine-tune its
# subnetwork in the same process (one torch start-up per run, and the job pool stays full);
# stage 4 then only finishes what an earlier `--stop-stage 3` left.
if run_stage 3; then
  if run_stage 4; then prune_all 3; else prune_all 3 --no-retrain; fi
fi
if run_stage 4; then prune_all 4; fi

if run_stage 5; then
  for run in "$expdir"/*/ "$expdir"/seed*/*/; do
    run=${run%/}
    [ -f "$run/outcome.json" ] || continue
    if [ -f "$run/eval_test.json" ] && [ "$run/eval_test.json" -nt "$run/outcome.json" ]; then
      continue
    fi
    log "stage 5: evaluate $run on $test_set"
    name=${run#"$expdir"/}
    pool_spawn "stage5_eval_${name//\//.}" sprune evaluate "$run" --data "$test_set" --name test
  done
  pool_finish "stage 5"
fi

if run_stage 6; then
  log "stage 6: results"
  sprune results "$expdir" --title "$tag: intent accuracy by pruning method" \
    --test-data "$test_set"
  log "wrote $expdir/RESULTS.md, $expdir/results.csv and $expdir/accuracy_vs_sparsity.png"
  # the papers' claims are about IMP (000) and PARP (001): nothing to check without them
  if [[ " $methods " == *" imp "* || " $methods " == *" parp "* ]]; then
    sprune fidelity "$expdir/results.csv" --out "$expdir/FIDELITY.md"
    log "wrote $expdir/FIDELITY.md (the claims of papers 000 and 001 checked on these runs)"
  fi
fi
