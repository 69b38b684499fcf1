#!/usr/bin/env bash
# H2L and CSR of paper 001 on Common Voice, one language per run (conf/lang/<locale>.conf):
# CTC over espeak-ng phones, every unstructured pruning method at every sparsity, PER.
#
#   ./run.sh --lang nl --cv-root /data/cv-corpus-15.0 --setting h2l --upstream /models/wav2vec2-base
#   ./run.sh --lang nl --cv-root /data/cv-corpus-15.0 --setting csr --upstream /models/xlsr53
#   # cross-lingual mask transfer (Fig. 7): Dutch fine-tuning with the French OMP masks
#   ./run.sh --lang nl ... --setting h2l --mask-from exp/h2l_fr --methods "omp parp" \
#            --sparsities 0.5 --tag h2l_fr_to_nl
#
# Stages (asr.sh): 1 data, 2 phonemize, 3 dense, 4 prune, 5 retrain, 6 evaluate, 7 results +
# analysis; see ./asr.sh --help. Experiments: exp/<setting>_<locale>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

lang=nl               # Common Voice locale; conf/lang/<lang>.conf sets espeak_voice, train_hours
cv_root=              # local Common Voice release (holding <lang>/{train,dev,test}.tsv, clips/)
setting=h2l           # h2l (English-pretrained upstream) or csr (multilingual upstream): names exp/
upstream=             # the pretrained upstream of the setting
espeak_voice=         # espeak-ng voice for the phone transcripts (from conf/lang/<lang>.conf)
train_hours=1         # hours of training audio (from conf/lang/<lang>.conf)
methods="rp mpi omp imp parp parp-p"
sparsities="0.1 0.3 0.5 0.7 0.9"
mask_from=            # mask transfer: take the masks of the runs under this exp folder
finetune_config=conf/finetune.yaml
stage=1
stop_stage=100
tag=                  # default: <setting>_<lang>
nj=1
threads=0
prune_opts=

help_message="Usage: $0 --lang LOCALE --cv-root DIR --setting h2l|csr --upstream SPEC [options]
  --lang LOCALE         Common Voice locale with a conf/lang/LOCALE.conf (default $lang)
  --cv-root DIR         local Common Voice release folder
  --setting NAME        h2l or csr (default $setting)
  --upstream SPEC       pretrained upstream: wav2vec2-base for h2l, XLSR-53 for csr (required)
  --train-hours H       hours of training audio (default: the language conf's, 1)
  --espeak-voice V      espeak-ng voice of the phones (default: the language conf's)
  --methods LIST        pruning methods (default \"$methods\")
  --sparsities LIST     target sparsities (default \"$sparsities\")
  --mask-from EXP       mask transfer from another language's experiment (see ./asr.sh --help)
  --finetune-config F   (default $finetune_config)
  --stage N / --stop-stage N / --tag NAME / --nj N / --threads N / --prune-opts OPTS
                        as in ./asr.sh --help"

# The language's conf is read first, so options given on the command line win over it.
for ((i = 1; i <= $#; i++)); do
  case ${!i} in
    --lang) j=$((i + 1)); lang=${!j:-} ;;
    --lang=*) lang=${!i#--lang=} ;;
  esac
done
[ -f "conf/lang/$lang.conf" ] || { echo "$0: --lang $lang: no conf/lang/$lang.conf (known: $(cd conf/lang && ls | sed 's/\.conf$//' | tr '\n' ' '))" >&2; exit 2; }
# shellcheck disable=SC1090
. "conf/lang/$lang.conf"
. utils/launch.sh   # --ngpu, --num-nodes, ...: passed on to ./asr.sh (torchrun)
help_message+=$launch_help
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2; }
launch_check
case $setting in h2l|csr) ;; *) echo "$0: --setting takes h2l or csr, got '$setting'" >&2; exit 2;; esac
[ -n "$upstream" ] || { echo "$0: pass --upstream (the pretrained model of the $setting setting); see --help" >&2; exit 2; }
[ -n "$cv_root" ] || [ "$stage" -gt 1 ] || { echo "$0: pass --cv-root DIR (the Common Voice release folder)" >&2; exit 2; }

data=data/$lang
# asr.sh evals --local-data-opts: every value is quoted with printf %q (paths with spaces)
data_opts=$(printf -- '--cv-root %q --lang %q --train-hours %q' "$cv_root" "$lang" "$train_hours")
./asr.sh \
  --finetune-config "$finetune_config" \
  --upstream "$upstream" \
  --methods "$methods" \
  --sparsities "$sparsities" \
  --local-data-opts "$data_opts" \
  --train-set "$data/train" --dev-set "$data/dev" --test-sets "$data/test" \
  --phonemize-opts "--lang-voice $lang=$espeak_voice" \
  --mask-from "$mask_from" \
  --stage "$stage" --stop-stage "$stop_stage" --tag "${tag:-${setting}_$lang}" \
  --nj "$nj" --threads "$threads" --prune-opts "$prune_opts" "${launch_opts[@]}"
