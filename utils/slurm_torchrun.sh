#!/usr/bin/env bash
# An example SLURM batch job: a recipe's training stages on several machines with several
# GPUs each, through torchrun (the recipe options --ngpu, --num-nodes, --node-rank and
# --rdzv-endpoint; utils/launch.sh).  Copy it, change the #SBATCH lines, the recipe and its
# options to yours, and submit it from the top of the checkout:
#
#     sbatch utils/slurm_torchrun.sh
#
# What it needs:
#   - the same checkout, venv (tools/venv) and data paths on every machine, and a shared
#     filesystem holding the recipe folder: data/ and exp/ are read and written by all of
#     them (rank 0, on any one machine, writes every log, checkpoint and run folder; a
#     killed job resumes from exp/.../checkpoint/last, with any number of machines or GPUs)
#   - a free port on the first machine for torchrun's rendezvous (RDZV_PORT below)
#   - train.batch_size, the global batch, divisible by nodes x GPUs per node
#
# One srun task per machine (--ntasks-per-node=1): each runs the recipe, whose training
# stages start torchrun with --gpus-per-node processes there.  Data preparation runs once,
# on one machine, before; evaluation and results after, also on one machine (they are one
# process each).
#
#SBATCH --job-name=sprune
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail

recipe=egs/librispeech/asr1        # run from the top of the checkout (sbatch's folder)
recipe_opts=(--split 10h --librispeech-root /data --librilight-root /data
             --upstream /models/wav2vec2-base)
train_stages=(--stage 3 --stop-stage 5)   # asr.sh: 3 dense, 4 prune, 5 retrain
RDZV_PORT=${RDZV_PORT:-29400}

# node 0's host name: the first of the job's machines
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export RECIPE=$recipe
export RDZV_ENDPOINT=$head_node:$RDZV_PORT
# GPUs per machine: SLURM sets SLURM_GPUS_ON_NODE in each task; else from --gpus-per-node
# (a100:4 -> 4)
gpus=${SLURM_GPUS_PER_NODE:-1}
export GPUS_PER_NODE=${gpus##*:}
echo "sprune: $SLURM_NNODES machines x $GPUS_PER_NODE GPUs, rendezvous at $RDZV_ENDPOINT"

# The srun commands below run `bash -c "$in_recipe" bash ARGS`: `cd $RECIPE && ./run.sh ARGS`
# on the machine; in single quotes, so that each machine reads its own SLURM_* variables.
# shellcheck disable=SC2016
in_recipe='cd "$RECIPE" && exec ./run.sh "$@"'

# 1. data (and phonemes): one process on one machine
srun --nodes=1 --ntasks=1 bash -c "$in_recipe" bash "${recipe_opts[@]}" --stop-stage 2

# 2. training: the same command on every machine, SLURM_NODEID its --node-rank
# shellcheck disable=SC2016
srun --ntasks-per-node=1 bash -c "$in_recipe"' --ngpu "${SLURM_GPUS_ON_NODE:-$GPUS_PER_NODE}" \
    --num-nodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" \
    --rdzv-endpoint "$RDZV_ENDPOINT" --rdzv-id "sprune-$SLURM_JOB_ID"' \
  bash "${recipe_opts[@]}" "${train_stages[@]}"

# 3. evaluation, results and analysis: one process on one machine
srun --nodes=1 --ntasks=1 bash -c "$in_recipe" bash "${recipe_opts[@]}" --stage 6
