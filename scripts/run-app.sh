#!/usr/bin/env bash
# Quick start 1: set up and open the app on the embedded default dataset and model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
# Generates data/default on first use (under a minute), so the app opens ready.
.venv/bin/python -m dvbpr info >/dev/null
exec .venv/bin/streamlit run app.py "$@"
