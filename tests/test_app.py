"""The Streamlit app, page by page, with streamlit.testing (AppTest) on a tiny dataset and model.

One session-scoped fixture builds, in temporary folders: a tiny synthetic dataset (data/default),
a model trained on it for one epoch (models/default) with its embedding map, a copy of that model
without a map (models/fresh), and a run that failed before its first checkpoint (models/broken).
The app finds them through DVBPR_DATA_ROOT / DVBPR_MODELS_ROOT. Every test asserts that no
exception reached the screen.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dvbpr.fsutil import atomic_write_json
from dvbpr.rundir import REPO_ROOT
from tests.apptest import errors, ok, use_roots
from tests.apptest import open_app as app


@pytest.fixture(scope="session")
def roots(tmp_path_factory) -> dict[str, Path]:
    from dvbpr import embedmap
    from dvbpr.config import TrainConfig
    from dvbpr.synth import SynthConfig, make_dataset
    from dvbpr.train import train

    base = tmp_path_factory.mktemp("app")
    data_root, models_root = base / "data", base / "models"
    data = make_dataset(
        data_root / "default", SynthConfig(n_items=240, n_users=80, mean_interactions=8, image_size=64), progress=False
    )
    run = models_root / "default"
    train(
        TrainConfig(data=str(data), out=str(run), arch="cnnf-small", epochs=1, dim=16, cf_dim=8, batch_size=64),
        progress=False,
    )
    embedmap.compute_map(run)  # in-process: the app then shows the map without a background job
    shutil.copytree(run, models_root / "fresh", ignore=shutil.ignore_patterns("cache", ".lock"))
    broken = models_root / "broken"
    broken.mkdir()
    atomic_write_json(
        broken / "status.json",
        {
            "state": "failed",
            "message": "loss became nan at step 3 of the epoch",
            "note": "Colour is hardly a taste in this data (excess 0.01 < 0.05): compare --no-colour-stream",
            "data": str(data),
            "arch": "cnnf-small",
            "epoch": 0,
            "epochs": 2,
            "updated_at": time.time(),
        },
    )
    (broken / "train.log").write_text("loading data\nTrainingError: loss became nan at step 3\n")
    return {"data": data_root, "models": models_root, "dataset": data, "run": run}


@pytest.fixture(autouse=True)
def env(roots, monkeypatch):
    use_roots(monkeypatch, roots)
    return roots


def html(at: AppTest) -> str:
    return "\n".join(h.value for h in at.get("html"))


def png_bytes(colour=(200, 30, 60), size=(90, 120)) -> bytes:
    im = Image.new("RGB", size, "white")
    im.paste(colour, (15, 15, size[0] - 15, size[1] - 15))
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def _points(values) -> int:
    """Length of a Plotly spec array (a list, or a typed array {"dtype", "bdata"})."""
    if isinstance(values, dict):
        return len(base64.b64decode(values["bdata"])) // np.dtype(values["dtype"]).itemsize
    return len(values)


# ----------------------------------------------------------------------------- pages
def test_recommendations_user_switch_changes_grids():
    at = ok(app())
    assert not errors(at)
    assert at.title[0].value == "Recommendations"
    subheaders = [s.value for s in at.subheader]
    assert "Top 20 recommendations" in subheaders and "Test item" in subheaders
    user_box = at.selectbox(key="rec_user")
    first_user = user_box.value
    first_html = html(at)
    assert first_html.count('class="dv-card') >= 20  # 20 recommendations + history + test item
    assert "data:image/jpeg;base64," in first_html
    assert {m.label for m in at.metric} >= {"Test item rank", "User AUC", "Hit@20"}
    other = [u for u in user_box.options if u != first_user][3]
    at.selectbox(key="rec_user").set_value(other).run()
    ok(at)
    assert at.selectbox(key="rec_user").value == other
    assert html(at) != first_html
    assert at.session_state["user"] == other
    # the embedding map (precomputed) is drawn with the user's items highlighted: the catalogue
    # is the plot's background picture, only the highlighted items are points (SVG, not WebGL)
    charts = at.get("plotly_chart")
    assert charts
    spec = json.loads(charts[0].proto.spec)
    assert spec["layout"]["images"][0]["source"].startswith("data:image/png;base64,")
    traces = {t["name"]: t for t in spec["data"]}
    assert {"catalogue", "history", "top 20"} <= set(traces)
    assert {t["type"] for t in spec["data"]} == {"scatter"}
    assert _points(traces["top 20"]["x"]) == 20
    assert sum(_points(t["x"]) for t in spec["data"]) < 100  # not the 240 catalogue items


def test_recommendations_user_metrics_are_the_evaluations(roots):
    """The test item's rank and the user's AUC are that user's row of the evaluation the Evaluate
    page shows (not a recomputation that could disagree with it)."""
    from ui import loaders, paths

    run, data = roots["models"] / "default", roots["data"] / "default"
    key = (str(run), paths.checkpoint_stamp(paths.checkpoint_path(run)), str(data))
    result, rec = loaders._ranking(*key, "test"), loaders._recommender(*key)
    at = ok(app())
    for user in [at.selectbox(key="rec_user").value, *at.selectbox(key="rec_user").options[5:7]]:
        at.selectbox(key="rec_user").set_value(user).run()
        ok(at)
        row = loaders.user_ranking(result, rec.dataset.users.index(user))
        metrics = {m.label: m.value for m in at.metric}
        if row is None:
            assert metrics["User AUC"] == "-"
            continue
        assert metrics["User AUC"] == f"{row['auc']:.3f}"
        assert metrics["Test item rank"] == f"{int(row['best_rank']):,}"
        assert metrics["Hit@20"] == ("Yes" if row["best_rank"] <= 20 else "No")


def test_recommendations_random_user_and_hit_filter():
    at = ok(app())
    before = at.selectbox(key="rec_user").value
    [b for b in at.button if b.label == "Random user"][0].click().run()
    ok(at)
    assert at.selectbox(key="rec_user").value != before
    at.toggle(key="rec_only_hits").set_value(True).run()
    ok(at)
    options = at.selectbox(key="rec_user").options
    assert 0 < len(options) < 80 or at.warning  # only the hit users (or a note that there are none)


def test_selection_kept_in_url_and_across_pages():
    at = ok(app(model="fresh", data="default"))
    assert at.sidebar.selectbox(key="_sidebar_model").value == "fresh"
    assert at.query_params["model"] == "fresh" and at.query_params["data"] == "default"
    at.switch_page("pages/data.py").run()
    ok(at)
    assert at.sidebar.selectbox(key="_sidebar_model").value == "fresh"
    at.sidebar.selectbox(key="_sidebar_model").set_value("default").run()
    ok(at)
    assert at.session_state["active_model"] == "default"
    assert at.query_params["model"] == "default"


def test_unsafe_name_in_url_is_ignored():
    at = ok(app(model="../../etc", data="default"))
    assert any("Ignored an invalid name" in w.value for w in at.sidebar.warning)
    assert at.session_state["active_model"] == "default"


def test_embeddings_shows_the_map_and_colourings():
    at = ok(app("pages/embeddings.py"))
    assert not errors(at)
    assert at.get("plotly_chart"), "the UMAP scatter"
    at.segmented_control(key="emb_colour").set_value("Popularity").run()
    ok(at)
    at.segmented_control(key="emb_colour").set_value("User's score").run()
    ok(at)
    assert at.selectbox(key="emb_user").value
    assert at.image, "the thumbnail view"


def test_embeddings_shows_progress_while_the_map_is_computed(monkeypatch, roots):
    from dvbpr import embedmap

    calls = []

    def fake_start(run_dir, data=None):  # a "running" job (this process) instead of a real one
        calls.append(run_dir)
        key = embedmap.checkpoint_key(run_dir)
        atomic_write_json(
            Path(run_dir) / "cache" / f"umap_{key}.progress.json",
            {"state": "running", "fraction": 0.4, "message": "fitting UMAP", "pid": os.getpid()},
        )

    monkeypatch.setattr(embedmap, "start_map_job", fake_start)
    at = ok(app("pages/embeddings.py", model="fresh"))
    assert calls
    progress = at.get("progress")
    assert progress and "fitting UMAP" in progress[0].proto.text
    # the other pages point to the Embeddings page instead of a map
    at.switch_page("pages/recommendations.py").run()
    ok(at)
    assert any("not computed yet" in i.value for i in at.info)


def test_upload_png_ranks_users():
    at = ok(app("pages/upload.py"))
    at.file_uploader(key="up_file").set_value(("dress.png", png_bytes(), "image/png")).run()
    ok(at)
    assert not errors(at)
    assert "Users who would rank it highest" in [s.value for s in at.subheader]
    rows = html(at)
    assert rows.count('class="dv-row"') == 10  # the default 10 users
    assert "u0" in rows  # user ids (u0000...) listed
    assert at.get("plotly_chart")  # histogram and map


def test_upload_sends_the_image_through_the_cnn_once(roots):
    """One forward pass of the CNN serves the users' scores, the top users, the similar items and
    the map; changing the number of users listed reuses it."""
    from ui import loaders, paths

    run, data = roots["models"] / "default", roots["data"] / "default"
    rec = loaders._recommender(str(run), paths.checkpoint_stamp(paths.checkpoint_path(run)), str(data))
    batches = []
    hook = rec.model.cnn.register_forward_hook(lambda module, args, out: batches.append(len(out)))
    try:
        at = ok(app("pages/upload.py"))
        at.file_uploader(key="up_file").set_value(("once.png", png_bytes((20, 160, 90)), "image/png")).run()
        ok(at)
        assert batches == [1]
        at.slider(key="up_k").set_value(20).run()
        ok(at)
        assert batches == [1]
    finally:
        hook.remove()
    assert html(at).count('class="dv-row"') == 20
    assert "Visually most similar catalogue items" in [s.value for s in at.subheader]


def test_upload_catalogue_item():
    at = ok(app("pages/upload.py"))
    at.segmented_control(key="up_source").set_value("Catalogue item").run()
    ok(at)
    assert at.selectbox(key="up_item").value
    assert "Visually most similar catalogue items" in [s.value for s in at.subheader]


def test_upload_text_file_is_an_error_not_an_exception():
    at = ok(app("pages/upload.py"))
    at.file_uploader(key="up_file").set_value(("notes.png", b"just some text\n", "image/png")).run()
    ok(at)
    assert "notes.png" in errors(at)
    assert "Users who would rank it highest" not in [s.value for s in at.subheader]


def _train_form(at: AppTest, **values) -> AppTest:
    for key, value in values.items():
        widget = at.text_input(key=key) if key == "tr_name" else at.selectbox(key=key)
        widget.set_value(value)
    [b for b in at.button if b.label == "Start training"][0].click().run()
    return ok(at)


# New run form widget -> TrainConfig field
TRAIN_WIDGETS = {
    "tr_arch": "arch",
    "tr_size": "image_size",
    "tr_terms": "terms",
    "tr_epochs": "epochs",
    "tr_batch": "batch_size",
    "tr_lr": "lr",
    "tr_dim": "dim",
    "tr_cfdim": "cf_dim",
    "tr_seed": "seed",
    "tr_device": "device",
    "tr_max": "max_minutes",
    "tr_negatives": "negatives",
    "tr_in_batch": "in_batch",
    "tr_colour_stream": "colour_stream",
    "tr_texture": "texture",
    "tr_crop_agreement": "crop_agreement",
    "tr_augment": "augment",
    "tr_norm": "norm",
    "tr_theta_init": "theta_init",
    "tr_dropout": "dropout",
    "tr_lr_schedule": "lr_schedule",
    "tr_l2_cnn": "l2_cnn",
    "tr_l2_theta": "l2_theta",
    "tr_l2_cf": "l2_cf",
    "tr_select": "select",
    "tr_patience": "patience",
}


def _widget_values(at: AppTest) -> dict:
    return {field: at.session_state[key] for key, field in TRAIN_WIDGETS.items()}


def test_train_form_defaults_are_train_configs_and_the_paper_preset(monkeypatch):
    import dataclasses

    from dvbpr import jobs
    from dvbpr.config import PRESETS, TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    at = ok(app("pages/train.py"))
    assert _widget_values(at) == {field: defaults[field] for field in TRAIN_WIDGETS.values()}
    assert at.checkbox(key="tr_in_batch").value is defaults["in_batch"]  # drawn (advanced options)
    assert at.selectbox(key="tr_norm").value == defaults["norm"]

    at.toggle(key="tr_preset").set_value(True).run()
    ok(at)
    paper = PRESETS["paper"]
    assert _widget_values(at) == {field: paper.get(field, defaults[field]) for field in TRAIN_WIDGETS.values()}
    assert at.number_input(key="tr_lr").value == paper["lr"]

    started = []
    monkeypatch.setattr(jobs, "start_training", lambda cfg, resume=False: started.append(cfg) or 4242)
    _train_form(at, tr_name="paper-run")
    assert not errors(at)
    assert any("Started" in s.value for s in at.success)
    (cfg,) = started
    assert {k: getattr(cfg, k) for k in paper} == paper
    assert cfg.epochs == defaults["epochs"] and cfg.dim == defaults["dim"]

    at.toggle(key="tr_preset").set_value(False).run()  # back to the defaults
    ok(at)
    assert _widget_values(at) == {field: defaults[field] for field in TRAIN_WIDGETS.values()}


def test_train_form_rejects_a_bad_run_name():
    at = ok(app("pages/train.py"))
    _train_form(at, tr_name="bad name/..")
    assert "invalid run name" in errors(at)


def test_train_form_rejects_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    at = ok(app("pages/train.py"))
    assert any("no CUDA GPU" in c.value for c in at.caption)
    _train_form(at, tr_name="gpu-run", tr_device="cuda")
    assert "CUDA" in errors(at)


def test_train_refuses_a_busy_run(roots):
    busy = roots["models"] / "busy"
    busy.mkdir(exist_ok=True)
    with open(busy / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running job holds it
        at = ok(app("pages/train.py"))
        _train_form(at, tr_name="busy")
    assert "already running" in errors(at)


def test_train_runs_table_live_view_and_activation():
    at = ok(app("pages/train.py"))
    table = at.dataframe[0].value
    assert {"default", "fresh", "broken"} <= set(table["run"])
    at.selectbox(key="tr_follow").set_value("broken").run()
    ok(at)
    assert "The run failed: loss became nan" in errors(at)
    assert any("TrainingError" in c.value for c in at.code)  # the log tail
    assert any("hardly a taste" in i.value for i in at.info)  # what train noted before it started
    at.selectbox(key="tr_use_pick").set_value("fresh").run()
    [b for b in at.button if b.label == "Make it the active model"][0].click().run()
    ok(at)
    assert at.session_state["active_model"] == "fresh"


def test_evaluate_shows_model_and_baselines():
    at = ok(app("pages/evaluate.py"))
    assert not errors(at)
    table = at.dataframe[0].value
    assert list(table.index) == ["dvbpr", "popularity", "bpr-mf"]
    assert {"AUC", "R@20", "nDCG@20"} <= set(table.columns)
    # shown as text (5 decimals), a missing value as "n/a": st.dataframe would show "None" for NaN
    cells = table.to_numpy().ravel().tolist()
    assert all(c == "n/a" or re.fullmatch(r"-?\d+\.\d{5}", c) for c in cells), cells
    auc = table["AUC"].astype(float)
    assert np.all((auc >= 0) & (auc <= 1))
    assert len(at.get("plotly_chart")) >= 2


def test_evaluate_shows_missing_values_as_na(monkeypatch):
    """A metric a model lacks (or a NaN, as the cold AUC without cold users) reads "n/a", never
    "None" (what st.dataframe shows for any missing number)."""
    from types import SimpleNamespace

    from ui import loaders

    monkeypatch.setattr(loaders, "baselines_ready", lambda split="test": True)
    monkeypatch.setattr(
        loaders,
        "baselines",
        lambda split="test": {
            "popularity": SimpleNamespace(metrics={"auc": 0.5, "auc_cold": float("nan"), "rr": 0.01})
        },
    )
    at = ok(app("pages/evaluate.py"))
    table = at.dataframe[0].value
    assert list(table.index) == ["dvbpr", "popularity"]
    row = table.loc["popularity"]
    assert row["AUC"] == "0.50000" and row["AUC (cold)"] == "n/a" and row["R@20"] == "n/a"
    assert "n/a" not in set(table.loc["dvbpr"])


def test_evaluate_shows_embedding_health():
    """The "Embedding health" section on the fixture model: participation ratio of K, variance
    shares, neighbour agreement per items.csv column and the hidden-taste lifts (synthetic data)."""
    at = ok(app("pages/evaluate.py"))
    assert "Embedding health" in [s.value for s in at.subheader]
    metrics = {m.label: m.value for m in at.metric}
    pr, of_k = metrics["Participation ratio"].split(" of ")
    assert of_k == "16" and 1 <= float(pr) <= 16
    assert {"Variance in top 1", "Variance in top 5", "Near-duplicate pairs"} <= set(metrics)
    tables = {tuple(d.value.index): d.value for d in at.dataframe}
    agreement = tables[("category", "colour", "pattern")]
    assert list(agreement.columns) == ["neighbour", "chance", "ratio", "linear read-out", "majority", "items"]
    assert set(agreement["items"]) == {"240"}
    lifts = tables[("categories", "colours", "patterns")]
    assert {"lift", "interactions' lift"} <= set(lifts.columns)


def test_evaluate_warns_about_a_collapsed_embedding(monkeypatch):
    from ui import loaders

    report = {
        "items": 240,
        "K": 16,
        "participation_ratio": 2.5,
        "near_duplicate_threshold": 0.99,
        "variance_share": {"1": 0.7, "3": 0.99, "5": 1.0, "10": 1.0},
        "near_duplicate_share": 0.2,
        "sample": 5000,
        "collapsed": True,
        "neighbour_agreement": {},
    }
    monkeypatch.setattr(loaders, "embedding_report", lambda: report)
    at = ok(app("pages/evaluate.py"))
    assert any("looks collapsed" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Participation ratio"] == "2.5 of 16"
    assert not any("Colour in the data" in c.value for c in at.caption)  # a report without it
    faint = {"within_user": 0.372, "random_pairs": 0.362, "excess": 0.016, "users": 80}
    healthy = {**report, "participation_ratio": 12.0, "near_duplicate_share": 0.0, "collapsed": False}
    monkeypatch.setattr(
        loaders, "embedding_report", lambda: {**healthy, "colour_coherence": faint, "colour_stream": True}
    )
    at = ok(app("pages/evaluate.py"))
    assert not any("looks collapsed" in w.value for w in at.warning)
    assert any("similarity 0.372" in c.value and "excess 0.016" in c.value for c in at.caption)
    assert any("hardly a taste" in i.value and "--no-colour-stream" in i.value for i in at.info)
    strong = {**faint, "excess": 0.3}
    monkeypatch.setattr(
        loaders, "embedding_report", lambda: {**healthy, "colour_coherence": strong, "colour_stream": True}
    )
    at = ok(app("pages/evaluate.py"))
    assert not any("hardly a taste" in i.value for i in at.info)


def test_data_page_stats_and_import(roots, tmp_path):
    at = ok(app("pages/data.py"))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Users"] == "80" and metrics["Items"] == "240"
    assert "dv-card" in html(at)  # sample images
    # importing a folder: a bad one is a message, a good one is copied under the data root
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "interactions.csv").write_text("user,item\nu1,i1\n")
    at.text_input(key="imp_src").set_value(str(bad))
    at.text_input(key="imp_name").set_value("bad")
    [b for b in at.button if b.label == "Validate and import"][0].click().run()
    ok(at)
    assert "interactions.csv" in errors(at)
    at.text_input(key="imp_src").set_value(str(roots["dataset"]))
    at.text_input(key="imp_name").set_value("copy")
    [b for b in at.button if b.label == "Validate and import"][0].click().run()
    ok(at)
    assert (roots["data"] / "copy" / "interactions.csv").is_file()
    assert any("Imported" in s.value for s in at.success)
    assert not [p.name for p in roots["data"].iterdir() if p.name.startswith(".")]  # no staging folder left
    shutil.rmtree(roots["data"] / "copy")


# ------------------------------------------------------------------------- error cases
@pytest.mark.parametrize(
    "page", ["pages/recommendations.py", "pages/embeddings.py", "pages/upload.py", "pages/evaluate.py"]
)
def test_missing_model_folder(page):
    at = ok(app(page, model="nope"))
    assert "No model in" in errors(at) and "Train one on the Train page" in errors(at)


def test_missing_dataset():
    at = ok(app(data="nodata"))
    assert "No dataset in" in errors(at)
    at.switch_page("pages/data.py").run()
    ok(at)


def test_failed_run_as_model():
    at = ok(app(model="broken", data="default"))
    assert "failed before writing a checkpoint" in errors(at)
    assert "loss became nan" in errors(at)


def test_error_hints_follow_the_error_class():
    """The hint under an error is chosen by its class; where it proposes training or importing,
    a public-mode hint replaces it (pointing at what a visitor can do: the sidebar)."""
    from dvbpr import errors as dvbpr_errors
    from ui import errors as ui_errors

    changed = dvbpr_errors.DatasetChangedError("the dataset changed since this model was trained")
    assert ui_errors.hint_for(changed)[:2] == (ui_errors.DATASET_CHANGED_HINT, "train")
    device = dvbpr_errors.DeviceUnavailableError("CUDA was requested but no GPU is available here")
    assert ui_errors.hint_for(device) == (ui_errors.DEVICE_HINT, None, None)
    assert ui_errors.hint_for(dvbpr_errors.CheckpointError("no checkpoint in x"))[1:] == ("train", ui_errors.PICK_MODEL)
    assert ui_errors.hint_for(dvbpr_errors.DataError("bad row"))[1:] == ("data", ui_errors.PICK_DATASET)
    assert ui_errors.hint_for(dvbpr_errors.ImageError("not an image")) == ("Use a JPEG, PNG or WebP image.", None, None)
    assert ui_errors.hint_for(dvbpr_errors.TrainingError("loss became nan")) == ("", None, None)
    assert ui_errors.hint_for(dvbpr_errors.JobError("no job")) == ("", None, None)
    for hint, _, public_hint in (h for _, h in ui_errors.HINTS):
        if "Train page" in hint or "import" in hint:
            assert public_hint and "Train" not in public_hint and "import" not in public_hint, hint


def _shown_text(at: AppTest) -> str:
    """Every piece of text a page shows, tables and help texts included."""
    parts = []
    for kind in ("markdown", "caption", "text", "info", "warning", "error", "success", "code", "html"):
        parts += [str(e.value) for e in at.get(kind)]
    parts += [e.value.to_string() for e in at.get("arrow_data_frame")]
    for kind in ("selectbox", "text_input", "number_input", "toggle", "checkbox", "slider"):
        parts += [f"{e.label} {getattr(e, 'help', '') or ''}" for e in at.get(kind)]
    return "\n".join(parts)


@pytest.mark.parametrize("page", [None, "pages/train.py", "pages/data.py"])
def test_no_absolute_machine_path_is_shown(page, roots):
    at = ok(app(page))
    text = _shown_text(at)
    assert text.strip()
    for folder in {str(roots["data"].parent), str(REPO_ROOT)}:
        assert folder not in text, f"{folder} shown on {page or 'the start page'}"


# ---------------------------------------------------------------------- compare runs (issue 15)
def _cmp_tables(at: AppTest) -> dict[tuple, object]:
    return {tuple(d.value.index): d.value for d in at.dataframe}


def test_evaluate_compares_runs_with_bootstrap_intervals(roots):
    """The Compare runs section: the fixture's two runs of the dataset (default and its copy
    fresh) side by side, then with the baselines; every difference is the per-user mean of
    (run - reference), so it equals the difference of the runs' AUCs in the table."""
    from ui import loaders, paths

    at = ok(app("pages/evaluate.py"))
    assert "Compare runs" in [s.value for s in at.subheader]
    assert at.multiselect(key="ev_cmp_runs").value == ["default", "fresh"]  # the active model first
    [b for b in at.button if b.label == "Compare"][0].click().run()
    ok(at)
    tables = _cmp_tables(at)
    metrics, diffs = tables[("default", "fresh")], tables[("fresh",)]
    run, data = roots["models"] / "default", roots["data"] / "default"
    key = (str(run), paths.checkpoint_stamp(paths.checkpoint_path(run)), str(data))
    assert metrics.loc["default", "AUC"] == f"{loaders._ranking(*key, 'test').metrics['auc']:.5f}"
    assert metrics.loc["fresh", "AUC"] == metrics.loc["default", "AUC"]  # a copy: the same model
    assert diffs.loc["fresh", "AUC diff"] in ("+0.0000", "-0.0000")
    assert diffs.loc["fresh", "AUC 95% CI"] in ("[+0.0000, +0.0000]", "[-0.0000, -0.0000]")
    assert diffs.loc["fresh", "AUC: verdict"] == "within noise"
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    boxes = [f for f in figs if {t["type"] for t in f["data"]} == {"box"}]
    assert boxes and [t["name"] for t in boxes[0]["data"]] == ["default", "fresh"]
    curves = [f for f in figs if f["layout"].get("yaxis", {}).get("title", {}).get("text") == "validation AUC"]
    assert curves and [t["name"] for t in curves[0]["data"]] == ["default", "fresh"]

    at.checkbox(key="ev_cmp_baselines").check().run()
    [b for b in at.button if b.label == "Compare"][0].click().run()
    ok(at)
    tables = _cmp_tables(at)
    metrics = tables[("default", "fresh", "popularity", "bpr-mf")]
    diffs = tables[("fresh", "popularity", "bpr-mf")]
    for name in ("popularity", "bpr-mf"):
        gap = float(metrics.loc[name, "AUC"]) - float(metrics.loc["default", "AUC"])
        assert float(diffs.loc[name, "AUC diff"]) == pytest.approx(gap, abs=1.5e-4)
        low, high = (float(v) for v in diffs.loc[name, "AUC 95% CI"].strip("[]").split(","))
        assert low <= float(diffs.loc[name, "AUC diff"]) <= high
        verdict = "within noise" if low <= 0 <= high else ("better" if low > 0 else "worse")
        assert diffs.loc[name, "AUC: verdict"] == verdict


def test_evaluate_compare_needs_two_runs(monkeypatch):
    from ui import paths

    monkeypatch.setattr(paths, "list_models", lambda: ["default"])
    at = ok(app("pages/evaluate.py"))
    assert any("at least two runs" in i.value for i in at.info)
    assert not [b for b in at.button if b.label == "Compare"]


# ------------------------------------------------------ explanations and new items (issue 14)
def _grids(at: AppTest) -> list[str]:
    """The image grids' HTML, in page order (Recommendations: the test item, the history, the top 20)."""
    return [h.value for h in at.get("html") if 'class="dv-grid"' in h.value]


def test_recommendations_overlays_the_explanations():
    def images(at: AppTest) -> list[list[str]]:
        return [re.findall(r'<img src="([^"]+)"', grid) for grid in _grids(at)]

    at = ok(app())
    assert at.toggle(key="rec_explain").value is False
    test_item, history, top = images(at)
    at.toggle(key="rec_explain").set_value(True).run()
    ok(at)
    test_heat, history_after, top_heat = images(at)
    # the test item and every one of the top 20 show the heatmap over their image instead of it;
    # the history stays as it was
    assert len(top_heat) == len(top) == 20 and all(a != b for a, b in zip(top, top_heat))
    assert len(test_heat) == len(test_item) == 1 and test_heat != test_item
    assert history_after == history


@pytest.fixture
def own_roots(roots, tmp_path, monkeypatch) -> dict[str, Path]:
    """A copy of the app's data and models, for a test that changes the catalogue."""
    data, models = tmp_path / "data", tmp_path / "models"
    shutil.copytree(roots["data"], data)
    shutil.copytree(roots["models"], models, ignore=shutil.ignore_patterns(".lock"))
    monkeypatch.setenv("DVBPR_DATA_ROOT", str(data))
    monkeypatch.setenv("DVBPR_MODELS_ROOT", str(models))
    return {"data": data, "models": models, "dataset": data / "default", "run": models / "default"}


def test_upload_explains_for_a_user_and_adds_to_the_catalogue(own_roots):
    from dvbpr.recommender import Recommender

    at = ok(app("pages/upload.py"))
    image = png_bytes((200, 30, 60))
    at.file_uploader(key="up_file").set_value(("dress.png", image, "image/png")).run()
    ok(at)
    assert at.selectbox(key="up_explain_user").value is None  # nothing explained until asked
    user = at.selectbox(key="up_explain_user").options[0]
    at.selectbox(key="up_explain_user").set_value(user).run()
    ok(at)
    assert f'title="dress.png for {user}"' in html(at) and "visual score" in html(at)

    at.text_input(key="up_add_id").set_value("uploaded-dress")
    at.text_input(key="up_add_category").set_value("dress")
    at.text_input(key="up_add_title").set_value("My dress")
    [b for b in at.button if b.label == "Add to catalogue"][0].click().run()
    ok(at)
    assert not errors(at)
    assert any("uploaded-dress" in s.value and "241 items" in s.value for s in at.success)
    assert (own_roots["dataset"] / "images" / "uploaded-dress.png").read_bytes() == image
    assert "uploaded-dress" in html(at)  # now the catalogue item most similar to the upload
    [b for b in at.button if b.label == "Add to catalogue"][0].click().run()  # the same id again
    ok(at)
    assert "already" in errors(at)

    rec = Recommender.from_run(own_roots["run"], device="cpu")
    fans = [u for u in rec.users() if "uploaded-dress" in rec.recommend(u, k=20)[0]]
    assert fans  # served as a cold item to the users who score it above their 20th
    at = ok(app())
    at.selectbox(key="rec_user").set_value(fans[0]).run()
    ok(at)
    assert "uploaded-dress" in _grids(at)[-1]  # the top 20
    at.switch_page("pages/data.py").run()
    ok(at)
    assert {m.label: m.value for m in at.metric}["Items"] == "241"
    at.switch_page("pages/embeddings.py").run()
    ok(at)
    assert not errors(at)
    points = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert sum(_points(t.get("x", [])) for t in points[0]["data"]) == 241  # the new item on the map
