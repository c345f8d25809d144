#!/usr/bin/env bash
# Creates (or reuses) a Python venv from a requirements file. With no arguments, the venv the tests use
# (tritonclient as a real OIP client, onnxruntime as the reference); the bench passes its own requirements and
# venv dir: `scripts/python-env.sh [REQUIREMENTS [VENV]]`. Keyed by the requirements file, so a change
# re-installs. Prints nothing when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-tests/fixtures/requirements.txt}"
venv="${2:-${TRACTOR_VENV:-$HOME/.cache/tractor/venv}}"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "[python-env] installing $req into $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
