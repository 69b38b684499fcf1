#!/usr/bin/env bash
# The KJV transducer corpus: the LM recipe's text splits (../lm1/data/kjv, held-out chapters
# for dev and test) spoken by espeak-ng with `sprune speak`, each split by its own speakers
# (voices of the train, dev and test pools never overlap), lines of at most --max-words
# words. Writes data/{train,dev,test} (Kaldi data dirs) and data/wav/. sprune speak keeps
# wavs already written, so a re-run only checks them.
set -euo pipefail

lm_data=../lm1/data/kjv   # sprune lm text's output: {train,dev,test}.txt + .ids
train_lines=6000          # utterances of each split (the first lines that fit --max-words;
                          # 5636 training verses of the KJV have at most 15 words)
dev_lines=100
test_lines=200
max_words=15              # longer verses are skipped (audio length drives the CPU cost)
seed=1
jobs=2

help_message="Usage: $0 [options]
  --lm-data DIR        text splits of the LM recipe (default $lm_data)
  --train-lines N / --dev-lines N / --test-lines N   utterances per split (default $train_lines / $dev_lines / $test_lines)
  --max-words N        skip longer lines (default $max_words)
  --seed N             speakers and audio variation (default $seed; dev and test add 1 and 2)
  --jobs N             synthesis processes (default $jobs)"
. utils/parse_options.sh

for split in train dev test; do
  [ -f "$lm_data/$split.txt" ] || { echo "$0: $lm_data/$split.txt is missing; run the LM recipe first (cd ../lm1 && ./run.sh --stop-stage 2)" >&2; exit 2; }
done
offset=0
for split in train dev test; do
  lines_var=${split}_lines
  opts=(--split "$split" --text "$lm_data/$split.txt" --ids "$lm_data/$split.ids"
        --out "data/$split" --wav-dir data/wav --max-lines "${!lines_var}"
        --max-words "$max_words" --seed $((seed + offset)))
  offset=$((offset + 1))
  # a data dir spoken with the same options from a text no newer than it is kept as it is
  # (its files' times are what later stages compare against)
  stamp=data/$split/.speak_options
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${opts[*]}" ] && [ "$stamp" -nt "$lm_data/$split.txt" ]; then
    echo "$0: data/$split was spoken with these options before; skipping"
    continue
  fi
  sprune speak "${opts[@]}" --jobs "$jobs" --quiet
  echo "${opts[*]}" > "$stamp"
done
