#!/usr/bin/env bash
# Data stage of the offline mini MINDS-14 recipe: speak the synthetic spoken-intent corpus with
# espeak-ng (`sprune synth`) and build one Kaldi data dir per split over all languages.
#
# Writes (run from the recipe folder; <data-dir> defaults to data):
#   <data-dir>/local/synth_seed<seed>/wav/<lang>/*.wav     16 kHz mono audio
#   <data-dir>/local/synth_seed<seed>/<split>_<lang>/       per-language dirs (e.g. test_fr-FR)
#   <data-dir>/{train,dev,test}/                            all languages combined
# Speakers are split by speaker: no test speaker is heard in train. A killed run resumes
# (wavs already spoken are kept); another seed writes another corpus beside the first.
set -euo pipefail

langs=en-US,en-GB,fr-FR,de-DE,es-ES,it-IT   # comma-separated tags, short names (fr) or all
seed=0                                      # draws the speakers and the audio variation
nj=2                                        # parallel synthesis processes
phrasings=                                  # first N phrasings per intent (empty: all 6)
speakers=                                   # synthetic speakers per language (empty: 10)
speaker_split=                              # train,dev,test fractions (empty: 0.6,0.2,0.2)
speakers_per_phrasing=                      # train,dev,test speakers saying each phrasing
                                            # (empty: 2,1,1)
rate_range=                                 # LO,HI speaking rates, words/min (empty: 130,190)
trim_silence=                               # seconds of silence kept at each end of an
                                            # utterance (empty: no trimming)
synth_opts=                                 # more `sprune synth` options

help_message="Usage: $0 [options] [<data-dir>]
Run from the recipe folder; <data-dir> defaults to data.
  --langs LIST   languages: en-US en-GB en-AU fr-FR de-DE es-ES it-IT nl-NL pl-PL, short names
                 (en, gb, au, fr, de, es, it, nl, pl) or all (default $langs)
  --seed N       corpus seed (default $seed)
  --nj N         parallel synthesis jobs (default $nj)
  --phrasings N, --speakers N, --speaker-split TRAIN,DEV,TEST,
  --speakers-per-phrasing TRAIN,DEV,TEST, --rate-range LO,HI, --trim-silence SECONDS
                 the sprune synth options of the same names (default: sprune synth's); a
                 faster --rate-range (e.g. 170,230) and --trim-silence 0.1 make shorter audio
  --synth-opts S more options for sprune synth (see sprune synth --help), e.g.
                 \"--speakers 12 --phrasings 4\"; a corpus dir made with other options
                 must be deleted first (sprune synth says which)"

if [ ! -f ./path.sh ]; then
  echo "$0: run me from the recipe folder (the one holding path.sh)" >&2
  exit 2
fi
. ./path.sh
. utils/parse_options.sh
[ $# -le 1 ] || { echo "$0: too many arguments: $* (see --help)" >&2; exit 2; }
data=${1:-data}
corpus=$data/local/synth_seed$seed

# Canonical tags (fr -> fr-FR) name the per-language dirs; this also rejects unknown languages.
tags=$(sprune synth --list-langs --langs "$langs" | cut -d' ' -f1)

opts=()
[ -z "$phrasings" ] || opts+=(--phrasings "$phrasings")
[ -z "$speakers" ] || opts+=(--speakers "$speakers")
[ -z "$speaker_split" ] || opts+=(--speaker-split "$speaker_split")
[ -z "$speakers_per_phrasing" ] || opts+=(--speakers-per-phrasing "$speakers_per_phrasing")
[ -z "$rate_range" ] || opts+=(--rate-range "$rate_range")
[ -z "$trim_silence" ] || opts+=(--trim-silence "$trim_silence")
# shellcheck disable=SC2086  # synth_opts holds several words
sprune synth --out "$corpus" --langs "$langs" --seed "$seed" --jobs "$nj" "${opts[@]}" $synth_opts

for split in train dev test; do
  dirs=()
  for tag in $tags; do dirs+=("$corpus/${split}_$tag"); done
  sprune data combine "$data/$split" "${dirs[@]}"
done
echo "$0: wrote $data/train, $data/dev and $data/test for $(echo $tags | tr ' ' ',')"
