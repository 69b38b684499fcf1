#!/usr/bin/env bash
# Paper 004 at full size: task-agnostic structured pruning of WavLM Base (or any wav2vec2 /
# HuBERT / WavLM upstream) by distillation on LibriSpeech 960 h, physical shrinking, export
# for s3prl, SUPERB downstream tasks through s3prl with the pruned upstream frozen and a
# learned weighted sum of layers, and a table like paper 004's Table 1 with the SUPERB score.
#
# Stages:
#   1  data: LibriSpeech train-clean-100 + train-clean-360 + train-other-500 (+ dev-clean)
#      from a local copy (sprune prep librispeech) -> data/train_960, data/dev_clean
#   2  prune: sprune l0prune (conf/prune_l0.yaml) -> exp/<tag>/prune
#   3  shrink: sprune shrink -> exp/<tag>/shrunk
#   4  export: sprune superb export -> exp/<tag>/s3prl/upstream (checked through s3prl's
#      S3PRLUpstream + Featurizer)
#   5  superb: for each task with a dataset root in --superb-roots, s3prl's problem class
#      (Superb<TASK>) through sprune's s3prl bridge, for the dense and the pruned upstream
#      -> exp/<tag>/superb/{dense,pruned}/<TASK>/
#   6  collect: exp/<tag>/superb/RESULTS.md + results.csv (Table 1, superb_s of Eq. 6)
# A finished stage is skipped on re-run; a killed pruning run resumes from its checkpoint.
set -euo pipefail

stage=1
stop_stage=100
librispeech_root=     # folder holding LibriSpeech/ (train-*, dev-clean)
train_sets="train-clean-100 train-clean-360 train-other-500"
dev_set=dev-clean
upstream=             # the dense upstream (WavLM Base dir, s3prl/fairseq .pt, ...)
prune_config=conf/prune_l0.yaml
prune_opts=           # more sprune l0prune options, e.g. "--set train.max_steps=1000"
superb_tasks="PR ASR KS IC SID ER SV SD SF"
superb_roots=         # TASK=DIR pairs, e.g. "ASR=/data/LibriSpeech IC=/data/fluent_speech_commands_dataset"
superb_dense=true     # also run the SUPERB tasks on the dense upstream (Table 1's teacher row)
tag=
threads=0

help_message="Usage: $0 [options]
  --stage N              first stage (default $stage)
  --stop-stage N         last stage (default $stop_stage)
  --librispeech-root DIR folder holding LibriSpeech/ (stage 1)
  --train-sets LIST      LibriSpeech training splits (default: $train_sets)
  --dev-set NAME         dev split for the distillation loss (default $dev_set)
  --upstream SPEC        dense upstream to prune (required for stages 2 and 5)
  --prune-config FILE    structured-pruning YAML (default $prune_config)
  --prune-opts S         more sprune l0prune options
  --superb-tasks LIST    SUPERB tasks (default: $superb_tasks)
  --superb-roots LIST    TASK=DIR dataset roots; tasks without one are skipped
  --superb-dense BOOL    also evaluate the dense upstream (default $superb_dense)
  --tag NAME             experiment name (default: <config name>[_<hash of --prune-opts>])
  --threads N            torch CPU threads (default $threads: torch's choice)"

cd "$(dirname "${BASH_SOURCE[0]}")"
. ./path.sh
. utils/launch.sh    # --ngpu, --num-nodes, ...: stage 2 prunes under torchrun
help_message+=$launch_help
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
launch_check

# other --prune-opts are another experiment: their hash joins the default name
tag=${tag:-$(basename "$prune_config" .yaml)${prune_opts:+_$(echo "$prune_opts" | md5sum | cut -c1-6)}}
exp=exp/$tag
train_dir=data/train_960
[ "$train_sets" = "train-clean-100 train-clean-360 train-other-500" ] || \
  train_dir=data/train_$(echo "$train_sets" | tr ' -' '_' | tr -s '_')
dev_dir=data/${dev_set//-/_}

log() { echo "$(date '+%H:%M:%S') [run.sh] $*"; }
need_upstream() {
  [ -n "$upstream" ] || { echo "$0: stage $1 needs --upstream (the dense model)" >&2; exit 2; }
}

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  if [ -f "$train_dir/wav.scp" ] && [ -f "$dev_dir/wav.scp" ]; then
    log "stage 1: $train_dir and $dev_dir exist; skipping"
  else
    [ -n "$librispeech_root" ] || { echo "$0: stage 1 needs --librispeech-root DIR" >&2; exit 2; }
    log "stage 1: LibriSpeech $train_sets + $dev_set from $librispeech_root"
    splits=$(echo "$train_sets $dev_set" | tr ' ' ',')
    sprune prep librispeech --root "$librispeech_root" --splits "$splits" --out data
    parts=()
    for split in $train_sets; do parts+=("data/${split//-/_}"); done
    if [ ${#parts[@]} -gt 1 ]; then
      sprune data combine "$train_dir" "${parts[@]}"
    elif [ "${parts[0]}" != "$train_dir" ]; then
      rm -rf "$train_dir" && cp -r "${parts[0]}" "$train_dir"
    fi
    sprune data validate "$train_dir" "$dev_dir"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  need_upstream 2
  log "stage 2: structured pruning ($prune_config) -> $exp/prune"
  # shellcheck disable=SC2086  # prune_opts holds several words
  sprune_train l0prune --config "$prune_config" --upstream "$upstream" --train "$train_dir" \
    --dev "$dev_dir" --out "$exp/prune" --threads "$threads" $prune_opts
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: shrinking -> $exp/shrunk (kept while newer than the masks)"
  sprune shrink --run "$exp/prune" --out "$exp/shrunk"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  if [ -f "$exp/s3prl/export.json" ] && [ "$exp/s3prl/export.json" -nt "$exp/shrunk/config.json" ]; then
    log "stage 4: $exp/s3prl is up to date; skipping"
  else
    log "stage 4: export for s3prl -> $exp/s3prl/upstream"
    sprune superb export --upstream "$exp/shrunk" --out "$exp/s3prl"
  fi
fi

root_of() {  # the dataset root given for task $1 in --superb-roots, or nothing
  for pair in $superb_roots; do
    [ "${pair%%=*}" = "$1" ] && { echo "${pair#*=}"; return; }
  done
}

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  sprune superb check   # s3prl's problem classes need packages beyond the venv (it names them)
  rows="pruned=$exp/s3prl/upstream"
  if [ "$superb_dense" = true ]; then
    need_upstream 5
    rows="dense=$upstream $rows"
  fi
  for task in $superb_tasks; do
    root=$(root_of "$task")
    if [ -z "$root" ]; then
      log "stage 5: $task: no dataset root in --superb-roots; skipping"
      continue
    fi
    for row in $rows; do
      name=${row%%=*}
      out=$exp/superb/$name/$task
      # 0: the task has its test result; 1: not yet; 2: a result collect would refuse
      status=0
      sprune superb finished --task "$task" --out "$out" > /dev/null || status=$?
      case $status in
        0) log "stage 5: $task ($name): finished before; skipping"; continue ;;
        1) ;;
        *) exit "$status" ;;
      esac
      config=()
      [ -f "conf/superb/$task.yaml" ] && config=(--config "conf/superb/$task.yaml")
      cmd=$(sprune superb command --task "$task" --upstream "${row#*=}" --root "$root" \
            --out "$out" "${config[@]}")
      log "stage 5: $task ($name): $cmd"
      mkdir -p "$out"
      eval "$cmd" > "$out/s3prl.log" 2>&1 || { echo "$0: $task ($name) failed; see $out/s3prl.log" >&2; exit 1; }
    done
  done
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "stage 6: Table 1 -> $exp/superb/RESULTS.md"
  args=(--row "pruned=$exp/superb/pruned" --params "pruned=$exp/s3prl/upstream")
  if [ "$superb_dense" = true ]; then
    need_upstream 6
    args=(--row "dense=$exp/superb/dense" --params "dense=$upstream" "${args[@]}")
  fi
  sprune superb collect "${args[@]}" --references conf/superb_reference.yaml --out "$exp/superb"
fi
log "done"
