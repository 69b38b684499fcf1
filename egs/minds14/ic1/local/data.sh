#!/usr/bin/env bash
# Data stage of the MINDS-14 intent recipe (paper 000): MINDS-14 -> <data>/<subset>/{train,dev,test}.
#
# MINDS-14 comes from the Hugging Face dataset PolyAI/minds14 (file data/MInDS-14.zip). Give a
# local copy with --minds14-root (the folder holding MInDS-14.zip or its extracted MInDS-14/),
# or --download true to fetch it (needs network access). Audio is resampled 8 -> 16 kHz once
# per language into <data>/audio/<lang>/; the split is deterministic for --seed and disjoint
# in (pseudo-)speakers, see `sprune prep --help`.
set -euo pipefail

minds14_root=     # folder holding MInDS-14.zip or MInDS-14/ (required unless --download true)
subset=en-US      # en-US | en-ALL | en-fr | top7 | all | one language tag (e.g. fr-FR)
download=false    # true: download data/MInDS-14.zip of PolyAI/minds14 into <data>/downloads
seed=0            # split seed
dev_frac=0.1      # share of utterances in dev
test_frac=0.1     # share of utterances in test

help_message="Usage: $0 [options] [<data-dir>]   (run from the recipe folder; <data-dir> defaults to data)
  --minds14-root DIR   folder holding MInDS-14.zip or its extracted MInDS-14/
  --subset NAME        en-US, en-ALL, en-fr, top7, all or a language tag (default $subset)
  --download BOOL      true: fetch MINDS-14 from the Hugging Face Hub (default $download)
  --seed N             split seed (default $seed)
  --dev-frac F         dev share (default $dev_frac)
  --test-frac F        test share (default $test_frac)"

. utils/parse_options.sh
[ $# -le 1 ] || { echo "$0: too many arguments: $* (see --help)" >&2; exit 2; }
data=${1:-data}

. ../../TEMPLATE/sprune_path.sh

if [ "$download" = true ]; then
  source_args=(--download --download-dir "$data/downloads")
elif [ -n "$minds14_root" ]; then
  source_args=(--root "$minds14_root")
else
  echo "$0: no MINDS-14 given: pass --minds14-root DIR (the folder holding MInDS-14.zip or MInDS-14/) or --download true" >&2
  exit 2
fi

sprune prep minds14 "${source_args[@]}" --subset "$subset" --seed "$seed" \
  --dev-frac "$dev_frac" --test-frac "$test_frac" --out "$data"
dirs=()
for split in train dev test; do   # dev or test is absent when its share is 0
  if [ -d "$data/$subset/$split" ]; then dirs+=("$data/$subset/$split"); fi
done
sprune data validate "${dirs[@]}"
