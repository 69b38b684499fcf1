# Sourced by every recipe's run.sh (recipes link to this file): puts the sprune venv and the
# Kaldi-style helpers in utils/ on PATH.
sprune_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
sprune_venv=${SPRUNE_VENV:-$sprune_root/tools/venv}
if [ -f "$sprune_venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$sprune_venv/bin/activate"
elif ! command -v sprune >/dev/null 2>&1; then
  echo "path.sh: no venv at $sprune_venv and no sprune on PATH; run 'make install' in $sprune_root" >&2
  return 2 2>/dev/null || exit 2
fi
export PATH=$sprune_root/utils:$PATH
export PYTHONUNBUFFERED=1
export LC_ALL=C.UTF-8
