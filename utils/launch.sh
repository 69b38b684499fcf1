# Training on several GPUs or machines through torchrun (PyTorch's launcher).  Source it, do
# not run it, BEFORE utils/parse_options.sh, so that its variables are options of the script:
#
#     . ./path.sh
#     . utils/launch.sh
#     help_message+=$launch_help
#     . utils/parse_options.sh
#     launch_check
#     ...
#     sprune_train prune --config conf/finetune.yaml ...     # instead of `sprune prune ...`
#
# and then `./run.sh --ngpu 4` trains with 4 processes on this machine, and
# `./run.sh --ngpu 8 --num-nodes 2 --node-rank R --rdzv-endpoint node1:29400` (the same
# command on both machines, R = 0 and 1) with 16 processes on two.  The options:
#
#   --ngpu N                  processes per machine (default 1).  1 on one machine runs
#                             `sprune ARGS` as before; otherwise each process drives one GPU
#                             (NCCL), or on a machine without GPUs is a CPU process (gloo)
#   --num-nodes M             machines of the run (default 1)
#   --node-rank R             this machine's number, 0..M-1 (default 0)
#   --rdzv-endpoint HOST:PORT where the machines meet: node 0's host and a free port
#                             (needed when M > 1)
#   --rdzv-id NAME            the run's rendezvous name, the same on every machine
#                             (default sprune)
#
# What sprune_train ARGS runs:
#
#   one process      sprune ARGS
#   one machine      python -m torch.distributed.run --standalone --nproc-per-node N -m sprune ARGS
#   M machines       python -m torch.distributed.run --nnodes M --node-rank R --nproc-per-node N
#                      --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id NAME -m sprune ARGS
#
# `python` is the interpreter of the `sprune` command (its #! line: the venv path.sh
# activates), else the `python` on PATH, so both import the same checkout.  --standalone
# lets torchrun pick a free port on this machine.  Use sprune_train for the training
# commands only (prune, lm train, lm prune, pretrain, l0prune); data preparation,
# evaluation, decoding and results stay `sprune`: one process.
#
# Several torchrun jobs at once would share the GPUs (each uses N of them) and, across
# machines, the one rendezvous endpoint, so a script that runs training jobs in parallel
# (egs/TEMPLATE/job_pool.sh) runs them one at a time under torchrun: `nj=$(launch_jobs
# "$nj")` when its pool only trains, else a `local nj=$(launch_jobs "$nj")` around the
# pool_spawn of its training jobs (asr.sh's train_spawn).
#
#   launch_check         after parse_options.sh: check the options (one line on stderr and
#                        exit 2 when wrong) and set the array launch_opts, the options
#                        again, to pass on to another script that sources this file
#   launch_distributed   succeeds when training goes through torchrun
#   launch_jobs N        N, or 1 when training goes through torchrun
#   sprune_train ARGS    `sprune ARGS` in the processes above
#
# Errors print one line to stderr and exit 2.  Works under `set -euo pipefail`.
# shellcheck shell=bash disable=SC2034  # launch_help, launch_opts: for the sourcing script

ngpu=1
num_nodes=1
node_rank=0
rdzv_endpoint=
rdzv_id=sprune

launch_help="

Training with several processes (torchrun; see utils/launch.sh):
  --ngpu N                     processes per machine: one per GPU, or CPU processes on a
                               machine without GPUs (default $ngpu: plain sprune)
  --num-nodes M                machines, each running this same command (default $num_nodes)
  --node-rank R                this machine's number, 0..M-1 (default $node_rank)
  --rdzv-endpoint HOST:PORT    node 0's host and a free port (needed when M > 1)
  --rdzv-id NAME               rendezvous name, the same on every machine (default $rdzv_id)
With N > 1 or M > 1 the training runs go one at a time, each with all N x M processes."

launch_opts=()

_launch_fail() {
  echo "$0: $*" >&2
  exit 2
}

_launch_count() {   # _launch_count VALUE: a whole number >= 1
  [[ $1 =~ ^[0-9]+$ ]] && (( 10#$1 >= 1 ))
}

launch_check() {
  _launch_count "$ngpu" \
    || _launch_fail "--ngpu must be a whole number >= 1 (processes per machine; 1: one CPU or GPU process), got '$ngpu'"
  _launch_count "$num_nodes" \
    || _launch_fail "--num-nodes must be a whole number >= 1 (machines), got '$num_nodes'"
  if ! [[ $node_rank =~ ^[0-9]+$ ]] || (( 10#$node_rank >= 10#$num_nodes )); then
    _launch_fail "--node-rank must be a whole number below --num-nodes $num_nodes (this machine's number, 0 for the first), got '$node_rank'"
  fi
  (( 10#$num_nodes == 1 )) || [[ -n $rdzv_endpoint ]] \
    || _launch_fail "--num-nodes $num_nodes needs --rdzv-endpoint HOST:PORT (node 0's host and a free port)"
  ngpu=$((10#$ngpu)) num_nodes=$((10#$num_nodes)) node_rank=$((10#$node_rank))
  launch_opts=(--ngpu "$ngpu" --num-nodes "$num_nodes" --node-rank "$node_rank"
               --rdzv-endpoint "$rdzv_endpoint" --rdzv-id "$rdzv_id")
}

launch_distributed() {
  (( 10#$ngpu > 1 || 10#$num_nodes > 1 ))
}

launch_jobs() {
  if launch_distributed; then echo 1; else echo "$1"; fi
}

# The interpreter of the `sprune` command when it is a Python script with an absolute #!
# line (a venv's or pip's console script), else `python` from PATH.
_launch_python() {
  local exe line=
  exe=$(command -v sprune) || _launch_fail "no 'sprune' on PATH (source path.sh, or run 'make install')"
  if [[ -f $exe ]]; then IFS= read -r line < "$exe" || true; fi
  line=${line#\#!}
  if [[ $line == /* && $line != *[[:space:]]* && ${line##*/} == python* && -x $line ]]; then
    echo "$line"
  else
    command -v python > /dev/null || _launch_fail "no 'python' on PATH for torchrun (source path.sh: it activates sprune's venv)"
    echo python
  fi
}

sprune_train() {
  launch_check
  if ! launch_distributed; then
    sprune "$@"
    return
  fi
  local python torchrun
  python=$(_launch_python) || exit 2
  if (( 10#$num_nodes == 1 )); then
    torchrun=(--standalone --nproc-per-node "$ngpu")
  else
    torchrun=(--nnodes "$num_nodes" --node-rank "$node_rank" --nproc-per-node "$ngpu"
              --rdzv-backend c10d --rdzv-endpoint "$rdzv_endpoint" --rdzv-id "$rdzv_id")
  fi
  "$python" -m torch.distributed.run "${torchrun[@]}" -m sprune "$@"
}
