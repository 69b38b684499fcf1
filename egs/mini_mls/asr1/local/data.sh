#!/usr/bin/env bash
# The offline four-language corpus (en, fr, it, nl as in MLS): sentences from Debian text
# packages (`sprune mltext`: the KJV, translated man pages and manuals, Italian fortunes),
# spoken by espeak-ng (`sprune speak`), each split by its own speakers (the train, dev and
# test voice pools never overlap). Writes data/<tag>/{train,dev,test} for the tags
# en-US fr-FR it-IT nl-NL, data/text/ and data/wav/. A split spoken before with the same
# options is kept.
set -euo pipefail

langs="en fr it nl"       # mltext codes; the data dirs are named by their utt2lang tag
train_lines=2000          # training utterances per language (dev / test: below)
dev_lines=40
test_lines=60
max_words=12              # shorter sentences (the CPU cost follows the audio length)
train_speakers=80         # voices of train (the pool's 20 variants at 4 rates / pitches)
seed=1
jobs=2

help_message="Usage: $0 [options]
  --langs LIST         mltext language codes (default \"$langs\")
  --train-lines N / --dev-lines N / --test-lines N   utterances per language and split
                       (default $train_lines / $dev_lines / $test_lines)
  --max-words N        longest sentence, in words (default $max_words)
  --train-speakers N   speakers of each train split (default $train_speakers)
  --seed N             sentence order and speakers (default $seed)
  --jobs N             synthesis processes (default $jobs)"
. utils/parse_options.sh

sprune mltext --out data/text --langs "${langs// /,}" --max-words "$max_words" --seed "$seed" \
  --dev "$((dev_lines * 2))" --test "$((test_lines * 2))"
offset=0
for code in $langs; do
  case $code in en) tag=en-US ;; fr) tag=fr-FR ;; it) tag=it-IT ;; nl) tag=nl-NL ;;
    *) echo "$0: unknown language code '$code' (en fr it nl)" >&2; exit 2 ;; esac
  for split in train dev test; do
    lines_var=${split}_lines
    opts=(--split "$split" --lang "$tag" --text "data/text/$code/$split.txt"
          --ids "data/text/$code/$split.ids" --out "data/$tag/$split" --wav-dir "data/wav/$tag"
          --max-lines "${!lines_var}" --max-words "$max_words" --seed $((seed + offset)))
    [ "$split" != train ] || opts+=(--speakers "$train_speakers")
    offset=$((offset + 1))
    stamp=data/$tag/$split/.speak_options
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${opts[*]}" ] && [ "$stamp" -nt "data/text/$code/$split.txt" ]; then
      echo "$0: data/$tag/$split was spoken with these options before; skipping"
      continue
    fi
    sprune speak "${opts[@]}" --jobs "$jobs" --quiet
    echo "${opts[*]}" > "$stamp"
  done
done
