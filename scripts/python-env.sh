#!/usr/bin/env bash
# Creates (or reuses) the Python venv the tests use: tritonclient as a real OIP client, onnxruntime as the
# reference. Keyed by the requirements file, so a change re-installs. Prints nothing when up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TRACTOR_VENV:-$HOME/.cache/tractor/venv}"
req=tests/fixtures/requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "[python-env] installing $req into $venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
