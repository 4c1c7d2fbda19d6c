"""The app on a public address (issue 13): public mode, names from the address, the upload limit.

Public mode (DVBPR_PUBLIC, or the key in .streamlit/secrets.toml; ui/public.py) hides and refuses
every server-side action a stranger must not trigger; browsing, recommendations, the map,
evaluation and scoring uploads stay. AppTest checks each page both ways, and that a click sent
for a hidden control (what a crafted widget message does) changes nothing, though the same click
in normal mode does act. Names from the address (?data=, ?model=) that are not a plain folder name
give a warning and the defaults. One browser module runs `streamlit run app.py` in public mode.

A module fixture builds, in a temporary folder, the tiny red/blue dataset of conftest.py
(data/default), a one-epoch model on it (models/default) with a stand-in embedding map (random
coordinates where UMAP would cache its map: the pages draw whatever map is cached), a copy of the
model without a map (models/second), and a smaller dataset and a run outside both roots, which
no address may reach.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import shutil
import time
import tomllib
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dvbpr.fsutil import atomic_write_json
from dvbpr.rundir import REPO_ROOT
from tests.apptest import APP, TIMEOUT, errors, ok, open_app, use_roots

PUBLIC = "DVBPR_PUBLIC"
OFF_NOTE = "turned off on this public server"
MAIN_SUMMARY, OUTSIDE_SUMMARY = "40 users · 48 items", "10 users · 20 items"


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def roots(tmp_path_factory, tiny_make_dataset, tiny_train_kwargs) -> dict[str, Path]:
    from dvbpr import embedmap
    from dvbpr.config import TrainConfig
    from dvbpr.train import train

    base = tmp_path_factory.mktemp("public")
    data = tiny_make_dataset(base / "data" / "default")
    run = base / "models" / "default"
    status = train(TrainConfig(data=str(data), out=str(run), **dict(tiny_train_kwargs, epochs=1)), progress=False)
    assert status["state"] == "finished", status
    shutil.copytree(run, base / "models" / "second", ignore=shutil.ignore_patterns("cache", ".lock"))
    coords = np.random.default_rng(0).normal(size=(48, 2)).astype(np.float32)
    embedmap.map_path(run).parent.mkdir(parents=True, exist_ok=True)
    np.savez(embedmap.map_path(run), coords=coords)
    outside = tiny_make_dataset(base / "outside", n_users=10, n_items=20)
    shutil.copytree(run, base / "outside-run", ignore=shutil.ignore_patterns("cache", ".lock"))
    return {"data": base / "data", "models": base / "models", "dataset": data, "run": run, "outside": outside}


@pytest.fixture(autouse=True)
def env(roots, monkeypatch):
    use_roots(monkeypatch, roots)
    monkeypatch.delenv(PUBLIC, raising=False)
    return roots


@pytest.fixture
def public(monkeypatch):
    monkeypatch.setenv(PUBLIC, "1")


def app(page: str | None = None, **query) -> AppTest:
    return ok(open_app(page, **query))


def labels(at: AppTest) -> set[str]:
    return {b.label for b in at.button}


def keys(at: AppTest, kind: str) -> set[str]:
    return {w.key for w in at.get(kind)}


def notes(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def public_banner(at: AppTest) -> bool:
    return any("Public mode" in i.value for i in at.sidebar.info)


def png_bytes() -> bytes:
    im = Image.new("RGB", (90, 120), "white")
    im.paste((200, 30, 60), (15, 15, 75, 105))
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def recorder(monkeypatch, target, name: str) -> list:
    """Replace `target.name` with a stub that records its calls (no job, no file written)."""
    calls: list = []
    monkeypatch.setattr(target, name, lambda *a, **k: calls.append((a, k)) or 1)
    return calls


# ------------------------------------------------------------------------- the mode switch
@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("true", True), ("yes", True), ("0", False), ("false", False), ("", False)]
)
def test_public_mode_from_the_environment(monkeypatch, value, expected):
    from ui import public

    monkeypatch.setenv(PUBLIC, value)
    assert public.public_mode() is expected


def test_public_mode_from_the_secrets_file():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets[PUBLIC] = True
    ok(at.run())
    assert public_banner(at)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets[PUBLIC] = False
    ok(at.run())
    assert not public_banner(at)


def test_a_secrets_file_that_cannot_be_read_means_public(tmp_path):
    from streamlit.testing.v1.util import patch_config_options

    from ui import public

    broken = tmp_path / "secrets.toml"
    broken.write_text("DVBPR_PUBLIC = \n")  # not TOML
    with patch_config_options({"secrets.files": [str(tmp_path / "missing.toml")]}):
        assert public.public_mode() is False
    with patch_config_options({"secrets.files": [str(broken)]}):
        assert public.public_mode() is True


def test_refuse_is_a_message_in_public_mode(public):
    def script() -> None:
        import streamlit as st

        from ui import errors, public

        with errors.guard():
            public.refuse("Starting a training run")
            st.write("acted")

    at = ok(AppTest.from_function(script, default_timeout=TIMEOUT).run())
    assert "Starting a training run is turned off" in errors(at)
    assert not [m for m in at.markdown if m.value == "acted"]


# ------------------------------------------------------------------ each page, both modes
def test_recommendations_and_evaluate_stay(public):
    at = app()
    assert public_banner(at) and not errors(at)
    grids = [h.value for h in at.get("html") if 'class="dv-grid"' in h.value]
    assert len(grids) == 3 and grids[-1].count('class="dv-card') == 20  # test item, history, top 20
    at.switch_page("pages/evaluate.py").run()
    ok(at)
    assert not errors(at)
    assert {m.label for m in at.metric} >= {"Users evaluated"}
    assert "Compare" in labels(at)


@pytest.mark.parametrize("mode", ["public", "normal"])
def test_hints_under_errors_point_at_what_a_visitor_can_do(roots, monkeypatch, mode):
    """A model without a checkpoint: normal mode says to train one on the Train page; public
    mode, where training is turned off, says to pick another model instead."""
    if mode == "public":
        monkeypatch.setenv(PUBLIC, "1")
    empty = roots["models"] / "no-checkpoint"
    empty.mkdir()
    try:
        at = open_app(None, model="no-checkpoint")
        shown = errors(at)
    finally:
        empty.rmdir()
    expected = "Pick another model in the sidebar." if mode == "public" else "Train one on the Train page, or pick"
    assert "No model in" in shown and expected in shown, shown
    assert ("Train" in shown) is (mode == "normal"), shown
    links = [link.proto.page for link in at.get("page_link")]
    assert any("train" in link for link in links) is (mode == "normal"), links


def test_normal_mode_has_no_banner():
    at = app()
    assert not public_banner(at)


def test_data_page(public):
    at = app("pages/data.py")
    assert {m.label: m.value for m in at.metric}["Users"] == "40"  # browsing stays
    assert not {"imp_src", "imp_npy", "imp_csv"} & keys(at, "text_input")
    assert not {"Validate and import", "Import"} & labels(at)
    assert "Importing datasets is " + OFF_NOTE in notes(at)


def test_data_page_normal_mode_imports():
    at = app("pages/data.py")
    assert {"imp_src", "imp_npy", "imp_csv"} <= keys(at, "text_input")
    assert OFF_NOTE not in notes(at)


def test_train_page(public):
    at = app("pages/train.py")
    assert not {"Start training", "Start fine-tuning", "Stop", "Resume", "Continue"} & labels(at)
    assert not {"tr_name", "ft_name"} & keys(at, "text_input")
    assert not at.get("form")
    text = notes(at)
    assert "Starting training runs and fine-tunes is " + OFF_NOTE in text
    assert "Stopping and resuming runs is " + OFF_NOTE in text
    assert {"default", "second"} <= set(at.dataframe[0].value["run"])  # the runs table stays
    assert "Make it the active model" in labels(at)  # a choice for this visitor only (below)


@pytest.mark.parametrize("mode", ["public", "normal"])
def test_a_failed_runs_log_is_shown_only_in_normal_mode(roots, monkeypatch, mode):
    """The log of a failed run names the server's folders and command lines: a visitor sees
    why the run failed (status.json's message), not the log."""
    if mode == "public":
        monkeypatch.setenv(PUBLIC, "1")
    failed = roots["models"] / "failed"
    failed.mkdir()
    try:
        atomic_write_json(failed / "status.json", {"state": "failed", "message": "loss became nan", "epochs": 2})
        (failed / "train.log").write_text(f"$ dvbpr train --data {roots['dataset']}\nTrainingError: loss became nan\n")
        at = app("pages/train.py")
        at.selectbox(key="tr_follow").set_value("failed").run()
        ok(at)
    finally:
        shutil.rmtree(failed)
    assert "The run failed: loss became nan" in errors(at)
    shown = "\n".join(c.value for c in at.code)
    assert (str(roots["dataset"]) in shown) is (mode == "normal"), shown
    assert ("Its log stays on the server" in errors(at)) is (mode == "public")


def test_train_page_normal_mode():
    at = app("pages/train.py")
    assert {"Start training", "Start fine-tuning", "Continue"} <= labels(at)
    assert OFF_NOTE not in notes(at)


def test_make_active_is_this_visitors_choice(public):
    """Making a model active changes this session (and its address), not what others see."""
    at = app("pages/train.py")
    at.selectbox(key="tr_use_pick").set_value("second").run()
    [b for b in at.button if b.label == "Make it the active model"][0].click().run()
    ok(at)
    assert at.session_state["active_model"] == "second" and at.query_params["model"] == "second"
    other = app()
    assert other.session_state["active_model"] == "default"
    assert other.sidebar.selectbox(key="_sidebar_model").value == "default"


def test_upload_scores_but_does_not_add(public):
    at = app("pages/upload.py")
    at.file_uploader(key="up_file").set_value(("dress.png", png_bytes(), "image/png")).run()
    ok(at)
    assert not errors(at)
    assert "dv-row" in "".join(h.value for h in at.get("html"))  # the ranked users
    assert "Add to catalogue" not in labels(at)
    assert not {"up_add_id", "up_add_category", "up_add_title"} & keys(at, "text_input")
    assert "Adding images to the catalogue is " + OFF_NOTE in notes(at)


def test_upload_normal_mode_offers_adding():
    at = app("pages/upload.py")
    at.file_uploader(key="up_file").set_value(("dress.png", png_bytes(), "image/png")).run()
    ok(at)
    assert "Add to catalogue" in labels(at)


def _failed_map(run: Path) -> None:
    from dvbpr import embedmap

    progress = embedmap.map_path(run).with_name(embedmap.map_path(run).name.replace(".npz", ".progress.json"))
    atomic_write_json(progress, {"state": "failed", "message": "UMAP ran out of memory", "pid": None})


@pytest.mark.parametrize("mode", ["public", "normal"])
def test_embeddings_map_stays_a_failed_one_is_not_retried(roots, monkeypatch, mode):
    from dvbpr import embedmap

    if mode == "public":
        monkeypatch.setenv(PUBLIC, "1")
    at = app("pages/embeddings.py")
    assert not errors(at) and at.get("plotly_chart")  # the cached map
    _failed_map(roots["models"] / "second")
    at = app("pages/embeddings.py", model="second")
    assert "UMAP ran out of memory" in errors(at)
    assert ("Compute the map again" in labels(at)) is (mode == "normal")
    assert ("Computing the map again is " + OFF_NOTE in notes(at)) is (mode == "public")
    # a map never computed is started in both modes: one job per checkpoint, shared by everyone
    shutil.rmtree(roots["models"] / "second" / "cache")
    calls = recorder(monkeypatch, embedmap, "start_map_job")
    app("pages/embeddings.py", model="second")
    assert len(calls) == 1


# ------------------------------------------- a click for a hidden control changes nothing
def _click(at: AppTest, label: str, flip_to_public: bool, monkeypatch) -> AppTest:
    """Click `label` in a tree drawn in normal mode; with `flip_to_public` the run that receives
    the click is in public mode, so it carries a trigger for a control that run does not draw."""
    if flip_to_public:
        monkeypatch.setenv(PUBLIC, "1")
    [b for b in at.button if b.label == label][0].click().run()
    return ok(at)


@pytest.mark.parametrize("flip", [False, True], ids=["normal", "crafted"])
def test_start_training(monkeypatch, flip):
    from dvbpr import jobs

    calls = recorder(monkeypatch, jobs, "start_training")
    at = app("pages/train.py")
    at.text_input(key="tr_name").set_value("crafted")
    _click(at, "Start training", flip, monkeypatch)
    assert len(calls) == (0 if flip else 1)


@pytest.mark.parametrize("flip", [False, True], ids=["normal", "crafted"])
def test_fine_tune(monkeypatch, flip):
    from dvbpr import jobs

    calls = recorder(monkeypatch, jobs, "start_training")
    at = app("pages/train.py")
    _click(at, "Start fine-tuning", flip, monkeypatch)
    assert len(calls) == (0 if flip else 1)


@pytest.mark.parametrize("flip", [False, True], ids=["normal", "crafted"])
def test_resume(monkeypatch, flip):
    from dvbpr import jobs

    calls = recorder(monkeypatch, jobs, "start_training")
    at = app("pages/train.py")
    at.selectbox(key="tr_follow").set_value("default").run()
    _click(at, "Continue", flip, monkeypatch)
    assert len(calls) == (0 if flip else 1)


@pytest.mark.parametrize("flip", [False, True], ids=["normal", "crafted"])
def test_stop(roots, monkeypatch, flip):
    from dvbpr import jobs

    busy = roots["models"] / "busy"
    shutil.copytree(roots["run"], busy, ignore=shutil.ignore_patterns("cache", ".lock"), dirs_exist_ok=True)
    atomic_write_json(busy / "status.json", {"state": "running", "pid": os.getpid(), "epoch": 0, "epochs": 1})
    calls = recorder(monkeypatch, jobs, "stop_training")
    try:
        with open(busy / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running job holds it
            at = app("pages/train.py")
            at.selectbox(key="tr_follow").set_value("busy").run()
            _click(at, "Stop", flip, monkeypatch)
            if flip:
                assert "Stopping and resuming runs is " + OFF_NOTE in notes(at)
    finally:
        shutil.rmtree(busy)
    assert len(calls) == (0 if flip else 1)


@pytest.mark.parametrize("flip", [False, True], ids=["normal", "crafted"])
def test_import_a_server_folder(roots, monkeypatch, flip):
    target = roots["data"] / "crafted"
    at = app("pages/data.py")
    at.text_input(key="imp_src").set_value(str(roots["outside"]))
    at.text_input(key="imp_name").set_value("crafted")
    try:
        _click(at, "Validate and import", flip, monkeypatch)
        assert (target / "interactions.csv").is_file() is not flip
    finally:
        shutil.rmtree(target, ignore_errors=True)


@pytest.mark.parametrize("flip", [False, True], ids=["normal", "crafted"])
def test_add_to_catalogue(monkeypatch, flip):
    from dvbpr import catalogue

    calls = recorder(monkeypatch, catalogue, "add_item")
    at = app("pages/upload.py")
    at.file_uploader(key="up_file").set_value(("dress.png", png_bytes(), "image/png")).run()
    at.text_input(key="up_add_id").set_value("crafted")
    _click(at, "Add to catalogue", flip, monkeypatch)
    assert len(calls) == (0 if flip else 1)


@pytest.mark.parametrize("flip", [False, True], ids=["normal", "crafted"])
def test_retry_a_failed_map(roots, monkeypatch, flip):
    from dvbpr import embedmap

    _failed_map(roots["models"] / "second")
    calls = recorder(monkeypatch, embedmap, "start_map_job")
    at = app("pages/embeddings.py", model="second")
    _click(at, "Compute the map again", flip, monkeypatch)
    assert len(calls) == (0 if flip else 1)
    shutil.rmtree(roots["models"] / "second" / "cache")


# ------------------------------------------------------------------------ names as paths
BAD_DATA = ["../x", "/etc", "..", "default/../..", "%2e%2e%2fx", "default\n", "", "a" * 101]


@pytest.mark.parametrize("value", BAD_DATA + ["OUTSIDE"], ids=repr)
def test_bad_dataset_in_the_address(roots, value):
    values = [str(roots["outside"]), "../outside"] if value == "OUTSIDE" else [value]
    for v in values:
        at = app(data=v)
        warning = " ".join(w.value for w in at.sidebar.warning)
        assert "Ignored an invalid name in the address" in warning and repr(v) in warning
        assert at.session_state["active_data"] == "default"
        assert at.query_params["data"] == "default"
        captions = " ".join(c.value for c in at.sidebar.caption)
        assert MAIN_SUMMARY in captions and OUTSIDE_SUMMARY not in captions


@pytest.mark.parametrize("value", ["../../etc", "/etc/passwd", "../outside-run", "OUTSIDE"], ids=repr)
def test_bad_model_in_the_address(roots, value):
    value = str(roots["outside"].parent / "outside-run") if value == "OUTSIDE" else value
    at = app(model=value)
    assert any("Ignored an invalid name" in w.value and repr(value) in w.value for w in at.sidebar.warning)
    assert at.session_state["active_model"] == "default" and at.query_params["model"] == "default"


@pytest.mark.parametrize(
    ("page", "field", "button"),
    [
        ("pages/train.py", "tr_name", "Start training"),
        ("pages/data.py", "imp_name", "Validate and import"),
        ("pages/upload.py", "up_add_id", "Add to catalogue"),
    ],
)
def test_names_from_forms_are_validated(roots, monkeypatch, page, field, button):
    """Normal mode: a name with a path in it is refused with a message; nothing is written."""
    from dvbpr import jobs

    calls = recorder(monkeypatch, jobs, "start_training")
    base = roots["data"].parent

    def files() -> list[Path]:  # caches (the model's, the images') left out
        return sorted(p for p in base.rglob("*") if not {"cache", ".cache"} & set(p.parts))

    before = files()
    for name in ("../escaped", str(base / "escaped"), "a/../../escaped"):
        at = app(page)
        if page == "pages/upload.py":
            at.file_uploader(key="up_file").set_value(("dress.png", png_bytes(), "image/png")).run()
        if page == "pages/data.py":
            at.text_input(key="imp_src").set_value(str(roots["dataset"]))
        at.text_input(key=field).set_value(name)
        [b for b in at.button if b.label == button][0].click().run()
        ok(at)
        assert "invalid" in errors(at), (name, errors(at))
    assert not calls
    assert files() == before


def test_upload_limit_matches_the_server_setting():
    """The Upload page states the limit that .streamlit/config.toml sets (server.maxUploadSize)."""
    limit = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    at = app("pages/upload.py")
    label = at.get("file_uploader")[0].label
    stated = re.search(r"up to (\d+) ?MB", label)
    assert stated and int(stated.group(1)) == limit, (label, limit)


# =================================================================== in a browser, public
@pytest.fixture(scope="module")
def public_server(roots):
    from benchmarks import browser as bb

    if not (os.path.isfile(bb.CHROMIUM) and os.access(bb.CHROMIUM, os.X_OK)):
        pytest.fail(bb.MISSING_CHROMIUM, pytrace=False)
    with bb.AppServer(
        roots["data"],
        roots["models"],
        "default",
        log_path=roots["data"].parent / "streamlit-public.log",
        extra_env={PUBLIC: "1"},
        start_timeout=180,
    ) as app:
        yield app


@pytest.fixture(scope="module")
def tab(public_server):
    from playwright.sync_api import sync_playwright

    from benchmarks import browser as bb

    with sync_playwright() as p:
        browser = bb.launch(p)
        try:
            yield bb.new_page(browser, timeout_ms=120_000)
        finally:
            browser.close()


def _visit(tab, server, title: str, ready_js: str = "return true;") -> str:
    """Open page `title` through the sidebar (the same session); its text, once drawn."""
    from benchmarks import browser as bb

    bb.open_page(tab, title, 120_000, ready_js)
    shown = bb.errors_shown(tab)
    assert not shown, f"errors on screen: {shown}\n{server.log_tail()}"
    return bb.main_text(tab)


def _buttons(tab, *labels: str) -> list[str]:
    """Those of `labels` that some button of the main area shows."""
    texts = tab.locator('[data-testid="stMain"] button').all_inner_texts()
    return [label for label in labels if any(label in t for t in texts)]


def test_browser_public_mode_both_halves(tab, public_server, tmp_path):
    from benchmarks import browser as bb

    t0 = time.perf_counter()
    tab.goto(public_server.page_url())
    tab.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=180_000)
    bb.wait_idle(tab, 180_000, until_js=bb.heading_js("Recommendations") + bb.RECS_READY_JS)
    assert tab.locator('[data-testid="stMain"] .dv-grid').nth(-1).locator(".dv-card").count() == 20
    assert "Public mode" in tab.locator('[data-testid="stSidebar"]').inner_text()

    _visit(tab, public_server, "Embeddings", bb.MAP_READY_JS)  # the (stand-in) map is drawn

    _visit(tab, public_server, "Upload", bb.PAGE_READY_JS["Upload"])
    dropzone = tab.locator('[data-testid="stFileUploader"]').inner_text()
    stated, served = re.search(r"up to (\d+) ?MB", dropzone), re.search(r"(\d+) ?MB per file", dropzone)
    assert stated and served and stated.group(1) == served.group(1), dropzone  # label == server setting
    im = tmp_path / "dress.png"
    im.write_bytes(png_bytes())
    since = bb.arm(tab)
    tab.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(im))
    rows = "return document.querySelectorAll('[data-testid=\"stMain\"] .dv-row:not(.dv-head)').length > 0;"
    bb.wait_idle(tab, 120_000, since=since, until_js=rows)
    assert tab.locator('[data-testid="stMain"] .dv-row:not(.dv-head)').count() == 10  # users ranked
    assert not _buttons(tab, "Add to catalogue")
    assert "Adding images to the catalogue is " + OFF_NOTE in bb.main_text(tab)

    dataframe = 'return !!document.querySelector(\'[data-testid="stMain"] [data-testid="stDataFrame"]\');'
    text = _visit(tab, public_server, "Train", dataframe)
    assert not tab.locator('[data-testid="stMain"] [data-testid="stForm"]').count()
    assert not _buttons(tab, "Start training", "Start fine-tuning", "Stop", "Resume", "Continue")
    assert _buttons(tab, "Make it the active model")  # this visitor's own choice
    assert "Starting training runs and fine-tunes is " + OFF_NOTE in text

    text = _visit(tab, public_server, "Data", bb.PAGE_READY_JS["Data"])
    assert not tab.locator('[data-testid="stMain"] [data-testid="stTextInput"]').count()
    assert not _buttons(tab, "Validate and import", "Import")
    assert "Importing datasets is " + OFF_NOTE in text
    assert time.perf_counter() - t0 < 120  # about 15 s here; generous for a busy machine


def test_browser_bad_names_in_the_address(tab, public_server, roots):
    from benchmarks import browser as bb

    outside = str(roots["outside"])
    outside_run = str(roots["outside"].parent / "outside-run")
    raw_queries = [  # as typed in the address bar: encoded, absolute, double-encoded
        "data=%2E%2E%2Foutside&model=..%2F..%2Fetc",
        f"data={urllib.parse.quote(outside, safe='')}&model={urllib.parse.quote(outside_run, safe='')}",
        "data=%252e%252e%252foutside&model=..%252f..%252fetc",
    ]
    for raw in raw_queries:
        tab.goto(f"{public_server.url}/upload?{raw}")  # the lightest page that loads the model
        bb.wait_idle(tab, 120_000, until_js=bb.heading_js("Upload") + bb.PAGE_READY_JS["Upload"])
        sidebar = tab.locator('[data-testid="stSidebar"]').inner_text()
        warning = tab.locator('[data-testid="stSidebar"] [data-testid="stAlertContentWarning"]').inner_text()
        assert "Ignored an invalid name in the address" in warning, (raw, sidebar)
        assert "model '" in warning and "dataset '" in warning, warning  # both names refused
        assert MAIN_SUMMARY in sidebar and OUTSIDE_SUMMARY not in sidebar, (raw, sidebar)
        assert bb.selectbox_value(tab, "_sidebar_data") == "default"
        assert bb.selectbox_value(tab, "_sidebar_model") == "default"
        assert "data=default" in tab.url and "model=default" in tab.url  # the address set right
        assert not bb.errors_shown(tab), bb.errors_shown(tab)
