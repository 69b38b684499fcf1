#!/usr/bin/env bash
# Check Kaldi data dirs and list every problem (a thin wrapper around `sprune data validate`).
set -euo pipefail

check_audio=true
help_message="Usage: $0 [options] <data-dir> [<data-dir> ...]
Report every problem of each data dir as 'file:line: message'; exit 2 if any.
Options:
  --check-audio <true|false>   open every audio file: existence, decoding, 16 kHz, mono (default: $check_audio)
Needs 'sprune' on PATH (the recipe's path.sh puts it there)."

. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if [ $# -lt 1 ]; then
  printf '%s\n' "$help_message" >&2
  exit 2
fi
command -v sprune >/dev/null || { echo "$0: 'sprune' is not on PATH; source the recipe's path.sh" >&2; exit 2; }

opts=()
$check_audio || opts+=(--no-audio)
exec sprune data validate ${opts[@]+"${opts[@]}"} "$@"
