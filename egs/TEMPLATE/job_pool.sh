# Sourced by recipe scripts: run commands in the background, at most $nj at once (Kaldi's
# run.pl in spirit). Set `nj` and `pool_log_dir` before spawning.
#
#   pool_spawn NAME COMMAND...   start COMMAND once fewer than $nj run; its output goes to
#                                $pool_log_dir/NAME.log
#   pool_finish STAGE            wait for every job; on a failure (each is named with the end of
#                                its log) exit 1 naming STAGE
#   pool_check_nj                one line and exit 2 unless $nj (--nj) is a positive integer
# A finished job prints the last line of its log. On machines other than node 0 of a
# several-machine run (--num-nodes, --node-rank: utils/launch.sh), which run the same jobs
# into the same shared folders, the logs go to $pool_log_dir/node<rank>/ instead.
declare -A pool_jobs=()
pool_failed=0
pool_log_dir=${pool_log_dir:-log}

pool_log() {   # pool_log NAME: the log file of job NAME
  if [ "${num_nodes:-1}" -gt 1 ] && [ "${node_rank:-0}" -gt 0 ]; then
    echo "$pool_log_dir/node$node_rank/$1.log"
  else
    echo "$pool_log_dir/$1.log"
  fi
}

pool_job_done() {   # pool_job_done PID STATUS
  local name=${pool_jobs[$1]} log
  unset "pool_jobs[$1]"
  log=$(pool_log "$name")
  if [ "$2" -ne 0 ]; then
    pool_failed=1
    echo "$0: $name failed (exit $2); end of $log:" >&2
    tail -n 5 "$log" >&2
  else
    tail -n 1 "$log"
  fi
}

pool_reap_one() {
  local pid= status=0
  wait -n -p pid || status=$?
  [ -z "$pid" ] || pool_job_done "$pid" "$status"
}

pool_spawn() {
  local name=$1 log
  shift
  while [ "${#pool_jobs[@]}" -ge "$nj" ]; do pool_reap_one; done
  log=$(pool_log "$name")
  mkdir -p "$(dirname "$log")"
  "$@" > "$log" 2>&1 &
  pool_jobs[$!]=$name
}

pool_finish() {
  while [ "${#pool_jobs[@]}" -gt 0 ]; do pool_reap_one; done
  [ "$pool_failed" -eq 0 ] || { echo "$0: $1 failed (see above)" >&2; exit 1; }
}

pool_check_nj() {
  case $nj in ''|*[!0-9]*|0) echo "$0: --nj must be a positive integer, got '$nj'" >&2; exit 2;; esac
}
