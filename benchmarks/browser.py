"""Browser benchmark of the Streamlit app: `python benchmarks/browser.py [--json]`.

Starts `streamlit run app.py` on a free local port (the default data and model unless
DVBPR_DATA_ROOT / DVBPR_MODELS_ROOT / DVBPR_DEFAULT_MODEL say otherwise) and measures in Debian's
chromium (headless, through Playwright):

- first visit: a fresh server and a fresh tab, from `goto` until the Recommendations page has
  rendered its grids (test item, history, top 20) and Streamlit is idle (model loading included);
- warm page switches: from the click on a sidebar link until the page's own content is rendered and
  Streamlit is idle, each page several times (the Embeddings map and the Evaluate baselines are
  computed once before timing: these rows measure a visit, not a first computation);
- warm user switches on Recommendations: from choosing another user until the new grids are
  rendered and Streamlit is idle.

Prints a table (median and max ms against the goals: 1 s warm, 10 s first visit) or, with
`--json`, rows {"name", "value", "unit", "reference", "ratio"} as benchmarks/run.py does
(`python benchmarks/run.py --only browser` runs it as an optional section).

The first part of this module is the harness shared with tests/test_browser.py and
scripts/screenshots.py: the app server, chromium (/usr/bin/chromium, or $DVBPR_CHROMIUM), and
waiting for Streamlit to be idle. Playwright is imported lazily (the GPU machines have no browser).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if __name__ == "__main__":  # as a script this folder would shadow modules with our file names
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

REPO_ROOT = _HERE.parent
CHROMIUM = os.environ.get("DVBPR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
# slug (screenshot name, URL path) -> title (sidebar link and page heading), in the app's order
PAGES = {
    "recommendations": "Recommendations",
    "embeddings": "Embeddings",
    "upload": "Upload",
    "train": "Train",
    "evaluate": "Evaluate",
    "data": "Data",
}
MISSING_CHROMIUM = (
    f"chromium is not installed at {CHROMIUM}: run `bash scripts/test.sh` (it installs "
    "Debian's chromium and the test requirements), or set DVBPR_CHROMIUM to a "
    "chromium binary (the browser tests use the system's chromium, not one from "
    "`playwright install`)."
)


# =========================================================================== harness: server
def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """`streamlit run app.py` in its own process group on 127.0.0.1:`port`; a context manager
    that waits for /_stcore/health on entry and always stops the server on exit.

    data_root / models_root / default_model set DVBPR_DATA_ROOT, DVBPR_MODELS_ROOT and
    DVBPR_DEFAULT_MODEL for the app (None: inherited from this process). Output goes to
    `log_path` (default a temporary file); `log_tail()` reads it for error messages."""

    def __init__(
        self,
        data_root: str | Path | None = None,
        models_root: str | Path | None = None,
        default_model: str | None = None,
        port: int | None = None,
        log_path: str | Path | None = None,
        extra_env: dict[str, str] | None = None,
        start_timeout: float = 120.0,
    ):
        self.start_timeout = start_timeout  # for `with AppServer(...)`
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
        for var, value in (
            ("DVBPR_DATA_ROOT", data_root),
            ("DVBPR_MODELS_ROOT", models_root),
            ("DVBPR_DEFAULT_MODEL", default_model),
        ):
            if value is not None:
                self.env[var] = str(value)
        self._own_log = log_path is None  # a temporary log: removed on a clean exit
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="dvbpr-app-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self, timeout: float = 120.0) -> AppServer:
        cmd = [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(self.port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited at once (status {self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"streamlit did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 10 s. Background jobs the app
        started (training, maps) run in their own sessions and are not touched."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def page_url(self, slug: str = "", **query: str) -> str:
        path = "" if slug in ("", "recommendations") else slug
        return f"{self.url}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def __enter__(self) -> AppServer:
        return self.start(self.start_timeout)

    def __exit__(self, exc_type, *exc) -> None:
        self.stop()
        if self._own_log and exc_type is None:
            self.log_path.unlink(missing_ok=True)


# ========================================================================== harness: browser
def check_chromium() -> None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise RuntimeError(MISSING_CHROMIUM)


def launch(playwright, extra_args: Sequence[str] = ()):
    """Debian's chromium, headless (never a browser downloaded by `playwright install`), with
    `extra_args` after the usual ones."""
    check_chromium()
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])


def new_page(browser, timeout_ms: float = 60_000):
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    return page


# The app is idle and drawn: the script is not running, no element is stale (left from the
# previous run), no skeleton (an element whose code is still loading) or spinner is shown, and
# every Plotly chart and dataframe has drawn itself.
_IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-stale="true"], [data-testid="stAppSkeleton"], [data-testid="stSkeleton"], '
      + '[data-testid="stSkeletonElement"], [data-testid="stSpinner"]')) return false;
  for (const chart of document.querySelectorAll('[data-testid="stPlotlyChart"]'))
    if (!chart.querySelector('.main-svg')) return false;
  for (const frame of document.querySelectorAll('[data-testid="stDataFrame"]'))
    if (!frame.querySelector('canvas')) return false;
  return true;
}"""

# Counts the script runs the browser sees: stApp's data-test-script-state leaving "notRunning"
# (to "rerunRequested" when a widget changes, "running" when the server reports the run; a
# widget's rerun may show only the first). The observer gets its records in batches, so it walks
# every state in between (each record's oldValue, then the current one): a run that started and
# finished within one batch is still counted.
_ARM_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app) return -1;
  if (!app.__dvObserved) {
    app.__dvObserved = true;
    window.__dvRuns = window.__dvRuns || 0;
    const isIdle = (state) => state === 'notRunning' || state === 'initial';
    const enter = (state) => {
      if (state === app.__dvLast) return;
      if (!isIdle(state)) window.__dvRuns += 1;
      const wasIdle = app.__dvLast === undefined || isIdle(app.__dvLast);
      if (!isIdle(state) && wasIdle) window.__dvBusyStart = performance.now();
      if (isIdle(state)) window.__dvBusyEnd = performance.now();
      app.__dvLast = state;
    };
    new MutationObserver((records) => {
      for (const r of records.slice(1)) enter(r.oldValue);  // the states between the changes
      enter(app.getAttribute('data-test-script-state'));
    }).observe(app, {attributes: true, attributeOldValue: true, attributeFilter: ['data-test-script-state']});
  }
  return window.__dvRuns || 0;
}"""


def busy_ms(page) -> float:
    """How long the last script run kept the app busy, as the browser saw it (from the rerun
    request or the server's "running" to "not running"), in ms; NaN if not seen."""
    return float(
        page.evaluate(
            "() => (window.__dvBusyEnd > window.__dvBusyStart) ? window.__dvBusyEnd - window.__dvBusyStart : NaN"
        )
    )


def arm(page) -> int:
    """Start counting script runs (idempotent); returns the count so far."""
    page.wait_for_selector('[data-testid="stApp"]', state="attached")
    return int(page.evaluate(_ARM_JS))


def wait_idle(page, timeout_ms: float = 60_000, since: int | None = None, until_js: str | None = None) -> None:
    """Wait until Streamlit is idle and drawn, and also: with `since` (a count from `arm`, taken
    before an action) until a script run has started since, with `until_js` (a JS function body
    returning a boolean) until it holds. One of them proves that the action's own run was waited
    for, not the idle moment before it."""
    conditions = {"idle": f"({_IDLE_JS})()"}
    if since is not None:
        conditions["a run since"] = f"(window.__dvRuns || 0) > {int(since)}"
    if until_js:
        conditions["until"] = f"(() => {{ {until_js} }})()"
    try:
        page.wait_for_function(
            "() => " + " && ".join(f"({c})" for c in conditions.values()), timeout=timeout_ms, polling="raf"
        )
    except Exception as exc:
        if type(exc).__name__ != "TimeoutError":
            raise
        raise type(exc)(f"{exc}; {_wait_report(page, conditions)}") from exc


def _wait_report(page, conditions: dict[str, str]) -> str:
    """Which of wait_idle's conditions still failed at its timeout, and what the page showed: a
    timeout in a test or the load script must say what it was waiting for."""
    try:
        held = {name: page.evaluate(f"() => !!({js})") for name, js in conditions.items()}
        state = page.evaluate(
            r"""() => { const app = document.querySelector('[data-testid="stApp"]');
              const main = document.querySelector('[data-testid="stMain"]');
              return {script: app ? app.getAttribute('data-test-script-state') : null,
                      runs: window.__dvRuns || 0,
                      stale: document.querySelectorAll('[data-stale="true"]').length,
                      spinners: document.querySelectorAll('[data-testid="stSpinner"]').length,
                      grids: document.querySelectorAll('[data-testid="stMain"] .dv-grid').length,
                      text: main ? main.innerText.slice(0, 300).replace(/\s+/g, ' ') : ''}; }"""
        )
    except Exception as exc:  # noqa: BLE001 - the report must not hide the timeout itself
        return f"(no report: {type(exc).__name__}: {exc})"
    failing = [name for name, ok in held.items() if not ok] or ["none (it held just after the timeout)"]
    return f"still false: {', '.join(failing)}; page: {json.dumps(state)}"


def main_text(page) -> str:
    return page.locator('[data-testid="stMain"]').inner_text()


def heading(page) -> str:
    loc = page.locator('[data-testid="stMain"] h1')
    return loc.first.inner_text().strip() if loc.count() else ""


def errors_shown(page) -> list[str]:
    """Texts of the error boxes and exceptions on screen (main area and sidebar)."""
    loc = page.locator('[data-testid="stAlertContentError"], [data-testid="stException"]')
    return [t.strip() for t in loc.all_inner_texts()]


def nav_link(page, title: str):
    """The sidebar link of page `title` (its text also holds the icon's ligature name)."""
    return page.locator(f'[data-testid="stSidebarNav"] a[data-testid="stSidebarNavLink"]:has(span[label="{title}"])')


def heading_js(title: str) -> str:
    """JS (function body): the main heading reads `title`."""
    return (
        "const h = document.querySelector('[data-testid=\"stMain\"] h1');"
        f"if (!h || h.innerText.trim() !== {json.dumps(title)}) return false;"
    )


def open_page(page, title: str, timeout_ms: float = 120_000, ready_js: str = "return true;") -> float:
    """Click the sidebar link of `title`; return (the seconds it took) once its heading is shown,
    `ready_js` holds and the app is idle."""
    t0 = time.perf_counter()
    nav_link(page, title).click()  # the new page's heading can only come from the run it starts
    wait_idle(page, timeout_ms, until_js=heading_js(title) + ready_js)
    return time.perf_counter() - t0


def widget(page, key: str):
    """The element of the widget with this `key` (Streamlit gives its container class st-key-KEY)."""
    return page.locator(f".st-key-{re.sub(r'[^a-zA-Z0-9_-]', '-', key)}").first


def select_option(page, key: str, value: str, timeout_ms: float = 120_000, shown_js: str | None = None) -> None:
    """Choose `value` in the selectbox with `key` (type to filter, click the option) and wait for
    the rerun it triggers. `shown_js` (a JS function body) says what the page shows once the
    choice took effect; when it did not hold before the click, seeing it is the proof of the run.
    Without it the run must be seen as a script-state change, which a busy browser can miss: it
    may handle a fast run's "running" and "not running" messages in one render."""
    box = widget(page, key).locator("input")
    since = arm(page)
    already = bool(shown_js) and bool(page.evaluate(f"() => !!(() => {{ {shown_js} }})()"))
    box.click()
    box.fill(value)
    page.get_by_role("option", name=value, exact=True).click()
    wait_idle(page, timeout_ms, since=since if already or not shown_js else None, until_js=shown_js)


def selectbox_options(page, key: str) -> list[str]:
    box = widget(page, key).locator("input")
    box.click()
    options = page.get_by_role("option")
    options.first.wait_for()
    texts = [t.strip() for t in options.all_inner_texts()]
    page.keyboard.press("Escape")
    return texts


def selectbox_value(page, key: str) -> str:
    return widget(page, key).locator("input").input_value()


def full_screenshot(page, path: str | Path, min_height: int = VIEWPORT["height"]) -> Path:
    """Screenshot of the whole page. Streamlit scrolls inside its main block, not the document, so
    the viewport is stretched to the content's height for the shot, then restored."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or VIEWPORT
    height = page.evaluate("""() => Math.max(...['[data-testid="stMain"]', '[data-testid="stMainBlockContainer"]',
        '[data-testid="stAppViewContainer"]'].map(s => { const e = document.querySelector(s);
        return e ? e.scrollHeight : 0; }), document.documentElement.scrollHeight)""")
    page.set_viewport_size({"width": size["width"], "height": max(min_height, int(height) + 8)})
    page.mouse.move(size["width"] // 2, 2)  # off the sidebar and the charts: no hover effects
    try:
        # two animation frames: the layout and the charts settle at the new size
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        page.wait_for_function(f"{_IDLE_JS}", timeout=60_000, polling="raf")
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)
    return path


# JS (function bodies) that hold once a page's own content is rendered, beyond its heading.
RECS_READY_JS = """
  const grids = document.querySelectorAll('[data-testid="stMain"] .dv-grid');
  if (grids.length < 3) return false;
  return Array.from(document.querySelectorAll('[data-testid="stMain"] .dv-grid img')).every(i => i.complete);
"""
MAP_READY_JS = 'return !!document.querySelector(\'[data-testid="stMain"] [data-testid="stPlotlyChart"] .main-svg\');'
PAGE_READY_JS = {
    "Recommendations": RECS_READY_JS,
    "Embeddings": MAP_READY_JS,
    "Upload": 'return !!document.querySelector(\'[data-testid="stMain"] [data-testid="stFileUploader"]\');',
    "Train": 'return !!document.querySelector(\'[data-testid="stMain"] [data-testid="stForm"]\');',
    "Evaluate": 'return !!document.querySelector(\'[data-testid="stMain"] [data-testid="stDataFrame"]\');',
    "Data": "return !!document.querySelector('[data-testid=\"stMain\"] .dv-card');",
}
# the text of the last grid (on Recommendations the top 20: item ids and scores)
LAST_GRID_JS = (
    "() => { const g = document.querySelectorAll('[data-testid=\"stMain\"] .dv-grid');"
    " return g.length ? g[g.length - 1].textContent : ''; }"
)


def warm_up(
    page, timeout_ms: float, log: Callable[[str], None] = print, titles: Iterable[str] = PAGES.values()
) -> None:
    """Open each page once and wait for the work done once per model (the UMAP map, the
    baselines), so that later visits measure visits, not first computations."""
    for title in titles:
        seconds = open_page(page, title, timeout_ms, PAGE_READY_JS[title])
        if title == "Evaluate":  # the model's table first, the baselines' when computed
            wait_idle(
                page,
                timeout_ms,
                until_js="return document.querySelector('[data-testid=\"stMain\"]').textContent.includes('bpr-mf');",
            )
        log(f"warm-up {title}: {seconds:.1f} s")


# ================================================================================ benchmark
def _rows(samples: dict[str, list[float]], first_visit_ms: float, busy: dict[str, list[float]]) -> list:
    from benchmarks.common import Row

    rows = [
        Row(
            "browser_first_visit_ms",
            first_visit_ms,
            "ms",
            10_000,
            note="fresh server and tab until the Recommendations grids are rendered",
        )
    ]
    for name, values in samples.items():
        if values:
            script = [v for v in busy.get(name, []) if v == v]
            note = f"{len(values)} samples" + (
                f"; app busy (script run) {statistics.median(script):,.0f} ms" if script else ""
            )
            rows.append(Row(f"{name}_median_ms", statistics.median(values), "ms", 1000, note=note))
            rows.append(Row(f"{name}_max_ms", max(values), "ms", 1000))
    return rows


def measure(
    repeats: int = 5, users: int = 10, log: Callable[[str], None] = print, slow_timeout_s: float = 900.0
) -> list:
    """Run the benchmark against a fresh server (data and model from the environment, default
    data/default and models/default); returns benchmarks.common Rows."""
    from playwright.sync_api import sync_playwright

    check_chromium()
    samples: dict[str, list[float]] = {f"browser_page_{slug}": [] for slug in PAGES}
    samples["browser_user_switch"] = []
    busy: dict[str, list[float]] = {name: [] for name in samples}  # the script-run part of each
    slow_ms = slow_timeout_s * 1000
    with AppServer() as server, sync_playwright() as p:
        log(f"server answered on {server.url} after {time.perf_counter() - server.started_at:.1f} s")
        browser = launch(p)
        try:
            page = new_page(browser, timeout_ms=slow_ms)
            t0 = time.perf_counter()
            page.goto(server.page_url())
            page.wait_for_selector('[data-testid="stApp"]')
            wait_idle(page, slow_ms, until_js=heading_js("Recommendations") + RECS_READY_JS)
            first = (time.perf_counter() - t0) * 1e3
            log(f"first visit: {first:.0f} ms")
            if errors_shown(page):
                raise RuntimeError(f"the app shows an error: {errors_shown(page)[0]}")

            warm_up(page, slow_ms, log)

            for r in range(repeats):
                for slug, title in PAGES.items():
                    arm(page)
                    seconds = open_page(page, title, 120_000, PAGE_READY_JS[title])
                    samples[f"browser_page_{slug}"].append(seconds * 1e3)
                    busy[f"browser_page_{slug}"].append(busy_ms(page))
                log(
                    f"page switches, round {r + 1}/{repeats}: "
                    + ", ".join(f"{s} {samples[f'browser_page_{s}'][-1]:.0f} ms" for s in PAGES)
                )

            open_page(page, "Recommendations", 120_000, RECS_READY_JS)
            current = selectbox_value(page, "rec_user")
            picks = [u for u in selectbox_options(page, "rec_user") if u != current][:users]
            for user in picks:
                before = page.evaluate(LAST_GRID_JS)
                box = widget(page, "rec_user").locator("input")
                box.click()
                box.fill(user)
                option = page.get_by_role("option", name=user, exact=True)
                option.wait_for()
                arm(page)  # for busy_ms
                t0 = time.perf_counter()
                option.click()
                # a new top 20 proves the run (the script-state change alone can be missed: select_option)
                wait_idle(
                    page,
                    120_000,
                    until_js=(f"if (({LAST_GRID_JS})() === {json.dumps(before)}) return false;" + RECS_READY_JS),
                )
                samples["browser_user_switch"].append((time.perf_counter() - t0) * 1e3)
                busy["browser_user_switch"].append(busy_ms(page))
            log("user switches (ms): " + ", ".join(f"{v:.0f}" for v in samples["browser_user_switch"]))
        finally:
            browser.close()
    return _rows(samples, first, busy)


def section(ctx) -> list:
    """benchmarks/run.py's optional `browser` section (`--only browser`)."""
    reps = 1 if ctx.sizes.name == "smoke" else 3 if ctx.sizes.name == "quick" else 5
    return measure(repeats=reps, users=3 if ctx.sizes.name == "smoke" else 10, log=ctx.log)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import format_table, machine_info

    parser = argparse.ArgumentParser(prog="python benchmarks/browser.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="rounds over all pages for warm page switches (default 5)"
    )
    parser.add_argument(
        "--users",
        type=int,
        default=10,
        help="warm user switches on Recommendations (default 10; at most the users the "
        "picker's list shows at once, about 10)",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = parser.parse_args(argv)
    machine = machine_info()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    log(f"browser benchmark on {machine['cpu']} x{machine['cores']}, load {machine['load_avg']}")
    rows = measure(args.repeats, args.users, log)
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=1))
    else:
        print(
            f"{machine['cpu']} x{machine['cores']} cores; load average {machine['load_avg']} -> "
            f"{machine_info()['load_avg']}"
        )
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
