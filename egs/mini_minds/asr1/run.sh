#!/usr/bin/env bash
# Offline CTC ASR recipe and the PARP study of paper 001 at toy scale: the synthetic corpus
# (espeak-ng speech, ../ic1/local/data.sh), the shipped tiny HuBERT upstreams, char units.
#
#   LSR  English fine-tuning of the English-pretrained upstream (tiny_hubert_en)
#   H2L  the other languages on the same English upstream
#   CSR  the other languages on the upstream pretrained on all nine languages (tiny_hubert_all)
#
# Stages (each calls ./asr.sh, the shared ASR stages, or sprune directly):
#   1  data: data/{train,dev,test} (all languages) and data/<lang>/{train,dev,test}
#   2  LSR + H2L: dense + every method at every sparsity for --curve-langs; dense + OMP at
#      --transfer-sparsity for the other languages (IOU matrix, transfer sources/baselines)
#   3  transfer: the OMP mask of language A fine-tuned on language B (--transfer-targets) at
#      --transfer-sparsity, by regular sub-fine-tuning (omp) and by PARP (parp), English
#      upstream (Fig. 7)
#   4  joint: one fine-tune on all languages (joint vocabulary), dense + --joint-methods; the
#      shared subnetwork is decoded per language (Fig. 4 right)
#   5  CSR: as stage 2 on the all-language upstream for --csr-langs (OMP masks only for those
#      not in --curve-langs);
#      when --csr-upstream does not exist, ../ssl1 pretrains it first (about 16 min: corpus
#      3.5 min, pretraining 12 min on one core of the idle machine)
#   6  analysis: `sprune analyze` per upstream -> exp/<upstream>/analysis/ (CSV, PNG,
#      ANALYSIS.md) and all tables in exp/RESULTS.md
#   7  decoding: every language's dense run on the English upstream decoded greedy, with
#      torchaudio's flashlight CTC beam search, + lexicon, + a word 3-gram of the training
#      transcripts, + a character 6-gram of them (lexicon-free), + a small sprune LM trained
#      on them (first language only: slow) (../../TEMPLATE/asr1/ctc_decode.sh); one table
#      per language goes into exp/RESULTS.md (sections "CTC decoding"). The corpus's
#      sentences are shared by all splits (only the speakers are held out), so these LMs
#      know every test sentence: a closed command set, as in MINDS-14; the greedy row is the
#      acoustic model alone.
#
# exp/tiny_hubert_en/<lang>/<method>_s<S>/ holds the LSR (en-US) and H2L runs,
# exp/tiny_hubert_en/{transfer,joint}/ stages 3-4, exp/tiny_hubert_all/<lang>/ the CSR runs;
# with --seeds "1 2 3" each of those folders holds seed<N>/ folders (one per training seed)
# and the tables show mean ± standard deviation over the seeds.
# The defaults are a small study (2 languages, full curves for en-US at 3 sparsities, 400
# updates of 4 utterances per fine-tuning, 29 fine-tunings); its time on 2 idle cores is in
# the README (Results). A fuller study, e.g.
#   ./run.sh --langs en-US,fr-FR,de-DE,nl-NL,es-ES --curve-langs "en-US fr-FR nl-NL" \
#            --sparsities "0.1 0.3 0.5 0.7 0.9" --prune-opts "--set train.max_steps=1000" --tag full
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=1
stop_stage=100
langs=en-US,fr-FR                # corpus languages; the first is the LSR (English) one
curve_langs="en-US"              # languages with full pruning curves on the English upstream
csr_langs="fr-FR"                # languages fine-tuned on the all-language upstream (curves
                                 # for those in --curve-langs, else dense + OMP mask)
methods="rp mpi omp imp parp parp-p"
sparsities="0.3 0.5 0.7"
seeds=                           # training seeds, e.g. "1 2 3" (empty: the config's train.seed)
transfer_sparsity=0.5
transfer_methods="omp parp"      # omp: regular sub-fine-tuning of the given mask; parp: PARP from it
transfer_targets=                # languages fine-tuned with other languages' masks (default:
                                 # all but the first, the H2L languages as in Fig. 7)
joint_methods="omp parp"
finetune_config=conf/finetune.yaml
lsr_upstream=../../../sprune/resources/upstream/tiny_hubert_en
csr_upstream=../../../sprune/resources/upstream/tiny_hubert_all
seed=1                           # corpus seed; not ../ssl1's 0: with seed 0 the test speakers
                                 # (same voices, some identical wavs) were in the pretraining
                                 # audio of the shipped upstreams
synth_opts="--speakers 24 --speaker-split 0.5,0.25,0.25 --speakers-per-phrasing 10,2,2"
                                 # more sprune synth options (default: 10 training speakers
                                 # say each sentence; 12 + 12 other speakers, 2 per sentence,
                                 # make dev and test)
tag=                             # prefix of the experiment folders (default: none)
nj=2                             # fine-tuning runs at once
threads=1                        # torch threads per run
metric=cer                       # error rate of the tables (greedy WER stays above 70 % here)
prune_opts=                      # more sprune prune options for every run
unit_lm_weights=1,2,3,4          # stage 7: weight grid of the character 6-gram (dev CER)
decode_opts=                     # more ../../TEMPLATE/asr1/ctc_decode.sh options (stage 7)

help_message="Usage: $0 [options]
  --stage N / --stop-stage N   1 data, 2 LSR + H2L, 3 transfer, 4 joint, 5 CSR, 6 analysis,
                               7 decoding (greedy / beam / n-gram / neural LM)
                               (default $stage..$stop_stage)
  --langs LIST                 corpus languages, comma-separated; the first is the LSR one
                               (default $langs)
  --curve-langs LIST           languages with full pruning curves (default \"$curve_langs\")
  --csr-langs LIST             languages on the all-language upstream (default \"$csr_langs\")
  --methods LIST               methods of the curves (default \"$methods\")
  --sparsities LIST            sparsities of the curves (default \"$sparsities\")
  --seeds LIST                 training seeds of every run (train.seed), e.g. \"1 2 3\": the
                               runs of seed N go to seed<N>/ folders and the tables show
                               mean ± std (default: the config's seed, one run per cell)
  --transfer-sparsity S        sparsity of the mask transfer grid (default $transfer_sparsity)
  --transfer-methods LIST      methods fine-tuning a transferred mask (default \"$transfer_methods\")
  --transfer-targets LIST      languages receiving the masks (default: all but the first)
  --joint-methods LIST         methods of the joint multilingual fine-tune (default \"$joint_methods\")
  --finetune-config FILE       CTC fine-tuning config (default $finetune_config)
  --lsr-upstream DIR           English-pretrained upstream, LSR and H2L (default: tiny_hubert_en)
  --csr-upstream DIR           all-language upstream, CSR (default: tiny_hubert_all; stage 5
                               builds it with ../ssl1 when the folder does not exist)
  --seed N / --synth-opts S    corpus seed and more sprune synth options
  --tag NAME                   experiments go to exp/NAME/ (default: exp/)
  --nj N / --threads N         runs at once and torch threads per run (default $nj / $threads)
  --metric NAME                error rate of the tables: cer or wer (default $metric)
  --prune-opts OPTS            more sprune prune options (e.g. \"--set train.max_steps=600\")
  --unit-lm-weights LIST       stage 7: weight grid of the character 6-gram, tuned on dev CER
                               (default $unit_lm_weights)
  --decode-opts OPTS           more ctc_decode.sh options for stage 7 (e.g. \"--beam 32\")"

. ./path.sh
. utils/launch.sh   # --ngpu, --num-nodes, ...: passed on to ./asr.sh and ../ssl1 (torchrun)
help_message+=$launch_help
. utils/parse_options.sh
. ../../TEMPLATE/job_pool.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
launch_check

exp=exp${tag:+/$tag}
log() { echo "$(date '+%H:%M:%S') [run.sh] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
read -r -a lang_list <<< "$(echo "$langs" | tr ',' ' ')"
transfer_targets=${transfer_targets:-${lang_list[*]:1}}
for lang in $curve_langs $csr_langs $transfer_targets; do
  [[ " ${lang_list[*]} " == *" $lang "* ]] || { echo "$0: --curve-langs / --csr-langs / --transfer-targets: $lang is not in --langs $langs" >&2; exit 2; }
done
# asr.sh for one setting: asr <exp subfolder> <upstream> <data prefix> [more asr.sh options]
asr() {
  local sub=$1 up=$2 data=$3
  shift 3
  ./asr.sh --finetune-config "$finetune_config" --upstream "$up" --tag "${tag:+$tag/}$sub" \
    --train-set "$data/train" --dev-set "$data/dev" --test-sets "$data/test" \
    --nj "$nj" --threads "$threads" --prune-opts "$prune_opts" --seeds "$seeds" \
    "${launch_opts[@]}" "$@"
}

if run_stage 1; then
  # the stamp names the corpus options: other languages or seeds prepare the data again
  stamp=data/.done.$(echo "$langs $seed $synth_opts" | md5sum | cut -c1-8)
  if [ -f "$stamp" ]; then
    log "stage 1: data ready ($stamp); skipping"
  else
    log "stage 1: synthesising $langs (seed $seed${synth_opts:+, $synth_opts})"
    rm -f data/.done.*
    local/data.sh --langs "$langs" --seed "$seed" --nj "$nj" --synth-opts "$synth_opts" data
    sprune data validate data/train data/dev data/test
    touch "$stamp"
  fi
fi

# settings <name> <upstream> <langs>: dense + the curves for --curve-langs, dense + OMP else
settings() {
  local name=$1 up=$2 lang
  for lang in $3; do
    if [[ " $curve_langs " == *" $lang "* ]]; then
      if [[ " $methods " != *" omp "* || " $sparsities " != *" $transfer_sparsity "* ]]; then
        # the transfer grid (stage 3) and the IOU matrix need omp at --transfer-sparsity
        log "$name / $lang: dense + omp at $transfer_sparsity (transfer grid, IOU matrix)"
        asr "$name/$lang" "$up" "data/$lang" --stage 2 --stop-stage 6 --methods omp \
          --sparsities "$transfer_sparsity"
      fi
      log "$name / $lang: dense + $methods at $sparsities"
      asr "$name/$lang" "$up" "data/$lang" --stage 2 --stop-stage 7 --methods "$methods" \
        --sparsities "$sparsities" --metric "$metric"
    elif [ "$name" = tiny_hubert_en ]; then     # transfer sources and baselines, IOU
      log "$name / $lang: dense + omp at $transfer_sparsity"
      asr "$name/$lang" "$up" "data/$lang" --stage 2 --stop-stage 6 --methods omp \
        --sparsities "$transfer_sparsity"
    else                                        # the OMP mask for the IOU matrix
      log "$name / $lang: dense + the omp mask at $transfer_sparsity"
      asr "$name/$lang" "$up" "data/$lang" --stage 2 --stop-stage 4 --methods omp \
        --sparsities "$transfer_sparsity"
      asr "$name/$lang" "$up" "data/$lang" --stage 6 --stop-stage 6 --methods omp
    fi
  done
}

if run_stage 2; then
  [ -f "$lsr_upstream/config.json" ] || { echo "$0: --lsr-upstream $lsr_upstream not found" >&2; exit 2; }
  settings tiny_hubert_en "$lsr_upstream" "${lang_list[*]}"
fi

if run_stage 3; then
  s=$transfer_sparsity
  # one asr.sh per (source, target) pair, $nj pairs at once with one run each: pairs with a
  # single run (same language) would leave a core idle inside one asr.sh; under torchrun one
  # pair at a time, its run using every process
  pool_log_dir=$exp/tiny_hubert_en/transfer/log
  pairs_nj=$(launch_jobs "$nj")
  pair_spawn() { local nj=$pairs_nj; pool_spawn "$@"; }
  for src in "${lang_list[@]}"; do
    for tgt in $transfer_targets; do
      # the same-language omp run is the grid's baseline already; PARP's is PARP from the
      # target's own OMP mask
      methods_here=$transfer_methods
      [ "$src" != "$tgt" ] || methods_here=$(echo " $transfer_methods " | sed 's/ omp / /')
      [ -n "${methods_here// /}" ] || continue
      log "stage 3: OMP mask of $src fine-tuned on $tgt: $methods_here"
      pair_spawn "${src}_to_$tgt" asr "tiny_hubert_en/transfer/${src}_to_$tgt" "$lsr_upstream" \
        "data/$tgt" --stage 5 --stop-stage 6 --methods "$methods_here" --sparsities "$s" \
        --mask-from "$exp/tiny_hubert_en/$src" --mask-method omp --nj 1
    done
  done
  pool_finish "stage 3"
fi

if run_stage 4; then
  log "stage 4: joint fine-tune on $langs (joint vocabulary): dense + $joint_methods"
  asr "tiny_hubert_en/joint" "$lsr_upstream" data --stage 2 --stop-stage 6 \
    --methods "$joint_methods" --sparsities "$transfer_sparsity"
fi

if run_stage 5; then
  if [ ! -f "$csr_upstream/config.json" ]; then
    built=../ssl1/exp/pretrain_all/upstream
    if [ ! -f "$built/config.json" ]; then
      log "stage 5: $csr_upstream not found: pretraining it with ../ssl1 (about 16 min)"
      (cd ../ssl1 && ./run.sh --langs all --threads "$threads" --stop-stage 2 --tag pretrain_all \
        "${launch_opts[@]}")
    fi
    csr_upstream=$built
  fi
  settings tiny_hubert_all "$csr_upstream" "$csr_langs"
fi

if run_stage 6; then
  exps=()
  for name in tiny_hubert_en tiny_hubert_all; do [ ! -d "$exp/$name" ] || exps+=("$exp/$name"); done
  [ ${#exps[@]} -gt 0 ] || { echo "$0: stage 6: no experiments under $exp (run stages 2-5 first)" >&2; exit 2; }
  log "stage 6: sprune analyze ${exps[*]} -> $exp/RESULTS.md"
  sprune analyze "${exps[@]}" --split test --metric "$metric" --report "$exp/RESULTS.md" \
    --title "Mini ASR study (paper 001 at toy scale)" \
    --note "Corpus: synthetic espeak-ng speech, languages $langs (seed $seed), char CTC, fine-tuning config $finetune_config${prune_opts:+ with $prune_opts}; test $metric in %." \
    > /dev/null
  log "wrote $exp/RESULTS.md (all tables) and $exp/*/analysis/ (CSV, PNG)"
fi

if run_stage 7; then
  for lang in "${lang_list[@]}"; do
    run=$exp/tiny_hubert_en/$lang/dense
    [ -d "$run/final" ] || { echo "$0: stage 7: $run has not finished (run stage 2 first)" >&2; exit 2; }
    # the neural LM row for the first language only: a Python LM called by the C++ search is
    # slow (minutes per grid point at this size), the n-gram rows take seconds
    lm_config=none neural=
    if [ "$lang" = "${lang_list[0]}" ]; then lm_config=conf/lm.yaml neural=", + neural LM"; fi
    log "stage 7: decoding $run: greedy, beam, + lexicon, + word 3-gram, + char n-gram$neural"
    # shellcheck disable=SC2086
    ../../TEMPLATE/asr1/ctc_decode.sh --run "$run" --train-set "data/$lang/train" \
      --dev-set "data/$lang/dev" --test-set "data/$lang/test" --lm-dir "$exp/decode_lm/$lang" \
      --lm-config "$lm_config" --report "$exp/RESULTS.md" --threads "$threads" \
      --unit-lm-weights "$unit_lm_weights" --neural-word-scores 0 $decode_opts
  done
fi
log "done"
