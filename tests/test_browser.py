"""The app end to end in a real browser: `streamlit run app.py` on a free local port, driven by
Debian's chromium through Playwright, as a person uses it.

A module fixture builds, in a temporary folder, the tiny red/blue community dataset of conftest.py
(data/default) and a one-epoch model on it (models/default), and starts that model's embedding
map job (the app's own background job) so the map computes while the server and the browser
start. The app finds them through DVBPR_DATA_ROOT / DVBPR_MODELS_ROOT / DVBPR_DEFAULT_MODEL.
Every page is checked on what is visible, with no error on screen, and saved as a full-page
screenshot under artifacts/screenshots/ (kept out of git).

The server, chromium and the waits (Streamlit idle, nothing stale, every element drawn) are the
harness in benchmarks/browser.py, shared with scripts/screenshots.py and the browser benchmark.
chromium missing is a failure, not a skip: `bash scripts/test.sh` installs it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

from benchmarks import browser as bb

SHOTS = bb.REPO_ROOT / "artifacts" / "screenshots"
RUN = "browser-run"  # the run the Train test starts through the form
SLOW_MS = 240_000  # first loads, the map, training: generous on a shared 2-core machine
STEP_MS = 120_000  # one rerun after a click


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def app_roots(tmp_path_factory, tiny_make_dataset, tiny_train_kwargs) -> dict[str, Path]:
    from dvbpr import embedmap
    from dvbpr.config import TrainConfig
    from dvbpr.train import train

    if not (os.path.isfile(bb.CHROMIUM) and os.access(bb.CHROMIUM, os.X_OK)):
        pytest.fail(bb.MISSING_CHROMIUM, pytrace=False)
    for old in SHOTS.glob("failed-*.png"):  # from an earlier run
        old.unlink()
    base = tmp_path_factory.mktemp("browser")
    data = tiny_make_dataset(base / "data" / "default")
    run = base / "models" / "default"
    status = train(TrainConfig(data=str(data), out=str(run), **dict(tiny_train_kwargs, epochs=1)), progress=False)
    assert status["state"] == "finished", status
    embedmap.start_map_job(run, data)  # what the Embeddings page does; started early to save time
    roots = {"data": base / "data", "models": base / "models", "dataset": data, "run": run}
    yield roots
    # the app's background jobs run in their own sessions: end those still running (by pid)
    from dvbpr import jobs

    for run_dir in roots["models"].iterdir():
        pids = []
        if embedmap.map_status(run_dir).get("state") == "running":
            pids.append(embedmap.map_status(run_dir).get("pid"))
        if jobs.run_state(run_dir) in ("running", "starting"):
            pids.append(jobs.read_status(run_dir).get("pid"))
        for pid in filter(None, pids):
            try:
                os.kill(int(pid), signal.SIGTERM)
            except (ProcessLookupError, PermissionError, ValueError):
                pass


@pytest.fixture(scope="module")
def server(app_roots):
    log = app_roots["data"].parent / "streamlit.log"
    with bb.AppServer(app_roots["data"], app_roots["models"], "default", log_path=log, start_timeout=180) as app:
        yield app


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = bb.launch(p)
        try:
            tab = bb.new_page(browser, timeout_ms=STEP_MS)
            tab.goto(server.page_url())
            tab.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=SLOW_MS)
            bb.wait_idle(tab, SLOW_MS, until_js=bb.heading_js("Recommendations") + bb.RECS_READY_JS)
            yield tab
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def screenshot_on_failure(request):
    """A failed test leaves artifacts/screenshots/failed-<test>.png of what the browser showed."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed and "page" in request.fixturenames:
        try:
            bb.full_screenshot(request.getfixturevalue("page"), SHOTS / f"failed-{request.node.name}.png")
        except Exception:  # noqa: BLE001 - a failure screenshot must not hide the failure
            pass


def no_errors(page, server) -> None:
    errors = bb.errors_shown(page)
    assert not errors, f"errors on screen: {errors}\n--- server log ---\n{server.log_tail()}"


def cards(page, grid):
    return page.locator('[data-testid="stMain"] .dv-grid').nth(grid).locator(".dv-card")


def png(path: Path) -> Path:
    im = Image.new("RGB", (90, 120), "white")
    im.paste((200, 30, 60), (15, 15, 75, 105))
    im.save(path, format="PNG")
    return path


# ---------------------------------------------------------------------------------- pages
def history_shown_js(dataset_dir: Path, user: str) -> str:
    """JS (a function body): the Recommendations page's history grid holds `user`'s training
    items, which only the run for that user can draw (a busy browser may miss the run itself)."""
    from dvbpr.data import load_dataset

    ds = load_dataset(dataset_dir, check_images=False)
    u = ds.users.index(user)
    items = sorted(ds.items.ids[i] for i in ds.train[ds.train[:, 0] == u, 1])
    return f"""
  if (!(() => {{ {bb.RECS_READY_JS} }})()) return false;
  const grids = document.querySelectorAll('[data-testid="stMain"] .dv-grid');
  if (grids.length < 2) return false;
  const ids = Array.from(grids[1].querySelectorAll('.dv-meta'), e => e.innerText.split(' ')[0].trim()).sort();
  return JSON.stringify(ids) === {json.dumps(json.dumps(items, separators=(",", ":")))};
"""


def test_recommendations(page, server, app_roots):
    bb.open_page(page, "Recommendations", STEP_MS, bb.RECS_READY_JS)
    no_errors(page, server)
    users = bb.selectbox_options(page, "rec_user")
    assert len(users) >= 5 and all(re.fullmatch(r"u\d+", u) for u in users), users  # (a virtual list)
    user = "u3"  # a blue user (odd): 7 interactions, 5 of them in training
    assert bb.selectbox_value(page, "rec_user") != user
    bb.select_option(page, "rec_user", user, STEP_MS, history_shown_js(app_roots["dataset"], user))
    bb.wait_idle(page, STEP_MS, until_js=bb.RECS_READY_JS)
    no_errors(page, server)
    assert bb.selectbox_value(page, "rec_user") == user
    text = bb.main_text(page)
    assert "Test item" in text and "Top 20 recommendations" in text

    # grids in page order: the test item (ground truth), the history, the top 20
    test_card = cards(page, 0)
    assert test_card.count() == 1
    assert "dv-hl" in test_card.first.get_attribute("class")
    assert test_card.first.locator(".dv-badge").inner_text() in ("hit", "miss")
    assert re.search(r"rank \d+ of \d+", test_card.first.inner_text())

    history = re.search(r"History · last (\d+) of (\d+)", text)
    assert history, text[:500]
    assert int(history.group(1)) == int(history.group(2)) == 5  # u3's training items, all shown
    assert cards(page, 1).count() == 5

    recs = cards(page, -1)
    assert recs.count() == 20
    badges = recs.locator(".dv-badge").all_inner_texts()
    assert all(b in (f"#{r}", "ground truth") for r, b in enumerate(badges, 1)), badges  # in rank order
    ok_images = page.evaluate("""() => { const g = document.querySelectorAll('[data-testid="stMain"] .dv-grid');
        return Array.from(g[g.length - 1].querySelectorAll('img')).filter(
            i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 50).length; }""")
    assert ok_images == 20
    rec_ids = [re.match(r"i\d+", line).group(0) for line in recs.locator(".dv-meta").all_inner_texts()]
    hist_ids = [line.split(" ")[0] for line in cards(page, 1).locator(".dv-meta").all_inner_texts()]
    assert len(set(rec_ids)) == 20 and not set(rec_ids) & set(hist_ids)  # training items excluded

    # only the users whose test item is a hit: the top 20 then shows it, badged "ground truth"
    since = bb.arm(page)
    bb.widget(page, "rec_only_hits").locator("label").click()
    bb.wait_idle(page, STEP_MS, since=since, until_js=bb.RECS_READY_JS)
    no_errors(page, server)
    assert cards(page, 0).first.locator(".dv-badge").inner_text() == "hit"
    gt = cards(page, -1).filter(has=page.locator(".dv-badge-gt"))
    assert gt.count() == 1 and gt.locator(".dv-badge").inner_text() == "ground truth"
    assert "Yes" in page.locator('[data-testid="stMetric"]').filter(has_text="Hit@20").inner_text()
    bb.full_screenshot(page, SHOTS / "recommendations.png")


def test_embeddings(page, server):
    bb.open_page(page, "Embeddings", STEP_MS)
    no_errors(page, server)
    # the map job may still run (UMAP compiles with numba on its first map): progress, then the map
    progress = page.locator('[data-testid="stMain"] [data-testid="stProgress"]')
    if progress.count():
        assert "Computing the map" in bb.main_text(page)
    bb.wait_idle(page, SLOW_MS, until_js=bb.MAP_READY_JS)
    no_errors(page, server)
    assert "48 items" in bb.main_text(page)
    traces = page.evaluate("""() => Array.from(document.querySelectorAll(
        '[data-testid="stMain"] [data-testid="stPlotlyChart"] .js-plotly-plot')).map(
        p => (p._fullData || []).map(t => [t.type, t.name, t._length]))""")
    assert traces and sum(t[2] or 0 for t in traces[0]) == 48, traces  # one point per item
    legend = page.locator('[data-testid="stMain"] .legendtext').all_text_contents()
    assert {"red", "blue"} <= set(legend), legend  # coloured by category
    bb.full_screenshot(page, SHOTS / "embeddings.png")


def test_upload(page, server, tmp_path):
    bb.open_page(page, "Upload", STEP_MS)
    no_errors(page, server)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(png(tmp_path / "dress.png")))
    bb.wait_idle(
        page,
        STEP_MS,
        until_js=("return document.querySelectorAll('[data-testid=\"stMain\"] .dv-row:not(.dv-head)').length > 0;"),
    )
    no_errors(page, server)
    assert "Users who would rank it highest" in bb.main_text(page)
    rows = page.locator('[data-testid="stMain"] .dv-row:not(.dv-head)')
    assert rows.count() == 10  # the slider's default
    ranked = [row.locator("div").all_inner_texts()[:3] for row in rows.all()]
    assert [int(r[0]) for r in ranked] == list(range(1, 11))
    assert all(re.fullmatch(r"u\d+", r[1]) for r in ranked), ranked
    scores = [float(r[2]) for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert rows.first.locator(".dv-strip img").count() >= 1  # the user's recent history
    assert "dress.png" in bb.main_text(page)  # the uploaded file is listed by the uploader
    bb.full_screenshot(page, SHOTS / "upload.png")


def test_evaluate_and_data(page, server):
    bb.open_page(page, "Evaluate", SLOW_MS, bb.PAGE_READY_JS["Evaluate"])
    bb.wait_idle(
        page,
        SLOW_MS,
        until_js=("return document.querySelector('[data-testid=\"stMain\"]').textContent.includes('bpr-mf');"),
    )
    no_errors(page, server)
    assert "Model and baselines" in bb.main_text(page)
    assert (
        page.locator('[data-testid="stMain"] [data-testid="stMetric"]')
        .filter(has_text="Users evaluated")
        .inner_text()
        .strip()
        .endswith("40")
    )
    bb.full_screenshot(page, SHOTS / "evaluate.png")

    bb.open_page(page, "Data", STEP_MS, bb.PAGE_READY_JS["Data"])
    no_errors(page, server)
    metrics = page.locator('[data-testid="stMain"] [data-testid="stMetric"]')
    assert metrics.filter(has_text="Users").first.inner_text().split()[-1] == "40"
    assert metrics.filter(has_text="Items").first.inner_text().split()[-1] == "48"
    assert page.locator('[data-testid="stMain"] .dv-card').count() == 24  # the catalogue sample
    bb.full_screenshot(page, SHOTS / "data.png")


def test_train_a_run_and_make_it_active(page, server, app_roots):
    bb.open_page(page, "Train", STEP_MS, bb.PAGE_READY_JS["Train"])
    no_errors(page, server)
    form = page.locator('[data-testid="stForm"]').first
    assert "Detected: no CUDA GPU" in form.inner_text() or "CUDA available" in form.inner_text()
    for key, value in (
        ("tr_name", RUN),
        ("tr_epochs", "1"),
        ("tr_size", "32"),
        ("tr_batch", "16"),
        ("tr_dim", "8"),
        ("tr_cfdim", "8"),
    ):
        field = bb.widget(page, key).locator("input")
        field.fill(value)
        field.press("Tab")  # commit the value (Enter would submit the form)
    since = bb.arm(page)
    form.get_by_role("button", name="Start training").click()
    bb.wait_idle(page, SLOW_MS, since=since)
    no_errors(page, server)
    assert f"Started {RUN}" in bb.main_text(page)
    if bb.selectbox_value(page, "tr_follow") != RUN:
        # App race (pages/train.py + dvbpr.jobs): start_training returns once the job holds its
        # lock, which is before the job writes status.json; list_runs skips a folder with neither
        # status nor checkpoint, so the live view can miss the new run in this script run (it
        # then keeps following the previous, finished run, without polling). The next rerun
        # applies it: rerun as a person would (the "R" shortcut).
        since = bb.arm(page)
        page.locator('[data-testid="stMain"] h1').click()
        page.keyboard.press("r")
        bb.wait_idle(page, STEP_MS, since=since)
    assert bb.selectbox_value(page, "tr_follow") == RUN  # the live view follows the new run

    # follow it live: the state badge and the progress bar, until it has finished
    live_js = """() => {
      const run = __RUN__;
      const main = document.querySelector('[data-testid="stMain"]');
      const line = Array.from(main.querySelectorAll('[data-testid="stMarkdownContainer"] p'))
        .find(p => p.querySelector('strong') && p.querySelector('strong').innerText.trim() === run);
      const bar = main.querySelector('[data-testid="stProgress"]');
      return {line: line ? line.innerText : '', bar: bar ? bar.innerText : ''};
    }""".replace("__RUN__", json.dumps(RUN))
    seen, deadline = [], time.time() + SLOW_MS / 1000
    while time.time() < deadline:
        state = page.evaluate(live_js)
        if not seen or state != seen[-1]:
            seen.append(state)
        if "finished" in state["line"]:
            break
        page.wait_for_timeout(300)
    assert any(w in s["line"] for s in seen for w in ("starting", "running")), seen
    assert "finished" in seen[-1]["line"], f"{seen}\n{server.log_tail()}"
    assert re.search(r"step \d+ of \d+", " ".join(s["bar"] for s in seen)), seen
    bb.wait_idle(page, STEP_MS)
    no_errors(page, server)
    assert (app_roots["models"] / RUN / "best.pt").is_file() or (app_roots["models"] / RUN / "last.pt").is_file()

    # make it the active model through the runs table's control; the sidebar then shows it
    assert bb.selectbox_value(page, "_sidebar_model") == "default"
    # Nothing on the page changes with the pick but the box itself; the button's run carries it
    pick_js = (
        f"const i = document.querySelector('.st-key-tr_use_pick input'); return !!i && i.value === {json.dumps(RUN)};"
    )
    bb.select_option(page, "tr_use_pick", RUN, STEP_MS, pick_js)
    bb.widget(page, "tr_use").locator("button").click()
    bb.wait_idle(
        page,
        STEP_MS,
        until_js=(
            "const i = document.querySelector('.st-key-_sidebar_model input');"
            f"return !!i && i.value === {json.dumps(RUN)};"
        ),
    )
    no_errors(page, server)
    assert bb.selectbox_value(page, "_sidebar_model") == RUN
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert "epoch 1/1" in sidebar, sidebar
    assert f"model={RUN}" in page.url
    bb.full_screenshot(page, SHOTS / "train.png")


def test_evaluate_compares_two_runs(page, server, app_roots):
    """The Evaluate page's Compare runs section in the browser: two runs of the dataset (the model
    and a copy of it, plus the Train test's run when it ran first), compared on a click."""
    import shutil

    copy = app_roots["models"] / "default-copy"
    if not copy.exists():
        shutil.copytree(app_roots["run"], copy, ignore=shutil.ignore_patterns("cache", ".lock"))
    bb.open_page(page, "Evaluate", SLOW_MS, bb.PAGE_READY_JS["Evaluate"])
    no_errors(page, server)
    chosen = bb.widget(page, "ev_cmp_runs").inner_text()
    since = bb.arm(page)
    bb.widget(page, "ev_cmp_go").locator("button").click()
    bb.wait_idle(page, SLOW_MS, since=since, until_js="return document.body.innerText.includes('Difference to ');")
    no_errors(page, server)
    text = bb.main_text(page)
    reference = re.search(r"Difference to (\S+), user by user", text).group(1)
    assert reference in chosen
    assert re.search(r"Mean over the 40 test users", text), text[-2000:]
    boxes = page.evaluate("""() => Array.from(document.querySelectorAll(
        '[data-testid="stMain"] [data-testid="stPlotlyChart"] .js-plotly-plot')).map(
        p => (p._fullData || []).filter(t => t.type === 'box').map(t => t.name)).filter(n => n.length)""")
    assert boxes and len(boxes[-1]) == 2 and boxes[-1][0] == reference, boxes
    assert all(name in chosen for name in boxes[-1])
    bb.full_screenshot(page, SHOTS / "evaluate-compare.png")


def test_explanations_and_a_new_item_in_the_catalogue(page, server, app_roots, tmp_path):
    """The heatmap overlay on the top 20; on Upload, a user's heatmap over the image and "Add to
    catalogue": the item is then in the dataset folder and on the Data page (48 + 1 items)."""
    from dvbpr.catalogue import remove_item

    bb.open_page(page, "Recommendations", STEP_MS, bb.RECS_READY_JS)
    no_errors(page, server)
    last_grid_sources = """() => { const g = document.querySelectorAll('[data-testid="stMain"] .dv-grid');
        return Array.from(g[g.length - 1].querySelectorAll('img')).map(i => i.getAttribute('src')); }"""
    plain = page.evaluate(last_grid_sources)
    since = bb.arm(page)
    bb.widget(page, "rec_explain").locator("label").click()
    bb.wait_idle(page, STEP_MS, since=since, until_js=bb.RECS_READY_JS)
    no_errors(page, server)
    heat = page.evaluate(last_grid_sources)
    assert len(heat) == len(plain) == 20 and not set(heat) & set(plain)  # every card now shows its heatmap
    drawn = page.evaluate("""() => Array.from(Array.from(document.querySelectorAll(
        '[data-testid="stMain"] .dv-grid')).pop().querySelectorAll('img')).filter(
        i => i.complete && i.naturalWidth > 0).length""")
    assert drawn == 20
    bb.full_screenshot(page, SHOTS / "explanations.png")

    bb.open_page(page, "Upload", STEP_MS)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(png(tmp_path / "new.png")))
    bb.wait_idle(
        page,
        STEP_MS,
        until_js="return document.querySelectorAll('[data-testid=\"stMain\"] .dv-row:not(.dv-head)').length > 0;",
    )
    no_errors(page, server)
    user = page.locator('[data-testid="stMain"] .dv-row:not(.dv-head)').first.locator("div").nth(1).inner_text()
    heatmap = f'[data-testid="stMain"] .dv-card[title="new.png for {user.strip()}"]'
    bb.select_option(
        page, "up_explain_user", user.strip(), STEP_MS, f"return !!document.querySelector({json.dumps(heatmap)});"
    )
    no_errors(page, server)
    overlay = page.locator(heatmap)
    assert overlay.count() == 1 and "visual score" in overlay.inner_text()

    field = bb.widget(page, "up_add_id").locator("input")
    field.fill("browser-item")
    field.press("Tab")
    page.get_by_role("button", name="Add to catalogue").click()
    try:  # the run that adds it reruns the page, which then says so
        bb.wait_idle(
            page,
            STEP_MS,
            until_js="return document.querySelector('[data-testid=\"stMain\"]').textContent"
            ".includes('Added browser-item');",
        )
        no_errors(page, server)
        assert "49 items" in page.locator('[data-testid="stSidebar"]').inner_text()
        assert (app_roots["dataset"] / "images" / "browser-item.png").is_file()
        bb.open_page(page, "Data", STEP_MS, bb.PAGE_READY_JS["Data"])
        no_errors(page, server)
        metrics = page.locator('[data-testid="stMain"] [data-testid="stMetric"]')
        assert metrics.filter(has_text="Items").first.inner_text().split()[-1] == "49"
    finally:
        remove_item(app_roots["dataset"], "browser-item")  # the module's dataset as it was


def test_upload_page_refuses_a_bomb_and_text_and_reads_a_gif(page, server, tmp_path):
    """Issue 13: a decompression bomb and a text file named .png are one-line refusals (no
    traceback); an animated GIF is read (its first frame) and users are ranked; an SVG is refused
    by the uploader."""
    from tests.test_reliability_uploads import write_png_bomb

    text = tmp_path / "notes.png"
    text.write_text("user_id,item_id\nu1,i1\n")
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (60, 60), colour) for colour in ((200, 30, 60), (30, 60, 200))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    bb.open_page(page, "Upload", STEP_MS)
    error_js = "return Array.from(document.querySelectorAll('[data-testid=\"stAlertContentError\"]'))"
    rows_js = "return document.querySelectorAll('[data-testid=\"stMain\"] .dv-row:not(.dv-head)').length > 0;"
    for path, until_js, expected in (
        (write_png_bomb(tmp_path / "bomb.png"), f"{error_js}.some(e => e.textContent.includes('bomb.png'));", "bomb"),
        (text, f"{error_js}.some(e => e.textContent.includes('notes.png'));", "a text file"),
        (gif, rows_js, None),
    ):
        # Remove the previous file first: a file set while the uploader redraws could be lost.
        # Each wait is proven by what the run draws (the empty state, the error naming the file,
        # the ranked rows), not by a counted run: a run this short can start and end within one
        # React render under load, and the browser then never shows the state change.
        delete = page.locator('[data-testid="stFileChipDeleteBtn"] button')
        if delete.count():
            delete.first.click()
            empty_state = (
                'return !document.querySelector(\'[data-testid="stFileChipDeleteBtn"], '
                '[data-testid="stAlertContentError"]\') && document.querySelector('
                "'[data-testid=\"stMain\"]').textContent.includes('Upload an image to see');"
            )
            bb.wait_idle(page, STEP_MS, until_js=empty_state)
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
        bb.wait_idle(page, STEP_MS, until_js=until_js)
        assert page.locator('[data-testid="stException"]').count() == 0
        if expected is None:
            no_errors(page, server)
            assert "Users who would rank it highest" in bb.main_text(page)
        else:
            shown = bb.errors_shown(page)
            assert len(shown) == 1 and path.name in shown[0] and expected in shown[0], shown
    # an SVG is refused by the uploader itself (its file types), in the browser: no script run
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9" height="9"/></svg>')
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(svg))
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stFileUploader\"]').innerText.includes('files are not allowed')"
    )
    assert page.locator('[data-testid="stException"]').count() == 0
