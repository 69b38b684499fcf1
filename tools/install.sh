#!/usr/bin/env bash
# Install sprune into a virtual environment, and espeak-ng for the offline corpus.
#
# Usage: tools/install.sh [--force]
#   SPRUNE_VENV  where the venv lives (default: tools/venv inside the checkout)
#   PYTHON       interpreter used to create it (default: python3, needs >= 3.10)
#
# The venv is reused when the pinned requirements (tools/requirements.txt) and setup.py
# have not changed since it was built: their hash is stored in $SPRUNE_VENV/.sprune-stamp.
# A fresh install downloads about 4 GB (torch 2.9.1 is a CUDA build) and fills about 8 GB.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${SPRUNE_VENV:-$root/tools/venv}
python=${PYTHON:-python3}
force=false
case "${1:-}" in
  --force) force=true ;;
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "tools/install.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

# pip warns about every missing local index of this machine's pip.conf; keep the real output.
pip_quiet() {
  "$venv/bin/python" -m pip -q "$@" 2>&1 | { grep -v '^WARNING: Location .* is ignored' || true; }
  return "${PIPESTATUS[0]}"
}
stamp_of() { cat "$root/tools/requirements.txt" "$root/setup.py" "$root/pyproject.toml" | sha256sum | cut -c1-16; }
want=$(stamp_of)
stamp_file=$venv/.sprune-stamp

if ! $force && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want" ] \
     && "$venv/bin/python" -c "import sprune" 2>/dev/null; then
  echo "sprune: venv $venv is up to date (requirements hash $want)"
else
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "tools/install.sh: $python is older than Python 3.10; set PYTHON=python3.11" >&2; exit 2; }
  echo "sprune: building venv $venv (requirements hash $want); a first install takes several minutes"
  start=$(date +%s)
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  rm -f "$stamp_file"
  # pip 25+ refuses espnet's dependency ci_sdr (it names a git URL in an extra): keep pip 24.2.
  pip_quiet install --upgrade "pip==24.2" wheel
  pip_quiet install -r "$root/tools/requirements.txt"
  pip_quiet install --no-deps --no-build-isolation -e "$root"
  echo "$want" > "$stamp_file"
  echo "sprune: venv ready in $(( $(date +%s) - start )) s"
fi

# espeak-ng speaks the offline corpus: the Debian package when we may install it, else the
# pip package espeakng-loader (the library and its voice data, driven through ctypes).
if command -v espeak-ng >/dev/null 2>&1; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sprune: installing espeak-ng (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q espeak-ng >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q espeak-ng >/dev/null; }
else
  "$venv/bin/python" -c "import espeakng_loader" 2>/dev/null \
    || "$venv/bin/python" -m pip install -q espeakng-loader
fi

# The offline LM corpus (`sprune lm text --corpus kjv`) is the King James Bible read by
# Debian's bible-kjv; without it only the KJV recipe and its tests are left out.
kjv_needs="the KJV LM recipe needs Debian's bible-kjv bible-kjv-text (apt-get install bible-kjv bible-kjv-text, as root)"
if command -v bible >/dev/null 2>&1; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sprune: installing bible-kjv bible-kjv-text (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q bible-kjv bible-kjv-text >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q bible-kjv bible-kjv-text >/dev/null; } \
    || echo "sprune: could not install them; $kjv_needs"
else
  echo "sprune: $kjv_needs"
fi

# The offline multilingual corpus (`sprune mltext`: en, fr, it, nl sentences for espeak-ng)
# reads translated manual pages, manuals and fortunes from Debian packages. Best effort: a
# failure only leaves that corpus out, with the command to run.
ml_packages="manpages-fr manpages-fr-dev manpages-it manpages-it-dev manpages-nl manpages-nl-dev fortunes-it installation-guide-amd64 aptitude-doc-fr aptitude-doc-it aptitude-doc-nl debian-faq-fr debian-faq-it debian-faq-nl"
ml_missing=""
for p in $ml_packages; do
  [ -f "/var/lib/dpkg/info/$p.list" ] || ml_missing="$ml_missing $p"
done
ml_needs="the offline multilingual corpus (sprune mltext) needs Debian's$ml_missing (apt-get install$ml_missing, as root)"
if [ -z "$ml_missing" ]; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sprune: installing$ml_missing (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  apt-get install -y -q $ml_missing >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q $ml_missing >/dev/null; } \
    || echo "sprune: could not install them; $ml_needs"
else
  echo "sprune: $ml_needs"
fi
