"""Shared pieces of the Streamlit app (DVBPR Studio): paths and env vars, the active dataset and
model (session state + URL), the sidebar, cached loaders, image grids, maps and error display.
All recommender logic lives in the dvbpr package; this is presentation only."""
