#!/usr/bin/env bash
# Data stage of the Common Voice ASR recipe: one locale of a local Common Voice release
# (<cv-root>/<locale>/{train,dev,test}.tsv + clips/*.mp3) -> <data>/<locale>/{train,dev,test}.
# MP3 clips are decoded with soundfile (libsndfile >= 1.1 reads MP3; no ffmpeg needed),
# resampled to 16 kHz and written once as WAVs under <data>/audio/<locale>/.
# Common Voice needs a sign-in to download: fetch the release from commonvoice.mozilla.org.
set -euo pipefail

cv_root=          # release folder, e.g. /data/cv-corpus-15.0-2023-09-08 (required)
lang=nl           # Common Voice locale (folder name in the release)
train_hours=      # keep a random subset of the training clips of this many hours (default: all)
seed=0            # seed of that subset

help_message="Usage: $0 --cv-root DIR [options] [<data-dir>]   (run from the recipe folder)
  --cv-root DIR      Common Voice release holding <locale>/{train,dev,test}.tsv and clips/
  --lang LOCALE      locale (default $lang)
  --train-hours H    hours of training audio to keep (default: all)
  --seed N           seed of the --train-hours subset (default $seed)"

. ../../TEMPLATE/sprune_path.sh
. utils/parse_options.sh
[ $# -le 1 ] || { echo "$0: too many arguments: $* (see --help)" >&2; exit 2; }
data=${1:-data}
[ -n "$cv_root" ] || { echo "$0: pass --cv-root DIR (the Common Voice release folder)" >&2; exit 2; }

hours=()
[ -z "$train_hours" ] || hours=(--train-hours "$train_hours" --seed "$seed")
sprune prep commonvoice --root "$cv_root" --langs "$lang" --out "$data" "${hours[@]}"
sprune data validate "$data/$lang/train" "$data/$lang/dev" "$data/$lang/test"
