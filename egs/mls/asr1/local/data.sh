#!/usr/bin/env bash
# Data stage of the Multilingual LibriSpeech recipe: MLS languages (openslr.org/94) ->
# <data>/<lang>/{train[_<set>],dev,test}, speaker-disjoint as MLS ships them, utt2lang
# fr-FR / it-IT / nl-NL / en-US / ... (the tags of the offline corpus).
# --mls-root DIR reads unpacked copies (mls_<language>_opus/ or mls_<language>/); without it
# --download fetches mls_<language>_opus.tar.gz (resumable) into <data>/downloads first.
# FLAC is used in place; Opus is decoded once to 16 kHz WAVs under <data>/audio/<lang>/.
set -euo pipefail

mls_root=         # folder holding mls_<language>[_opus]/ (empty: --download)
langs=fr,it,nl,en # comma-separated MLS languages
train_set=10h     # full, or the limited-supervision sets 10min, 1h, 10h
fold=0            # which 1hr/<fold> is the 10 min set
audio=            # opus or flac (default: what --mls-root holds, Opus when both)
max_utts=         # keep a random subset of at most this many utterances per split
max_hours=        # keep a random subset of at most this many hours per split
seed=0            # seed of those subsets

help_message="Usage: $0 [options] [<data-dir>]   (run from the recipe folder)
  --mls-root DIR     folder holding mls_<language>[_opus]/ (default: download into <data>/downloads)
  --langs LIST       comma-separated: en de nl fr es it pt pl (default $langs)
  --train-set SET    full, 10min, 1h or 10h (default $train_set)
  --fold K           the 10 min fold, 0..5 (default $fold)
  --audio FMT        opus or flac (default: what --mls-root holds)
  --max-utts N       at most N utterances per split (default: all)
  --max-hours H      at most H hours per split (default: all)
  --seed N           seed of --max-utts / --max-hours (default $seed)"

. ../../TEMPLATE/sprune_path.sh
. utils/parse_options.sh
[ $# -le 1 ] || { echo "$0: too many arguments: $* (see --help)" >&2; exit 2; }
data=${1:-data}

opts=(--langs "$langs" --train-set "$train_set" --fold "$fold" --seed "$seed" --out "$data")
if [ -n "$mls_root" ]; then opts+=(--root "$mls_root"); else opts+=(--download); fi
[ -z "$audio" ] || opts+=(--audio "$audio")
[ -z "$max_utts" ] || opts+=(--max-utts "$max_utts")
[ -z "$max_hours" ] || opts+=(--max-hours "$max_hours")
sprune prep mls "${opts[@]}"

train=train
[ "$train_set" = full ] || train=train_$train_set
[ "$train_set" != 10min ] || [ "$fold" = 0 ] || train=train_10min_fold$fold
dirs=()
for lang in ${langs//,/ }; do
  case $lang in  # MLS names -> the codes that name the data dirs
    english) code=en ;; german) code=de ;; dutch) code=nl ;; french) code=fr ;;
    spanish) code=es ;; italian) code=it ;; portuguese) code=pt ;; polish) code=pl ;;
    *) code=$lang ;;
  esac
  dirs+=("$data/$code/$train" "$data/$code/dev" "$data/$code/test")
  # the recipe's stages name a language by its utt2lang tag: data/<tag> -> data/<code>
  case $code in
    en) tag=en-US ;; de) tag=de-DE ;; nl) tag=nl-NL ;; fr) tag=fr-FR ;; es) tag=es-ES ;;
    it) tag=it-IT ;; pt) tag=pt-BR ;; pl) tag=pl-PL ;; *) tag= ;;
  esac
  [ -z "$tag" ] || ln -sfn "$code" "$data/$tag"
done
sprune data validate "${dirs[@]}"
