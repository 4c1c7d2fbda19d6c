#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned requirements. Idempotent and quick when
# nothing changed: pip is skipped if the requirements file's hash matches the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
python3 -m venv .venv 2>/dev/null || python3 -m venv .venv
stamp=".venv/.installed-$(basename "$req")"
hash=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$req"
  echo "$hash" > "$stamp"
fi
