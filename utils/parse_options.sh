# Command-line options for bash scripts, with Kaldi's conventions.  Source it, do not run it.
#
# A script defines its options as variables with default values, then sources this file:
#
#     stage=1
#     nj=4
#     use_gpu=false
#     help_message="Usage: $0 [options] <data-dir>"
#     . utils/parse_options.sh
#
# and then `./script.sh --stage 3 --use-gpu true data/train` sets stage=3 and use_gpu=true
# and leaves "data/train" in "$@".  The rules:
#
#   --foo-bar VALUE, --foo-bar=VALUE   set foo_bar (dashes become underscores); the variable
#                                      must already be defined, otherwise exit 2
#   variables holding true/false       accept only true or false
#   --config FILE                      source FILE (lines `foo_bar=value`) before the other
#                                      options, wherever it appears; may be repeated
#   --help, -h                         print $help_message (if the script set it) and exit 0
#   --, or the first non-option        ends the options; what follows stays in "$@"
#
# Errors print one line to stderr and exit 2.  Works under `set -euo pipefail`.
# The helper variables and functions it uses start with _po_ and are removed at the end.

_po_fail() {
  echo "$0: $*" >&2
  exit 2
}

# Turn "--foo-bar" into "foo_bar"; fail unless it names a defined variable.
_po_var_of() {
  local option=$1 name
  name=${option#--}
  name=${name//-/_}
  [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] \
    || _po_fail "bad option '$option': options look like --name or --name-with-dashes (see $0 --help)"
  [[ -n ${!name+set} ]] \
    || _po_fail "unknown option '$option' (no variable '$name' in this script; see $0 --help)"
  _po_name=$name
}

_po_assign() {
  local name=$1 value=$2 origin=$3
  case ${!name} in
    true|false)
      [[ $value == true || $value == false ]] \
        || _po_fail "$origin: '$value' is not a boolean; it takes true or false" ;;
  esac
  printf -v "$name" '%s' "$value"
}

# Check a config file's lines before sourcing it: comments, blank lines or name=value with a
# defined name.
_po_source_config() {
  local file=$1 lineno=0 line name
  [[ -f $file ]] || _po_fail "--config $file: no such file"
  while IFS= read -r line || [[ -n $line ]]; do
    lineno=$((lineno + 1))
    [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
    [[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)= ]] \
      || _po_fail "$file:$lineno: expected 'name=value', got '$line'"
    name=${BASH_REMATCH[1]}
    [[ -n ${!name+set} ]] \
      || _po_fail "$file:$lineno: unknown option '$name' (no such variable in $0)"
  done < "$file"
  # shellcheck disable=SC1090
  . "$file"
}

# Pass 1: --help and --config, up to the end of the options.
_po_args=("$@")
_po_i=0
while (( _po_i < ${#_po_args[@]} )); do
  _po_arg=${_po_args[_po_i]}
  case $_po_arg in
    --) break ;;
    --help|-h)
      if [[ -n ${help_message+set} ]]; then printf '%s\n' "$help_message"
      else echo "$0: this script has no help_message; read its header for the options"; fi
      exit 0 ;;
    --config=*) _po_source_config "${_po_arg#--config=}" ;;
    --config)
      (( _po_i + 1 < ${#_po_args[@]} )) || _po_fail "option --config needs a file name"
      _po_i=$((_po_i + 1))
      _po_source_config "${_po_args[_po_i]}" ;;
    --?*=*) ;;
    --?*) _po_i=$((_po_i + 1)) ;;   # skip its value
    *) break ;;
  esac
  _po_i=$((_po_i + 1))
done

# Pass 2: every other option, shifting the script's own "$@" (this file is sourced).
while (( $# > 0 )); do
  case $1 in
    --) shift; break ;;
    --config=*) shift ;;
    --config) shift 2 ;;
    --?*=*)
      _po_var_of "${1%%=*}"
      _po_assign "$_po_name" "${1#*=}" "${1%%=*}"
      shift ;;
    --?*)
      _po_var_of "$1"
      (( $# >= 2 )) || _po_fail "option $1 needs a value"
      _po_assign "$_po_name" "$2" "$1"
      shift 2 ;;
    *) break ;;
  esac
done

unset -f _po_fail _po_var_of _po_assign _po_source_config
unset _po_args _po_i _po_arg _po_name
