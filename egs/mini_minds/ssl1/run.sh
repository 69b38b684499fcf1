#!/usr/bin/env bash
# Self-supervised pretraining of the tiny default upstream on the synthetic corpus:
# HuBERT iteration 1 (masked prediction of k-means units of MFCC frames), then a frozen-
# upstream linear probe on intents, pretrained vs random initialisation.
#
# Stages:
#   1  data: speak the corpus (sprune synth via ../ic1/local/data.sh), data/<langs>/{train,dev,test}
#   2  pretrain: sprune pretrain on the train split (audio only) -> exp/<tag>/upstream
#   3  probe: linear probe of every layer, pretrained vs random init -> exp/<tag>/RESULTS.md
# A finished stage is skipped on re-run; a killed pretraining resumes from its checkpoint.
# The shipped sprune/resources/upstream/tiny_hubert_en is exp/pretrain_en-US_en-GB_en-AU/upstream
# of `./run.sh --threads 1` (see its README.md: about 40 minutes on 2 CPU cores).
set -euo pipefail

stage=1            # first stage to run
stop_stage=100     # last stage to run
langs=en-US,en-GB,en-AU   # corpus languages; 'all' for the nine-language (CSR-style) model
seed=0             # corpus seed (speakers, audio variation)
nj=2               # parallel synthesis jobs
synth_opts="--speakers 24 --speakers-per-phrasing 10,3,3"   # more speakers than ic1's demo
pretrain_config=conf/pretrain.yaml  # model size, k-means, masking, train settings
tag=               # experiment name (default: <config name>_<langs>)
probe_seed=0       # seed of the random-init baseline
threads=0          # torch CPU threads for stages 2-3 (0: torch's choice; 1 is often fastest
                   # on a busy machine)

help_message="Usage: $0 [options]
  --stage N          first stage (default $stage)
  --stop-stage N     last stage (default $stop_stage)
  --langs LIST       comma-separated language tags or 'all' (default $langs)
  --seed N           corpus seed (default $seed)
  --nj N             parallel synthesis jobs (default $nj)
  --synth-opts S     more sprune synth options (default \"$synth_opts\")
  --pretrain-config FILE  pretraining config (default $pretrain_config)
  --tag NAME         experiment name (default: <config name>_<langs>)
  --probe-seed N     seed of the random-init baseline (default $probe_seed)
  --threads N        torch CPU threads for stages 2-3 (default $threads: torch's choice)"

cd "$(dirname "${BASH_SOURCE[0]}")"
. ./path.sh
. utils/launch.sh    # --ngpu, --num-nodes, ...: stage 2 pretrains under torchrun
help_message+=$launch_help
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
launch_check

langs_tag=$(echo "$langs" | tr ',' '_')
data=data/$langs_tag
tag=${tag:-$(basename "$pretrain_config" .yaml)_$langs_tag}
exp=exp/$tag

log() { echo "$(date '+%H:%M:%S') [run.sh] $*"; }

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  stamp=$data/.done.stage1.$(echo "$langs $seed $synth_opts" | md5sum | cut -c1-8)
  if [ -f "$stamp" ]; then
    log "stage 1: data already prepared ($stamp); skipping"
  else
    log "stage 1: synthesising the corpus for $langs (seed $seed, $synth_opts)"
    local/data.sh --langs "$langs" --seed "$seed" --nj "$nj" --synth-opts "$synth_opts" "$data"
    sprune data validate "$data/train" "$data/dev" "$data/test"
    for split in train dev test; do sprune data info "$data/$split"; done
    touch "$stamp"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  if [ -f "$exp/upstream/config.json" ]; then
    log "stage 2: $exp/upstream exists; skipping"
  else
    log "stage 2: pretraining ($pretrain_config) -> $exp"
    sprune_train pretrain --config "$pretrain_config" --train "$data/train" --dev "$data/dev" \
      --out "$exp" --threads "$threads"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  if [ -f "$exp/RESULTS.md" ]; then
    log "stage 3: $exp/RESULTS.md exists; skipping"
  else
    log "stage 3: linear probe on intents, pretrained vs random init"
    sprune probe --upstream "$exp/upstream" --random-init "$exp/upstream" --seed "$probe_seed" \
      --train "$data/train" --dev "$data/dev" --test "$data/test" --out "$exp/probe" \
      --threads "$threads"
    {
      echo "# $tag: frozen-upstream linear probe on intents"
      echo
      echo "Corpus: $data (langs $langs, seed $seed, synth options: $synth_opts)."
      echo "Upstream: $exp/upstream, pretrained with $pretrain_config (see $exp/summary.json)."
      echo
      cat "$exp/probe/probe.md"
    } > "$exp/RESULTS.md.tmp"
    mv "$exp/RESULTS.md.tmp" "$exp/RESULTS.md"
    cat "$exp/RESULTS.md"
  fi
fi
log "done"
