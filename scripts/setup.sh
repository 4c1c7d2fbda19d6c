#!/usr/bin/env bash
# Create .venv (Python 3.11), install the pinned requirements and the dvbpr package itself
# (editable: the `dvbpr` command, and `python -m dvbpr` from any folder). Idempotent and quick
# when nothing changed: pip is skipped if the requirements and pyproject.toml hash as last time.
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
python3 -m venv .venv 2>/dev/null || python3 -m venv .venv
stamp=".venv/.installed-$(basename "$req")"
hash=$( (cat requirements*.txt pyproject.toml; pwd) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$req"
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$hash" > "$stamp"
fi
