#!/usr/bin/env bash
# Shared stages of the multilingual pathways recipes (paper 003, Dynamic ASR Pathways);
# egs/*/asr1 link to this file, ESPnet style.
#
#   1  data      local/data.sh writes data/<lang>/{<train-name>,dev,test} for each --langs
#                tag (utt2lang tags); this stage joins them into data/{train,dev,test}
#   2  dense     one multilingual model fine-tuned on every language (exp/<tag>/dense);
#                with --unit-lm-order N (CTC): an N-gram over its units (characters) from
#                the training transcripts (exp/<tag>/lm/), its weight tuned on dev CER with
#                the dense model (`sprune decode --tune-on cer`), the dense model decoded
#                on test with it (eval_test.json; greedy kept as eval_test_greedy.json);
#                every later run then evaluates with the same beam search + n-gram
#   3  imp       per seed, sparsity and language: IMP of the dense model on that language's
#                data (monolingual; `--init-from` the dense model, its joint vocabulary) ->
#                seed<k>/s<S>/imp/<lang>; their masks start the language-specific methods
#   4  adaptive  the same, adaptive masks (monolingual) from the IMP mask -> .../adaptive/<lang>
#   5  pathways  one multilingual run each, all languages' data in monolingual batches:
#                  pathways      ASR Pathways: the IMP masks, fixed, trained jointly
#                  dynamic_ls    Dynamic ASR Pathways from the IMP masks
#                  dynamic_lap   Dynamic ASR Pathways from one language-agnostic mask (LAP)
#   6  results   exp/<tag>/RESULTS.md (`sprune pathways results`): error rate per language,
#                mean ± standard deviation over the seeds, plots of the masks
#
# Every run starts from the dense multilingual model and is decoded on each language's test
# set (monolingual runs) or on data/test through each pathway (multilingual runs) by the
# process that trained it. Stages skip finished runs; a killed one resumes from its last
# checkpoint when the command is run again. Methods are conf/prune_<method>.yaml files; the
# seed of a run is train.seed (data order, head, criterion batches); the dense model and the
# data are the same for every seed.
set -euo pipefail

stage=1
stop_stage=100
finetune_config=conf/finetune.yaml   # task (ctc or transducer) and fine-tuning settings
dense_config=                        # the dense multilingual run's config (default: finetune)
upstream=                            # upstream spec; empty: `upstream:` of the configs
langs="en-US fr-FR it-IT nl-NL"      # utt2lang tags; data/<tag>/ holds each language
train_name=train                     # data/<tag>/<train_name> is a language's training set
sparsities="0.5 0.7"
seeds="1 2 3"
methods="imp adaptive pathways dynamic_ls dynamic_lap"
local_data_opts=                     # options passed to local/data.sh (shell quoting applies)
tag=                                 # experiment folder exp/<tag> (default: finetune config name)
nj=1                                 # runs at once
threads=0                            # torch CPU threads per run (0: torch's choice)
dense_threads=0                      # torch threads of the dense run (0: --threads)
prune_opts=                          # more `sprune prune` options for every run
multi_opts=                          # more `sprune prune` options for the multilingual runs
metric=cer                           # error rate of RESULTS.md
unit_lm_order=0                      # CTC: N-gram over the units fused in every evaluation (0: greedy)
lm_weights="0.6 0.9 1.2 1.5"       # its weights tried on dev with the dense model
lm_beam=16                           # beam of that search
lm_beam_tokens=8                     # units tried per frame (0: all)

help_message="Usage: $0 [options]
  --stage N / --stop-stage N   1 data, 2 dense, 3 imp, 4 adaptive, 5 pathways, 6 results
                               (default $stage..$stop_stage)
  --finetune-config FILE       task config of every pruning run (default $finetune_config)
  --dense-config FILE          task config of the dense multilingual run (default: the same)
  --upstream SPEC              upstream checkpoint (default: the configs' upstream:)
  --langs LIST                 utt2lang tags of the languages (default \"$langs\")
  --train-name NAME            data/<lang>/NAME is a language's training set (default $train_name)
  --sparsities LIST            target sparsities (default \"$sparsities\")
  --seeds LIST                 seeds of the pruning runs (default \"$seeds\")
  --methods LIST               of: imp adaptive pathways dynamic_ls dynamic_lap (default: all)
  --local-data-opts OPTS       options for local/data.sh
  --tag NAME                   experiment folder exp/NAME (default: finetune config name)
  --nj N / --threads N         runs at once, torch threads per run (default $nj / $threads)
  --dense-threads N            torch threads of the dense run (default: --threads)
  --prune-opts OPTS            more options for every sprune prune
  --multi-opts OPTS            more options for the multilingual runs (stage 5), e.g.
                               \"--set train.max_steps=160\"
  --metric NAME                error rate of RESULTS.md (default $metric)
  --unit-lm-order N            CTC: decode every run with a beam search + an N-gram over
                               the units, trained on the training transcripts (default
                               $unit_lm_order: greedy decoding)
  --lm-weights LIST            n-gram weights tuned on dev CER (default \"$lm_weights\")
  --lm-beam N                  beam of the n-gram search (default $lm_beam)
  --lm-beam-tokens N           units it tries per frame, the most likely (default
                               $lm_beam_tokens; 0: all)

A language's monolingual runs (stages 3-4) read conf/finetune_<lang>.yaml when it exists
(e.g. its own number of updates), else --finetune-config."

. ./path.sh
. utils/launch.sh            # --ngpu, --num-nodes, ...: stages 2-5 train under torchrun
help_message+=$launch_help
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
launch_check

tag=${tag:-$(basename "$finetune_config" .yaml)}
dense_config=${dense_config:-$finetune_config}
expdir=exp/$tag
dense=$expdir/dense
log() { echo "$(date '+%H:%M:%S') [$(basename "$0")] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
has_method() { case " $methods " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# shellcheck disable=SC2206  # prune_opts / multi_opts hold several words
extra=($prune_opts)
[ -z "$upstream" ] || extra+=(--upstream "$upstream")
# shellcheck disable=SC2206
multi_extra=($multi_opts)
for f in "$finetune_config" "$dense_config"; do
  [ -f "$f" ] || { echo "$0: config $f not found" >&2; exit 2; }
done
# shellcheck disable=SC1091
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../job_pool.sh"
pool_check_nj
# every job of the pool trains: under torchrun one at a time, each using every process
# (--ngpu x --num-nodes), so that jobs do not share GPUs or the rendezvous endpoint
nj=$(launch_jobs "$nj")
for m in $methods; do
  case $m in
    imp|adaptive|pathways|dynamic_ls|dynamic_lap) ;;
    *) echo "$0: unknown method '$m' (--methods): imp adaptive pathways dynamic_ls dynamic_lap" >&2; exit 2 ;;
  esac
  [ -f "conf/prune_$m.yaml" ] || { echo "$0: conf/prune_$m.yaml not found (--methods)" >&2; exit 2; }
done
for m in adaptive pathways dynamic_ls; do   # these start from the IMP masks
  if has_method "$m" && ! has_method imp; then
    echo "$0: --methods: $m starts from the IMP masks; add imp" >&2; exit 2
  fi
done
threads_of() { local n=$1; [ "$n" != 0 ] || n=$threads; [ "$n" = 0 ] || echo "$n"; }
with_threads() {   # with_threads N COMMAND...: run COMMAND with N torch threads (0: unset)
  local n=$1
  shift
  if [ -n "$n" ]; then OMP_NUM_THREADS=$n MKL_NUM_THREADS=$n "$@"; else "$@"; fi
}

pool_log_dir=$expdir/log

if run_stage 1; then
  stamp=data/.done.$(echo "$langs $train_name $local_data_opts" | md5sum | cut -c1-8)
  if [ -f "$stamp" ] && [ -d data/train ] && [ -d data/dev ] && [ -d data/test ]; then
    log "stage 1: data ready ($stamp); skipping"
  else
    log "stage 1: data ($langs; $local_data_opts)"
    rm -f data/.done.*
    eval "local/data.sh $local_data_opts"   # eval: the options may hold quoted words
    for split in train dev test; do
      name=$split
      [ "$split" != train ] || name=$train_name
      parts=()
      for lang in $langs; do
        [ -d "data/$lang/$name" ] || { echo "$0: data/$lang/$name is missing after local/data.sh" >&2; exit 1; }
        parts+=("data/$lang/$name")
      done
      sprune data combine "data/$split" "${parts[@]}"
    done
    sprune data validate data/train data/dev data/test
    touch "$stamp"
  fi
fi

# done_run DIR TEST: the run finished and was decoded on TEST (newer than its outcome.json)
done_run() { [ -f "$1/outcome.json" ] && [ "$1/eval_$(basename "$2").json" -nt "$1/outcome.json" ]; }

if run_stage 2; then
  if done_run "$dense" data/test; then
    log "stage 2: $dense finished before"
  else
    log "stage 2: dense multilingual fine-tuning -> $dense"
    with_threads "$(threads_of "$dense_threads")" sprune_train prune --config "$dense_config" \
      --method dense --train data/train --dev data/dev --out "$dense" --test data/test \
      "${extra[@]}"
  fi
fi
[ "$stop_stage" -lt 3 ] || [ -f "$dense/outcome.json" ] \
  || { echo "$0: $dense has not finished; run stage 2 first" >&2; exit 1; }

# The unit n-gram (CTC): trained once on the training transcripts, its weight tuned on dev
# with the dense model, which is then decoded on test with it like every later run.
lm_opts=()
unit_lm=$expdir/lm/unit${unit_lm_order}gram.arpa
tuned=$dense/decode_unitlm/result.json
beam_opts=(--beam "$lm_beam")
[ "$lm_beam_tokens" = 0 ] || beam_opts+=(--beam-tokens "$lm_beam_tokens")
weight_of() { python -c 'import json, sys; print(json.load(open(sys.argv[1]))["lm_weight"])' "$1"; }
if [ "$unit_lm_order" != 0 ] && [ -f "$dense/outcome.json" ]; then
  [ -f "$dense/tokenizer.json" ] \
    || { echo "$0: --unit-lm-order: $dense is not a CTC run with a character / phone tokenizer" >&2; exit 2; }
  if run_stage 2; then
    if [ ! -f "$tuned" ] || [ "$dense/outcome.json" -nt "$tuned" ]; then
      log "stage 2: ${unit_lm_order}-gram over the units of $dense -> $unit_lm, weight tuned on data/dev"
      sprune lm arpa --data data/train --units "$dense" --order "$unit_lm_order" --out "$unit_lm"
      cp "$dense/eval_test.json" "$dense/eval_test_greedy.json"
      with_threads "$(threads_of "$dense_threads")" sprune decode "$dense" --dev data/dev \
        --test data/test "${beam_opts[@]}" --kenlm "$unit_lm" --lm-weight "${lm_weights// /,}" \
        --tune-on cer --name unitlm
    fi
  fi
  if [ -f "$tuned" ]; then
    lm_weight=$(weight_of "$tuned")
    lm_opts=(--set ctc.decoder=beam --set "ctc.beam=$lm_beam" --set "ctc.kenlm=$(readlink -f "$unit_lm")"
             --set "ctc.lm_weight=$lm_weight")
    [ "$lm_beam_tokens" = 0 ] || lm_opts+=(--set "ctc.beam_tokens=$lm_beam_tokens")
  elif [ "$stop_stage" -ge 3 ]; then
    echo "$0: $tuned is missing; run stage 2 first" >&2; exit 1
  fi
  if run_stage 2 && [ ! "$dense/eval_test.json" -nt "$tuned" ]; then
    log "stage 2: $dense on data/test with the ${unit_lm_order}-gram (weight $lm_weight)"
    with_threads "$(threads_of "$dense_threads")" sprune evaluate "$dense" --data data/test \
      --decoder beam "${beam_opts[@]}" --kenlm "$unit_lm" --lm-weight "$lm_weight"
  fi
fi

# The dense model's vocabulary (tokenizer or BPE model) for every run, so that monolingual
# runs fit its head.
units=()
if [ -f "$dense/tokenizer.json" ]; then units=(--set "ctc.tokenizer=$(readlink -f "$dense/tokenizer.json")")
elif [ -f "$dense/tokenizer.model" ]; then units=(--set "ctc.tokenizer=$(readlink -f "$dense/tokenizer.model")")
elif [ -f "$dense/bpe.model" ]; then units=(--set "transducer.bpe=$(readlink -f "$dense/bpe.model")")
fi

# method_config RUN METHOD SPARSITY: RUN/prune_config.yaml, conf/prune_<METHOD>.yaml with the
# rounds at the target sparsity (the language-specific masks are IMP's at the target) and,
# for pathways / dynamic_ls, the IMP masks of the run's seed and sparsity as pathway_masks
method_config() {
  local run=$1 m=$2 s=$3 seed_dir
  seed_dir=$(dirname "$(dirname "$run")")
  mkdir -p "$run"
  { echo "base: $(readlink -f "conf/prune_$m.yaml")"
    echo "initial_sparsity: $s"
    if [ "$m" = pathways ] || [ "$m" = dynamic_ls ]; then
      echo "pathway_masks:"
      for lang in $langs; do echo "  $lang: $(readlink -f "$seed_dir/s$s/imp/$lang/mask")"; done
    fi
  } > "$run/prune_config.yaml.tmp.$HOSTNAME.$$" \
    && mv "$run/prune_config.yaml.tmp.$HOSTNAME.$$" "$run/prune_config.yaml"
  echo "$run/prune_config.yaml"
}

# mono METHOD SEED SPARSITY LANG: one monolingual run (adaptive starts from IMP's mask)
mono() {
  local m=$1 seed=$2 s=$3 lang=$4 run=$expdir/seed$2/s$3/$1/$4 config=conf/prune_$1.yaml
  local opts=()
  if [ "$m" = adaptive ]; then
    config=$(method_config "$run" "$m" "$s")
    opts=(--mask-from "$expdir/seed$seed/s$s/imp/$lang")
  fi
  local task_config=$finetune_config
  [ ! -f "conf/finetune_$lang.yaml" ] || task_config=conf/finetune_$lang.yaml
  sprune_train prune --config "$task_config" --method "$config" --sparsity "$s" \
    --init-from "$dense" --train "data/$lang/$train_name" --dev "data/$lang/dev" \
    --out "$run" --test "data/$lang/test" --set "train.seed=$seed" "${units[@]}" \
    "${lm_opts[@]}" "${opts[@]}" "${extra[@]}"
}

for st in 3 4; do
  m=$([ "$st" = 3 ] && echo imp || echo adaptive)
  if run_stage "$st" && has_method "$m"; then
    for seed in $seeds; do
      for s in $sparsities; do
        for lang in $langs; do
          run=$expdir/seed$seed/s$s/$m/$lang
          done_run "$run" "data/$lang/test" && continue
          log "stage $st: $m, seed $seed, sparsity $s, $lang -> $run"
          pool_spawn "$m.seed$seed.s$s.$lang" with_threads "$(threads_of 0)" \
            mono "$m" "$seed" "$s" "$lang"
        done
      done
    done
    pool_finish "stage $st"
  fi
done

# multi METHOD SEED SPARSITY: one multilingual run
multi() {
  local m=$1 seed=$2 s=$3 run=$expdir/seed$2/s$3/$1 config
  config=$(method_config "$run" "$m" "$s")
  sprune_train prune --config "$finetune_config" --method "$config" --sparsity "$s" \
    --init-from "$dense" --train data/train --dev data/dev --out "$run" --test data/test \
    --set "train.seed=$seed" "${units[@]}" "${lm_opts[@]}" "${extra[@]}" "${multi_extra[@]}"
}

if run_stage 5; then
  for seed in $seeds; do
    for s in $sparsities; do
      for m in pathways dynamic_ls dynamic_lap; do
        has_method "$m" || continue
        run=$expdir/seed$seed/s$s/$m
        done_run "$run" data/test && continue
        log "stage 5: $m, seed $seed, sparsity $s -> $run"
        pool_spawn "$m.seed$seed.s$s" with_threads "$(threads_of 0)" multi "$m" "$seed" "$s"
      done
    done
  done
  pool_finish "stage 5"
fi

if run_stage 6; then
  log "stage 6: results -> $expdir/RESULTS.md"
  sprune pathways results "$expdir" --metric "$metric" --test test
fi
