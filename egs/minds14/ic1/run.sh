#!/usr/bin/env bash
# Spoken intent classification on MINDS-14 (paper 000): the four subsets en-US, en-ALL,
# en-fr and top7, an English-pretrained wav2vec 2.0 base from a local path, and IMP with
# rewinding (plus the other unstructured methods for comparison).
#
#   ./run.sh --subset en-US --minds14-root /data/MInDS-14 --upstream /models/wav2vec2-base
#
# Stages (ic.sh): 1 data, 2 dense, 3 prune, 4 retrain, 5 evaluate, 6 results; see --help.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

subset=en-US          # en-US | en-ALL | en-fr | top7 (conf/finetune_<subset>.yaml)
minds14_root=         # folder holding MInDS-14.zip or MInDS-14/ (or use --download true)
download=false
upstream=             # wav2vec 2.0 base checkpoint (HF dir, s3prl/fairseq .pt, torchaudio:...)
methods="imp"         # paper 000 runs IMP; add "rp mpi omp parp parp-p" to compare
sparsities="0.8"
stage=1               # passed on to ic.sh
stop_stage=100
tag=                  # default: finetune_<subset>
prune_opts=

help_message="Usage: $0 --subset NAME (--minds14-root DIR | --download true) --upstream SPEC [ic.sh options]
  --subset NAME         en-US, en-ALL, en-fr or top7 (default $subset)
  --minds14-root DIR    local MINDS-14 (MInDS-14.zip or its extracted folder)
  --download BOOL       fetch PolyAI/minds14 from the Hugging Face Hub instead
  --upstream SPEC       pretrained upstream (required)
  --methods LIST        pruning methods (default \"$methods\")
  --sparsities LIST     target sparsities (default \"$sparsities\")
  --stage N / --stop-stage N / --tag NAME / --prune-opts OPTS   as in ./ic.sh --help"

. utils/launch.sh   # --ngpu, --num-nodes, ...: passed on to ./ic.sh (torchrun)
help_message+=$launch_help
. utils/parse_options.sh || exit 2
launch_check
[ -f "conf/finetune_$subset.yaml" ] || { echo "$0: unknown --subset '$subset' (conf/finetune_$subset.yaml missing)" >&2; exit 2; }
[ -n "$upstream" ] || { echo "$0: pass --upstream (a local wav2vec 2.0 base checkpoint); see --help" >&2; exit 2; }
src_opts="--download $download"
[ -z "$minds14_root" ] || src_opts="$src_opts --minds14-root $minds14_root"

./ic.sh \
  --finetune-config "conf/finetune_$subset.yaml" \
  --upstream "$upstream" \
  --methods "$methods" \
  --sparsities "$sparsities" \
  --local-data-opts "--subset $subset $src_opts" \
  --train-set "data/$subset/train" --dev-set "data/$subset/dev" --test-set "data/$subset/test" \
  --stage "$stage" --stop-stage "$stop_stage" --tag "${tag:-finetune_$subset}" \
  --prune-opts "$prune_opts" "${launch_opts[@]}"
