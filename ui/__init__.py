"""Shared pieces of the Streamlit app (DVBPR Studio). All recommender logic lives in the dvbpr
package; this is presentation only. Modules, each importing only those listed before it:

  style      the app's CSS, page headers, colour legends
  problem    `Problem`: a condition the person can fix (a message, a hint, a page)
  public     public mode (DVBPR_PUBLIC): which server-side actions are refused and hidden
  errors     errors as messages with a hint chosen by the error's class (another in public mode); `guard`
  paths      data and models roots (env vars), listing datasets and runs, cache stamps
  state      the session state shared between pages (active dataset and model, URL, user)
  figures    Plotly chart config, colours and the cache of built figures
  maps       the embedding map's figures, catalogue picture and thumbnail mosaic
  grid       image grids of cached JPEG thumbnails
  reference  the DVBPR tutorial's reference metrics
  loaders    cached loaders: dataset, Recommender, evaluation, diagnostics, maps, new images
  sidebar    the dataset and model pickers
  shell      what every page shares (page config, sidebar) and `run_page`
"""
