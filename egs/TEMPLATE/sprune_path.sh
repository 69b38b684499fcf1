# Sourced by a recipe's local/*.sh scripts, which run from the recipe folder: puts `sprune` on
# PATH through the shared path.sh, unless one is there already (run.sh sourced path.sh, or a
# test put its own sprune first on PATH).
if ! command -v sprune >/dev/null 2>&1; then
  # shellcheck disable=SC1091
  . "$(dirname "${BASH_SOURCE[0]}")/ic1/path.sh"
fi
