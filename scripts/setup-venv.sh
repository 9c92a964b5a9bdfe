#!/usr/bin/env bash
# Creates the virtual environment and installs Slipway with every extra (editable).
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Slipway needs Python >= 3.11; '$python' is $("$python" --version 2>&1). Set PYTHON=... ." >&2
  exit 1
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip setuptools wheel
echo ">> installing slipway[all] into $venv (torch and ray are large: a few minutes the first time)"
"$venv/bin/python" -m pip install --quiet --progress-bar off -e '.[all]'
