# Sourced by the scripts: create .venv when missing and install deltasync into it.
# Usage: ensure_venv EXTRAS   (e.g. ensure_venv test)

ensure_venv() {
  local extras=${1:-}
  local python=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
      || { echo "deltasync needs Python 3.11 or newer ($python is older)" >&2; return 1; }
    "$python" -m venv .venv
  fi
  local spec=.
  [ -n "$extras" ] && spec=".[$extras]"
  # Reinstall only when the project's metadata (or its package list) changed since the last install.
  local stamp=".venv/.deltasync-installed-$extras"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" 2>&1 \
      | grep -v "^WARNING: Location" >&2 || true
    .venv/bin/python -c 'import deltasync' || return 1
    touch "$stamp"
  fi
}
