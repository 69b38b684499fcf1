#!/usr/bin/env bash
# Shared stages of the spoken-intent recipes (egs/*/ic1 link to this file, ESPnet style).
#
#   1  data       local/data.sh writes data/{train,dev,test} (the recipe's own data prep)
#   2  dense      fine-tune every weight (baseline; OMP prunes its weights)
#   3  prune      find each method's mask at each sparsity (RP, MPI, OMP, IMP levels; PARP and
#                 PARP-P find and fine-tune their subnetwork here in one run)
#   4  retrain    fine-tune the subnetworks found in stage 3 (RP/MPI/OMP), retrain IMP's ticket
#   5  evaluate   every finished run on the test set
#   6  results    exp/<tag>/RESULTS.md, results.csv and accuracy_vs_sparsity.png
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
local_data_opts=                     # options passed to local/data.sh
tag=                                 # experiment name (default: the finetune config's name)
train_set=data/train
dev_set=data/dev
test_set=data/test
prune_opts=                          # more `sprune prune` options, e.g. "--set train.epochs=3"

help_message="Usage: $0 [options]
  --stage N / --stop-stage N   stages to run (1 data, 2 dense, 3 prune, 4 retrain, 5 evaluate,
                               6 results; default $stage..$stop_stage)
  --finetune-config FILE       task and fine-tuning config (default $finetune_config)
  --upstream SPEC              upstream checkpoint (default: the config's upstream:)
  --methods LIST               pruning methods, conf/prune_<m>.yaml each (default \"$methods\")
  --sparsities LIST            target sparsities (default \"$sparsities\")
  --local-data-opts OPTS       options for local/data.sh
  --tag NAME                   experiment folder exp/NAME (default: finetune config name)
  --prune-opts OPTS            more options for sprune prune (e.g. \"--set train.epochs=3\")"

. ./path.sh
. utils/launch.sh            # --ngpu, --num-nodes, ...: stages 2-4 train under torchrun
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

for m in $methods; do
  [ -f "conf/prune_$m.yaml" ] || { echo "$0: conf/prune_$m.yaml not found (--methods)" >&2; exit 2; }
done

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
  log "stage 2: dense fine-tuning -> $expdir/dense"
  sprune_train prune "${common[@]}" --method dense --out "$expdir/dense" "${extra[@]}"
fi

if run_stage 3; then
  for m in $methods; do
    for s in $sparsities; do
      log "stage 3: $m at sparsity $s -> $expdir/${m}_s$s"
      sprune_train prune "${common[@]}" --method "conf/prune_$m.yaml" --sparsity "$s" \
        --dense "$expdir/dense" --out "$expdir/${m}_s$s" --no-retrain "${extra[@]}"
    done
  done
fi

if run_stage 4; then
  for m in $methods; do
    for s in $sparsities; do
      log "stage 4: $m at sparsity $s: fine-tune the subnetwork"
      sprune_train prune "${common[@]}" --method "conf/prune_$m.yaml" --sparsity "$s" \
        --dense "$expdir/dense" --out "$expdir/${m}_s$s" "${extra[@]}"
    done
  done
fi

if run_stage 5; then
  for run in "$expdir"/*/; do
    run=${run%/}
    [ -f "$run/outcome.json" ] || continue
    if [ -f "$run/eval_test.json" ] && [ "$run/eval_test.json" -nt "$run/outcome.json" ]; then
      continue
    fi
    log "stage 5: evaluate $run on $test_set"
    sprune evaluate "$run" --data "$test_set" --name test
  done
fi

if run_stage 6; then
  log "stage 6: results"
  sprune results "$expdir" --title "$tag: intent accuracy by pruning method"
  log "wrote $expdir/RESULTS.md, $expdir/results.csv and $expdir/accuracy_vs_sparsity.png"
fi
