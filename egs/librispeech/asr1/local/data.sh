#!/usr/bin/env bash
# Data stage of the LibriSpeech ASR recipe: LibriSpeech dev/test sets and the Libri-light
# limited-resource training sets (10 min, 1 h, 10 h) as Kaldi data dirs in <data>/:
#   <data>/{dev_clean,dev_other,test_clean,test_other}   from LibriSpeech/<split>/ (openslr.org/12)
#   <data>/train_10min  (fold --fold of 1h/), <data>/train_1h, <data>/train_10h
#                       from librispeech_finetuning/ (Libri-light)
# wav.scp points at the 16 kHz FLAC files in place.
set -euo pipefail

librispeech_root=   # folder holding LibriSpeech/ (required unless --download true)
librilight_root=    # folder holding librispeech_finetuning/ (required unless --download true)
download=false      # true: download the archives into <data>/downloads (needs network access)
test_sets="dev-clean dev-other test-clean test-other"   # LibriSpeech splits to prepare
train_sets="10min 1h 10h"                               # Libri-light sets to prepare
fold=0              # which 1h/<fold> (0..5) is the 10 min set

help_message="Usage: $0 [options] [<data-dir>]   (run from the recipe folder; <data-dir> defaults to data)
  --librispeech-root DIR   folder holding LibriSpeech/<split>/
  --librilight-root DIR    folder holding librispeech_finetuning/
  --download BOOL          true: fetch the corpora from openslr.org / dl.fbaipublicfiles.com (default $download)
  --test-sets LIST         LibriSpeech splits, space-separated (default: $test_sets)
  --train-sets LIST        Libri-light sets among 10min 1h 10h (default: $train_sets)
  --fold N                 fold of the 10 min set, 0..5 (default $fold)"

. utils/parse_options.sh
[ $# -le 1 ] || { echo "$0: too many arguments: $* (see --help)" >&2; exit 2; }
data=${1:-data}

. ../../TEMPLATE/sprune_path.sh

if [ "$download" = true ]; then
  speech_args=(--download --download-dir "$data/downloads")
  light_args=(--download --download-dir "$data/downloads")
else
  if [ -n "$test_sets" ] && [ -z "$librispeech_root" ]; then
    echo "$0: pass --librispeech-root DIR (the folder holding LibriSpeech/) or --download true" >&2
    exit 2
  fi
  if [ -n "$train_sets" ] && [ -z "$librilight_root" ]; then
    echo "$0: pass --librilight-root DIR (the folder holding librispeech_finetuning/) or --download true" >&2
    exit 2
  fi
  speech_args=(--root "$librispeech_root")
  light_args=(--root "$librilight_root")
fi

dirs=()
if [ -n "$test_sets" ]; then
  sprune prep librispeech "${speech_args[@]}" --splits "$(echo $test_sets | tr ' ' ',')" --out "$data"
  for split in $test_sets; do dirs+=("$data/${split//-/_}"); done
fi
for which in $train_sets; do
  sprune prep librilight "${light_args[@]}" --which "$which" --fold "$fold" --out "$data"
  name=train_$which
  if [ "$which" = 10min ] && [ "$fold" != 0 ]; then name=${name}_fold$fold; fi
  dirs+=("$data/$name")
done
[ ${#dirs[@]} -eq 0 ] || sprune data validate "${dirs[@]}"
