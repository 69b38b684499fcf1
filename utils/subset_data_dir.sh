#!/usr/bin/env bash
# Copy part of a Kaldi data dir (a thin wrapper around `sprune data subset`).
set -euo pipefail

utt_list=
spk_list=
langs=
first=
help_message="Usage: $0 <selection> <src-data-dir> <dest-data-dir>
Write the selected utterances of <src-data-dir> to <dest-data-dir>. Give exactly one selection:
  --utt-list <file>    utterances listed in <file> (first field of each line)
  --spk-list <file>    utterances of the speakers listed in <file>
  --langs <l1,l2>      utterances of these languages (needs utt2lang), e.g. en-US,fr-FR
  --first <n>          the first <n> utterances in sorted order
Needs 'sprune' on PATH (the recipe's path.sh puts it there)."

. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

selection=()
[ -z "$utt_list" ] || selection+=(--utt-list "$utt_list")
[ -z "$spk_list" ] || selection+=(--speakers "$spk_list")
[ -z "$langs" ] || selection+=(--langs "$langs")
[ -z "$first" ] || selection+=(--first "$first")
if [ $# -ne 2 ] || [ ${#selection[@]} -ne 2 ]; then
  echo "$0: give exactly one of --utt-list, --spk-list, --langs, --first and two data dirs (see $0 --help)" >&2
  exit 2
fi
command -v sprune >/dev/null || { echo "$0: 'sprune' is not on PATH; source the recipe's path.sh" >&2; exit 2; }

exec sprune data subset "$1" "$2" "${selection[@]}"
