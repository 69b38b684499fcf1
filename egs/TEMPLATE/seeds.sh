# Sourced by the stage scripts (ic.sh, asr.sh) after their options are parsed: the training
# seeds of --seeds "1 2 3". Needs `seeds` and `expdir`.
#
#   seed_list      one entry per seed; ("") without --seeds: the config's train.seed, runs
#                  directly in $expdir
#   seed_dir S     the folder of seed S's runs: $expdir/seed<S> ($expdir for "")
#   seed_opts S    the `sprune prune` options that set seed S (none for ""), as words
seed_list=("")
if [ -n "${seeds// /}" ]; then
  read -r -a seed_list <<< "$seeds"
  for seed in "${seed_list[@]}"; do
    case $seed in *[!0-9]*) echo "$0: --seeds takes whole numbers, got '$seed'" >&2; exit 2;; esac
  done
fi
seed_dir() { echo "$expdir${1:+/seed$1}"; }
seed_opts() { [ -z "$1" ] || echo "--set train.seed=$1"; }
