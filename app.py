"""DVBPR Studio: the Streamlit app (router). Run with `streamlit run app.py`.

All logic lives in the `dvbpr` package; `pages/` and `ui/` only present it. Environment:
DVBPR_DATA_ROOT (default data), DVBPR_MODELS_ROOT (default models), DVBPR_DEFAULT_MODEL
(default default); see ui/paths.py. DVBPR_PUBLIC=1 (or DVBPR_PUBLIC = true in
.streamlit/secrets.toml) is public mode, for a public address; see ui/public.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Background jobs run `python -m dvbpr ...` from the working folder: make the package importable
# from there even when the app was started from another folder.
if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

from ui import shell  # noqa: E402

if shell.leave_legacy_pages_mode():  # started as a legacy pages/ app: rerun with st.navigation
    st.rerun()
pg = st.navigation(
    [
        st.Page("pages/recommendations.py", title="Recommendations", icon=":material/recommend:", default=True),
        st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
        st.Page("pages/upload.py", title="Upload", icon=":material/upload:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
        st.Page("pages/data.py", title="Data", icon=":material/database:"),
    ]
)
shell.setup()  # page config, CSS, default dataset on first start, active dataset/model, sidebar
with shell.pages_running():
    pg.run()
