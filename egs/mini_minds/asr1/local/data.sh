#!/usr/bin/env bash
# Data stage of the offline mini ASR recipe: the synthetic corpus of ../ic1 (espeak-ng speech
# of MINDS-14-like e-banking requests, `sprune synth`) as CTC data dirs:
#   <data-dir>/{train,dev,test}          all languages: the joint multilingual sets
#   <data-dir>/<lang>/{train,dev,test}   one language each (e.g. data/fr-FR/train)
# Speakers are split by speaker (no test speaker in train); every language has 84 sentences
# (14 intents x 6 phrasings), each said by speakers of every split.
set -euo pipefail

langs=en-US,fr-FR,de-DE   # comma-separated tags, short names (fr) or all
seed=0                    # corpus seed (speakers, audio variation)
nj=2                      # parallel synthesis processes
synth_opts=               # more `sprune synth` options, e.g. "--speakers 24 --speakers-per-phrasing 10,3,3"

help_message="Usage: $0 [options] [<data-dir>]
Run from the recipe folder; <data-dir> defaults to data.
  --langs LIST       languages (see ../ic1/local/data.sh --help; default $langs)
  --seed N           corpus seed (default $seed)
  --nj N             parallel synthesis jobs (default $nj)
  --synth-opts S     more sprune synth options (default \"$synth_opts\")"

. ../../TEMPLATE/sprune_path.sh
. utils/parse_options.sh
[ $# -le 1 ] || { echo "$0: too many arguments: $* (see --help)" >&2; exit 2; }
data=${1:-data}

../ic1/local/data.sh --langs "$langs" --seed "$seed" --nj "$nj" --synth-opts "$synth_opts" "$data"
for tag in $(sprune synth --list-langs --langs "$langs" | cut -d' ' -f1); do
  for split in train dev test; do
    sprune data subset "$data/$split" "$data/$tag/$split" --langs "$tag" > /dev/null
  done
done
echo "$0: wrote $data/<lang>/{train,dev,test} for $langs"
