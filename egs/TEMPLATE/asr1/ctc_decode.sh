#!/usr/bin/env bash
# The CTC decoding stage of the ASR recipes (issue 18): one finished CTC run decoded with
# greedy search, torchaudio's flashlight beam search, beam + lexicon, beam + a word n-gram
# and beam + a sprune Transformer LM, weights tuned on dev, rows in a RESULTS.md section.
#
#   1  the word n-gram of the training transcripts: `sprune lm arpa` (interpolated Kneser-Ney,
#      pure Python; KenLM reads the ARPA file) -> <lm-dir>/<order>gram.arpa
#   2  the lexicon of the training words in the run's units: `sprune lexicon`
#   3  the neural LM (skipped with --lm-config none): BPE units + `sprune lm train` on the
#      training transcripts (dev transcripts for its perplexity) -> <lm-dir>/lm/final
#   4  `sprune decode`: greedy, beam, beam + lexicon, beam + n-gram, beam + neural LM; the
#      LM weight x word score grids are tuned on --dev (lowest WER) -> <run>/decode_<name>/;
#      and lexicon-free beam + an n-gram over the run's units (`sprune lm arpa --units`,
#      a character LM for char runs; weight tuned on dev CER; --unit-order 0 skips it)
#   5  the `## CTC decoding: <run>` table in --report (rewritten each time, the rest kept)
#
# Every step skips what it finished before (files present, decode_<name>/result.json
# present; the LM's training resumes): re-run the same command after a stop.
set -euo pipefail

run=                     # the CTC run folder (experiment.json, final/)
train_set=data/train     # its training data dir (n-gram, lexicon and LM text)
dev_set=data/dev         # the weight grids are tuned here
test_set=data/test
lm_dir=                  # n-gram, lexicon and LM go here (default: <run>/../decode_lm)
order=3                  # n-gram order
beam=16
lm_weights=0.5,1,2       # LM weight grid (KenLM and neural LM: log10 scores)
word_scores=-1,0,1       # word insertion score grid
neural_word_scores=0,1   # word score grid with the neural LM (slower: fewer points)
lm_config=conf/lm.yaml   # sprune lm train config of the neural LM; none: no neural LM
neural_lm=               # an existing sprune LM folder to use instead of training one
lm_bpe_size=200          # its BPE vocabulary (with <blank>, <unk>, <sos/eos>)
lm_steps=0               # its updates (0: the config's train.max_steps)
unit_order=6             # order of the n-gram over the run's units (0: no such row)
unit_lm_weights=0.4,0.8,1.2   # its weight grid (tuned on dev CER)
report=                  # Markdown file for the table (default: <run>/../RESULTS_decoding.md)
device=cpu
threads=1                # torch CPU threads (0: torch's choice)

help_message="Usage: $0 --run RUN [options]
  --run DIR                  a finished CTC run (required)
  --train-set / --dev-set / --test-set DIR   data dirs (default $train_set, $dev_set, $test_set)
  --lm-dir DIR               n-gram, lexicon and LM folder (default: <run>/../decode_lm)
  --order N                  word n-gram order (default $order)
  --beam N                   beam size (default $beam)
  --lm-weights LIST          LM weight grid, comma-separated (default $lm_weights)
  --word-scores LIST         word score grid with the n-gram (default $word_scores)
  --neural-word-scores LIST  word score grid with the neural LM (default $neural_word_scores)
  --lm-config FILE|none      neural LM training config (default $lm_config)
  --neural-lm DIR            use this sprune LM (e.g. ../lm1/exp/<tag>/dense/final) instead
  --lm-bpe-size N            the neural LM's BPE vocabulary (default $lm_bpe_size)
  --lm-steps N               the neural LM's updates (default: the config's)
  --unit-order N             n-gram order over the run's units, lexicon-free (default
                             $unit_order; 0: skip that row)
  --unit-lm-weights LIST     its weight grid, tuned on dev CER (default $unit_lm_weights)
  --report FILE              Markdown file of the table (default: <run>/../RESULTS_decoding.md)
  --device cpu|cuda          (default $device)
  --threads N                torch CPU threads (default $threads; 0: torch's choice)"

. ./path.sh
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
[ -n "$run" ] || { echo "$0: give --run RUN (a finished CTC run)" >&2; exit 2; }
[ -d "$run/final" ] || { echo "$0: $run/final is missing: train the run first" >&2; exit 2; }
if [ "$threads" != 0 ]; then export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads; fi
lm_dir=${lm_dir:-$(dirname "$run")/decode_lm}
report=${report:-$(dirname "$run")/RESULTS_decoding.md}
log() { echo "$(date '+%H:%M:%S') [ctc_decode.sh] $*"; }
mkdir -p "$lm_dir"

arpa=$lm_dir/${order}gram.arpa
if [ ! -f "$arpa" ]; then
  log "word $order-gram of $train_set -> $arpa"
  sprune lm arpa --data "$train_set" --order "$order" --out "$arpa"
fi
lexicon=$lm_dir/lexicon.txt
if [ ! -f "$lexicon" ]; then
  log "lexicon of $train_set in the units of $run -> $lexicon"
  sprune lexicon "$run" --data "$train_set" --out "$lexicon"
fi
neural=$neural_lm
if [ -z "$neural" ] && [ "$lm_config" != none ]; then
  neural=$lm_dir/lm/final
  if [ ! -f "$neural/config.json" ]; then
    log "neural LM on the transcripts of $train_set -> $lm_dir/lm"
    mkdir -p "$lm_dir/text"
    cut -d' ' -f2- "$train_set/text" > "$lm_dir/text/train.txt"
    cut -d' ' -f2- "$dev_set/text" > "$lm_dir/text/dev.txt"
    [ -f "$lm_dir/bpe.model" ] || sprune lm bpe --text "$lm_dir/text/train.txt" \
      --vocab-size "$lm_bpe_size" --out "$lm_dir/bpe.model" --quiet
    steps=()
    [ "$lm_steps" = 0 ] || steps=(--set "train.max_steps=$lm_steps")
    sprune lm train --config "$lm_config" --text "$lm_dir/text" --bpe "$lm_dir/bpe.model" \
      --out "$lm_dir/lm" --set "train.device=$device" "${steps[@]}"
  fi
fi

# decode <name> [sprune decode options]: skipped when decode_<name>/result.json exists
decode() {
  local name=$1
  shift
  if [ -f "$run/decode_$name/result.json" ]; then
    log "$name: decoded before; skipping"
    return
  fi
  log "$name"
  sprune decode "$run" --dev "$dev_set" --test "$test_set" --name "$name" --device "$device" "$@"
}
decode beam$beam --beam "$beam"
decode beam${beam}_lexicon --beam "$beam" --lexicon "$lexicon" --word-score="$word_scores"
decode beam${beam}_${order}gram --beam "$beam" --lexicon "$lexicon" --kenlm "$arpa" \
  --lm-weight "$lm_weights" --word-score="$word_scores"
if [ "$unit_order" != 0 ]; then
  unit_arpa=$lm_dir/unit${unit_order}gram.arpa
  if [ ! -f "$unit_arpa" ]; then
    log "$unit_order-gram over the units of $run on $train_set -> $unit_arpa"
    sprune lm arpa --data "$train_set" --units "$run" --order "$unit_order" --out "$unit_arpa"
  fi
  decode beam${beam}_unit${unit_order}gram --beam "$beam" --kenlm "$unit_arpa" \
    --lm-weight "$unit_lm_weights" --tune-on cer
fi
if [ -n "$neural" ]; then
  decode beam${beam}_neural_lm --beam "$beam" --lexicon "$lexicon" --lm "$neural" \
    --lm-weight "$lm_weights" --word-score="$neural_word_scores"
fi
# greedy last, every time (seconds): it writes the table of all of the run's decodings
unit_note=
[ "$unit_order" = 0 ] || unit_note=", lexicon-free with a ${unit_order}-gram over the run's \
units (weight tuned on dev CER, grid ${unit_lm_weights})"
neural_note=
neural_grid=
if [ -n "$neural" ]; then
  neural_note=" and with a sprune Transformer LM (${neural_lm:-${lm_config}, trained on them})"
  neural_grid=", neural LM ${lm_weights} x ${neural_word_scores}"
fi
log "greedy, and the table -> $report"
sprune decode "$run" --dev "$dev_set" --test "$test_set" --decoder greedy --name greedy \
  --device "$device" --report "$report" --report-note "Decoding of $run on $(basename "$test_set"): \
greedy, torchaudio's flashlight CTC beam search (beam $beam) without and with the lexicon of \
the training words, with the word ${order}-gram of the training transcripts (sprune lm arpa, \
KenLM)${unit_note}${neural_note}; LM weight and word score tuned on $(basename "$dev_set") \
(lowest WER; grids ${lm_weights} x ${word_scores}${neural_grid}). RTF: search seconds / audio \
seconds."
log "done"
