#!/usr/bin/env bash
# Keep the utterances of a Kaldi data dir whose duration is in a range
# (a thin wrapper around `sprune data filter`).
set -euo pipefail

min_seconds=0
max_seconds=inf
help_message="Usage: $0 [options] <src-data-dir> <dest-data-dir>
Write the utterances of <src-data-dir> lasting between the two limits (inclusive) to <dest-data-dir>.
Options:
  --min-seconds <x>   shortest duration kept (default: $min_seconds)
  --max-seconds <y>   longest duration kept (default: $max_seconds, no limit)
Needs 'sprune' on PATH (the recipe's path.sh puts it there)."

. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if [ $# -ne 2 ]; then
  printf '%s\n' "$help_message" >&2
  exit 2
fi
command -v sprune >/dev/null || { echo "$0: 'sprune' is not on PATH; source the recipe's path.sh" >&2; exit 2; }

exec sprune data filter "$1" "$2" --min-seconds "$min_seconds" --max-seconds "$max_seconds"
