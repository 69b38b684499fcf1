#!/usr/bin/env bash
# Task-agnostic structured pruning (paper 004) of the tiny pretrained upstream, offline:
# prune it by distillation on the synthetic English corpus, shrink it, and compare dense vs
# pruned (masked) vs shrunk with frozen-upstream intent classification and CTC ASR heads on a
# learned weighted sum of layers (SUPERB style).
#
# Stages:
#   1  data: speak the corpus (../ic1/local/data.sh) -> data/<langs>/{train,dev,test}
#   2  prune: sprune l0prune (conf/prune_l0.yaml) -> exp/<tag>/prune (masks/, log, config)
#   3  shrink: sprune shrink -> exp/<tag>/shrunk (a normal, smaller upstream dir)
#   4  evaluate: sprune downstream, dense vs masked vs shrunk -> exp/<tag>/downstream
#      (checks that masked and shrunk compute the same hidden states and numbers)
#   5  results: exp/<tag>/RESULTS.md and results.csv
# A finished stage is skipped on re-run (stages 3-4 only while their outputs are newer than
# their inputs and, for 4, made with the same --downstream-opts); a killed pruning run resumes
# from its checkpoint, and another pruning config for the same --tag is refused.
set -euo pipefail

stage=1              # first stage to run
stop_stage=100       # last stage to run
langs=en-US,en-GB,en-AU   # corpus languages (the tiny upstream was pretrained on English)
seed=1               # corpus seed (not 0: seed-0 voices were pretrained on, see ../ic1/run.sh)
nj=2                 # parallel synthesis jobs
upstream=../../../sprune/resources/upstream/tiny_hubert_en   # the dense upstream
prune_config=conf/prune_l0.yaml
prune_opts=          # more sprune l0prune options, e.g. "--set structured.target_sparsity=0.6"
downstream_opts=     # more sprune downstream options, e.g. "--ctc-epochs 40"
tag=                 # experiment name (default: <config name>_<langs>)
threads=1            # torch CPU threads (1 is fastest on a shared machine)

help_message="Usage: $0 [options]
  --stage N             first stage (default $stage)
  --stop-stage N        last stage (default $stop_stage)
  --langs LIST          corpus languages (default $langs)
  --seed N              corpus seed (default $seed)
  --nj N                parallel synthesis jobs (default $nj)
  --upstream DIR        dense upstream to prune (default $upstream)
  --prune-config FILE   structured-pruning YAML (default $prune_config)
  --prune-opts S        more sprune l0prune options (default \"$prune_opts\")
  --downstream-opts S   more sprune downstream options (default \"$downstream_opts\")
  --tag NAME            experiment name (default: <config name>_<langs>[_<hash of --prune-opts>])
  --threads N           torch CPU threads (default $threads; 0: torch's choice)"

cd "$(dirname "${BASH_SOURCE[0]}")"
. ./path.sh
. utils/launch.sh    # --ngpu, --num-nodes, ...: stage 2 prunes under torchrun
help_message+=$launch_help
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
launch_check

langs_tag=$(echo "$langs" | tr ',' '_')
data=data/$langs_tag
# other --prune-opts are another experiment: their hash joins the default name
tag=${tag:-$(basename "$prune_config" .yaml)_$langs_tag${prune_opts:+_$(echo "$prune_opts" | md5sum | cut -c1-6)}}
exp=exp/$tag

log() { echo "$(date '+%H:%M:%S') [run.sh] $*"; }

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  stamp=$data/.done.stage1.$(echo "$langs $seed" | md5sum | cut -c1-8)
  if [ -f "$stamp" ]; then
    log "stage 1: data already prepared ($stamp); skipping"
  else
    log "stage 1: synthesising the corpus for $langs (seed $seed)"
    local/data.sh --langs "$langs" --seed "$seed" --nj "$nj" "$data"
    sprune data validate "$data/train" "$data/dev" "$data/test"
    touch "$stamp"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: structured pruning ($prune_config) -> $exp/prune"
  # shellcheck disable=SC2086  # prune_opts holds several words
  sprune_train l0prune --config "$prune_config" --upstream "$upstream" --train "$data/train" \
    --dev "$data/dev" --out "$exp/prune" --threads "$threads" $prune_opts
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: shrinking -> $exp/shrunk (kept while newer than the masks)"
  sprune shrink --run "$exp/prune" --out "$exp/shrunk"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  # skipped only while the results are newer than the shrunk model and used the same options
  opts_stamp=$exp/downstream.opts
  if [ -f "$exp/downstream/downstream.json" ] && [ -f "$opts_stamp" ] &&
     [ "$exp/downstream/downstream.json" -nt "$exp/shrunk/config.json" ] &&
     [ "$(cat "$opts_stamp")" = "$downstream_opts" ]; then
    log "stage 4: $exp/downstream is up to date; skipping"
  else
    log "stage 4: frozen-upstream intent + CTC heads: dense vs masked vs shrunk"
    # under --ngpu the processes share the feature extraction; the small heads then train
    # alike on each (rank 0 writes)
    # shellcheck disable=SC2086
    sprune_train downstream --upstream "dense=$upstream" --masked "pruned_masked=$exp/prune" \
      --upstream "pruned_shrunk=$exp/shrunk" --same pruned_masked,pruned_shrunk \
      --train "$data/train" --dev "$data/dev" --test "$data/test" --out "$exp/downstream" \
      --threads "$threads" $downstream_opts
    echo "$downstream_opts" > "$opts_stamp"
  fi
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: $exp/RESULTS.md"
  {
    echo "# $tag: structured L0 pruning of $(basename "$upstream"), frozen-upstream evaluation"
    echo
    echo "Corpus: $data (langs $langs, seed $seed). Pruning: $prune_config $prune_opts"
    echo "(resolved config: $exp/prune/config.yaml; masks report: $exp/prune/masks/masks.json)."
    echo "Heads: a learned weighted sum of all hidden states; intent: mean pooling + linear;"
    echo "CTC: two convolutions over characters, greedy decoding; the epoch is picked on dev."
    echo
    cat "$exp/downstream/downstream.md"
    echo
    cat "$exp/downstream/checks.md"
  } > "$exp/RESULTS.md.tmp"
  mv "$exp/RESULTS.md.tmp" "$exp/RESULTS.md"
  cp "$exp/downstream/downstream.csv" "$exp/results.csv"
  cat "$exp/RESULTS.md"
fi
log "done"
