#!/usr/bin/env bash
# Merge Kaldi data dirs with distinct utterance ids (a thin wrapper around `sprune data combine`).
set -euo pipefail

help_message="Usage: $0 <dest-data-dir> <src-data-dir> [<src-data-dir> ...]
Write the union of the source dirs to <dest-data-dir>. text, utt2lang and utt2intent are
kept only when every source has them.
Needs 'sprune' on PATH (the recipe's path.sh puts it there)."

. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if [ $# -lt 2 ]; then
  printf '%s\n' "$help_message" >&2
  exit 2
fi
command -v sprune >/dev/null || { echo "$0: 'sprune' is not on PATH; source the recipe's path.sh" >&2; exit 2; }

exec sprune data combine "$@"
