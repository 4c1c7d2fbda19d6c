"""Many users at once: `python benchmarks/load.py [--sessions 8] [--seconds 60] [--json]`.

Starts one app server (benchmarks/browser.py's AppServer, on the default data and model unless
--data-root / --models-root / --model say otherwise) and, unless --no-warm-up, opens every page
once (the work done once per model is then not timed). Then N Streamlit sessions at once: one
headless chromium with N browser contexts, each its own session, each driven from its own thread
(Playwright's sync API is per thread: the threads connect to the one chromium over its DevTools
port). Each session opens the app; when all have, each runs rounds for --seconds (finishing the
round under way):

- user: the next of its own users on Recommendations (no two sessions share a user);
- page: another page (Embeddings, Data, Evaluate, Train by default, in a random order), then
  Recommendations again, which must show the session's last user;
- upload: an image of its own on Upload (every session's differ), then the heatmap of it for the
  first listed user ("explain").

After every action it checks that no error is on screen and that the page shows this session's
own state: its user in the picker, that user's history count and exact top 20 (from a Recommender
loaded here), its upload's users with their scores (theta_u . phi of its image + the mean item
bias) and its file name in the heatmap, and no other session's file name. Anything else is an
isolation violation; a failed action (a timeout) is an error, as are error boxes and tracebacks
in the server's log. It records the time from each action to the updated page (Streamlit idle,
the page's content drawn) and prints, per kind of action and for all but the first visits:
actions, errors, isolation violations, p50, p95, max. Exit status 1 on any error or violation.
`--json` prints the summary as JSON; `python benchmarks/run.py --only load` runs it as an
optional section (rows as the other sections').
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if __name__ == "__main__":  # as a script this folder would shadow modules with our file names
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from benchmarks import browser as bb  # noqa: E402

OTHER_PAGES = ("Embeddings", "Data", "Evaluate", "Train")
KINDS = ("first visit", "user", "page", "upload", "explain")
UPLOAD_ROWS_JS = "return document.querySelectorAll('[data-testid=\"stMain\"] .dv-row:not(.dv-head)').length > 0;"
UPLOAD_NAME = re.compile(r"load-s(\d+)-\d+\.png")


def upload_image(session: int, n: int) -> tuple[bytes, str]:
    """Session `session`'s n-th upload: a PNG of its own (colour, shape and size from both
    numbers, so no two sessions send the same image) and a file name that says whose it is."""
    rng = random.Random(session * 10_007 + n)
    colour = tuple(rng.randrange(256) for _ in range(3))
    im = Image.new("RGB", (96 + 8 * session, 128), "white")
    draw = ImageDraw.Draw(im)
    box = (rng.randrange(8, 30), rng.randrange(8, 30), rng.randrange(60, 90), rng.randrange(90, 120))
    (draw.ellipse if (session + n) % 2 else draw.rectangle)(box, fill=colour)
    buffer = io.BytesIO()
    im.save(buffer, "PNG")
    return buffer.getvalue(), f"load-s{session}-{n}.png"


# ----------------------------------------------------------------------------- expectations
class Expected:
    """What each page must show, from a Recommender of the same run and dataset as the app's.
    Shared by the session threads (the Recommender is safe under concurrent calls)."""

    def __init__(self, model: str):
        from dvbpr.recommender import Recommender
        from ui import paths

        run = paths.run_dir(model)
        data = paths.dataset_dir(paths.run_dataset_name(run) or paths.DEFAULT_DATASET)
        self.rec = Recommender.from_run(run, data=data, device="cpu")
        self.users = self.rec.users()

    def recommendations(self, page, user: str) -> list[str]:
        """Problems of the Recommendations page against `user`'s own (empty: all is well)."""
        problems = []
        shown = bb.selectbox_value(page, "rec_user")
        if shown != user:
            return [f"the user picker shows {shown!r}, not {user!r}"]
        history = re.search(r"History · last \d+ of (\d+)", bb.main_text(page))
        if not history or int(history.group(1)) != len(self.rec.user_history(user)):
            problems.append(f"the history of {user} is not {len(self.rec.user_history(user))} items")
        metas = page.locator('[data-testid="stMain"] .dv-grid').last.locator(".dv-meta").all_inner_texts()
        top = [m.split(" · ")[0].strip() for m in metas]
        if top != self.rec.recommend(user, k=20)[0]:
            problems.append(f"the top 20 shown is not {user}'s")
        return problems

    def recommendations_js(self, user: str) -> str:
        """JS (a function body) that holds once the Recommendations page shows `user`'s top 20
        and history count, its images loaded."""
        top = self.rec.recommend(user, k=20)[0]
        history = f" of {len(self.rec.user_history(user))}"
        return f"""
  if (!(() => {{ {bb.RECS_READY_JS} }})()) return false;
  const m = document.querySelector('[data-testid="stMain"]').innerText.match(/History · last \\d+( of \\d+)/);
  if (!m || m[1] !== {json.dumps(history)}) return false;
  const grids = document.querySelectorAll('[data-testid="stMain"] .dv-grid');
  const top = Array.from(grids[grids.length - 1].querySelectorAll('.dv-meta'), e => e.innerText.split(' · ')[0].trim());
  return JSON.stringify(top) === {json.dumps(json.dumps(top, separators=(",", ":")))};
"""

    def upload(self, page, raw: bytes, name: str) -> tuple[list[str], str]:
        """(problems of the Upload page against this image, the first listed user)."""
        scores = self.rec.user_scores_for_image(raw, name)
        rows = page.locator('[data-testid="stMain"] .dv-row:not(.dv-head)')
        listed = [row.locator("div").all_inner_texts()[:3] for row in rows.all()]
        if not listed:
            return [f"no users listed for {name}"], ""
        problems = []
        for _, user, score in listed:
            user = user.strip()
            expected = scores[self.rec.dataset.users.index(user)] if user in self.rec.dataset.users else None
            if expected is None or abs(float(score) - expected) > 6e-4:  # shown with 3 decimals
                problems.append(f"{user} is listed with {score}, not its score {expected} of {name}")
                break
        if float(listed[0][2]) < float(np.max(scores)) - 1e-3:
            problems.append(f"the first listed user is not the one who ranks {name} highest")
        return problems, listed[0][1].strip()


# --------------------------------------------------------------------------------- sessions
@dataclass
class Session:
    index: int
    samples: list[tuple[str, float]] = field(default_factory=list)  # (kind, seconds)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    violations: list[tuple[str, str]] = field(default_factory=list)


def _foreign_uploads(page, session: int) -> list[str]:
    """File names of other sessions' uploads anywhere on the page."""
    text = bb.main_text(page) + " ".join(
        page.locator('[data-testid="stMain"] [title]').evaluate_all("els => els.map(e => e.title)")
    )
    return sorted({m.group(0) for m in UPLOAD_NAME.finditer(text) if int(m.group(1)) != session})


def run_session(
    s: Session,
    cdp_url: str,
    server: bb.AppServer,
    expected: Expected,
    sessions: int,
    pages: tuple[str, ...],
    start: threading.Barrier,
    seconds: float,
    timeout_ms: float,
    log: Callable[[str], None],
) -> None:
    """One session, in its own thread and browser context, recording into `s`: it opens the app,
    waits for every other session to have done so (`start`), then runs rounds (a user, a page and
    back, an upload and its heatmap; session i starts at step i mod 4) for `seconds`, finishing
    the round under way."""
    from playwright.sync_api import sync_playwright

    mine = expected.users[s.index :: sessions]  # no other session picks these users
    rng = random.Random(s.index)
    rng.shuffle(mine)
    state = {"kind": "first visit", "user": None, "picks": 0, "uploads": 0}

    def timed(kind: str, action: Callable[[], None]) -> None:
        state["kind"] = kind
        t0 = time.perf_counter()
        action()
        s.samples.append((kind, time.perf_counter() - t0))
        shown = bb.errors_shown(page)
        if shown:
            s.errors.append((kind, f"on screen: {shown[0][:200]}"))
            log(f"session {s.index}: error on screen after {kind}: {shown[0][:200]}")

    def violation(kind: str, problems: list[str]) -> None:
        s.violations += [(kind, p) for p in problems]
        for p in problems:
            log(f"session {s.index}: isolation violation ({kind}): {p}")

    def first_visit() -> None:
        page.goto(server.page_url())
        page.wait_for_selector('[data-testid="stApp"]')
        bb.wait_idle(page, timeout_ms, until_js=bb.heading_js("Recommendations") + bb.RECS_READY_JS)

    def open_page(title: str) -> None:
        if bb.heading(page) != title:
            timed("page", lambda: bb.open_page(page, title, timeout_ms, bb.PAGE_READY_JS[title]))
            if title == "Recommendations" and state["user"]:  # the page restores this session's user
                violation("page", expected.recommendations(page, state["user"]))

    def switch_user() -> None:
        open_page("Recommendations")
        user = mine[state["picks"] % len(mine)]
        state["picks"] += 1
        if user == bb.selectbox_value(page, "rec_user"):  # shown already: the next one
            user = mine[state["picks"] % len(mine)]

        def pick() -> None:
            before = bb.selectbox_value(page, "rec_user")
            try:
                bb.select_option(page, "rec_user", user, timeout_ms, expected.recommendations_js(user))
            except Exception as exc:
                now = bb.selectbox_value(page, "rec_user")
                raise type(exc)(f"picking {user} (the picker showed {before!r}, now {now!r}): {exc}") from exc

        timed("user", pick)
        state["user"] = user
        violation("user", expected.recommendations(page, user))

    def other_page() -> None:
        if pages:
            open_page(rng.choice([p for p in pages if p != bb.heading(page)] or list(pages)))

    def back_to_user() -> None:
        open_page("Recommendations")  # must show this session's user again

    def upload_and_explain() -> None:
        open_page("Upload")
        raw, name = upload_image(s.index, state["uploads"])
        state["uploads"] += 1

        def send() -> None:
            since = bb.arm(page)
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                {"name": name, "mimeType": "image/png", "buffer": raw}
            )
            bb.wait_idle(page, timeout_ms, since=since, until_js=UPLOAD_ROWS_JS)

        timed("upload", send)
        problems, first = expected.upload(page, raw, name)
        violation("upload", problems + [f"shows {n}" for n in _foreign_uploads(page, s.index)])
        if not first:
            return
        card = f'[data-testid="stMain"] .dv-card[title={json.dumps(f"{name} for {first}")}]'
        heatmap_js = f"return !!document.querySelector({json.dumps(card)});"
        timed("explain", lambda: bb.select_option(page, "up_explain_user", first, timeout_ms, heatmap_js))
        problems = [] if page.locator(card).count() else [f"no heatmap of {name} for {first}"]
        violation("explain", problems + [f"shows {n}" for n in _foreign_uploads(page, s.index)])

    def attempt(action: Callable[[], None]) -> bool:
        """Run an action; a failure (a timeout, a missing element) is counted, and the session
        starts again on a fresh page. False when even that fails."""
        try:
            action()
            return True
        except Exception as exc:  # noqa: BLE001 - counted and reported
            message = (str(exc).strip().splitlines() or [""])[0][:1000]  # wait_idle says what it waited for
            s.errors.append((state["kind"], f"{type(exc).__name__}: {message}"))
            log(f"session {s.index}: {state['kind']} failed: {type(exc).__name__}: {message}")
        try:
            first_visit()
            state["user"] = None  # a new Streamlit session: nothing to restore
            return True
        except Exception:  # noqa: BLE001
            log(f"session {s.index}: cannot recover, stopping:\n{traceback.format_exc(limit=2)}")
            return False

    try:
        with sync_playwright() as p:
            browser = p.chromium.connect_over_cdp(cdp_url)
            page = bb.new_page(browser, timeout_ms)  # a context of its own: its own Streamlit session
            try:
                ok = attempt(lambda: timed("first visit", first_visit))
                start.wait()  # every session has opened the app
                deadline = time.perf_counter() + seconds
                # each session starts its rounds at another step: not all the same action at once
                steps = [switch_user, other_page, back_to_user, upload_and_explain]
                steps = steps[s.index % len(steps) :] + steps[: s.index % len(steps)]
                while ok and time.perf_counter() < deadline:  # a round is finished past the deadline
                    ok = all(attempt(step) for step in steps)
            finally:
                page.context.close()
    except BaseException:
        start.abort()  # the other sessions and the main thread must not wait for this one
        raise


# ------------------------------------------------------------------------------------ run
def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure(
    sessions: int = 8,
    seconds: float = 60.0,
    model: str | None = None,
    pages: tuple[str, ...] = OTHER_PAGES,
    timeout_s: float = 180.0,
    warm_up: bool = True,
    warm_timeout_s: float = 900.0,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the load against a fresh app server (roots from the environment); returns the
    summary (see `summary`) with every error and violation message. `warm_up`: open every page
    once first, so that the work done once per model (the evaluation, the baselines, the map) is
    not timed; without it the sessions race to do it (a check, not a measurement)."""
    from playwright.sync_api import sync_playwright

    from ui import paths

    bb.check_chromium()
    model = model or paths.default_model()
    t0 = time.perf_counter()
    expected = Expected(model)
    log(f"expectations from {model}: {len(expected.users):,} users ({time.perf_counter() - t0:.1f} s)")
    runs = [Session(i) for i in range(sessions)]
    with bb.AppServer(default_model=model) as server, sync_playwright() as p:
        port = bb.free_port()
        browser = bb.launch(p, [f"--remote-debugging-port={port}"])
        try:
            t0 = time.perf_counter()
            if warm_up:
                warm = bb.new_page(browser, warm_timeout_s * 1000)
                warm.goto(server.page_url())
                warm.wait_for_selector('[data-testid="stApp"]')
                bb.wait_idle(warm, warm_timeout_s * 1000, until_js=bb.heading_js("Recommendations") + bb.RECS_READY_JS)
                bb.warm_up(warm, warm_timeout_s * 1000, log, ("Upload", *pages))
                warm.context.close()
            warm_s = time.perf_counter() - t0
            log(f"warm-up: {warm_s:.1f} s; {sessions} sessions for {seconds:.0f} s")

            start = threading.Barrier(sessions + 1)
            threads = [
                threading.Thread(
                    target=run_session,
                    args=(s, f"http://127.0.0.1:{port}", server, expected, sessions, pages, start, seconds),
                    kwargs={"timeout_ms": timeout_s * 1000, "log": log},
                    name=f"session-{s.index}",
                )
                for s in runs
            ]
            for t in threads:
                t.start()
            start.wait(timeout=2 * timeout_s + 60)  # every session has opened the app
            began, cpu_began = time.perf_counter(), _cpu_by_part(server, port)
            for t in threads:  # a round is 4 or 5 actions, each within timeout_s
                t.join(timeout=seconds + 6 * timeout_s)
            wall, cpu_end = time.perf_counter() - began, _cpu_by_part(server, port)
            stuck = [t.name for t in threads if t.is_alive()]
        finally:
            browser.close()
        tracebacks = server.log_tail(1 << 20).count("Traceback")
        peak_mib = _peak_rss_mib(server)
    result = summary(runs, sessions, seconds, wall)
    result["warm_up_s"] = warm_s
    result["server_peak_rss_mib"] = peak_mib
    # cores busy from the start of the rounds to their end: where the time goes
    result["cores_busy"] = {part: (cpu_end[part] - cpu_began[part]) / wall for part in cpu_end if part in cpu_began}
    if stuck:
        result["errors"] += len(stuck)
        result["messages"].append(f"sessions still running at the end: {', '.join(stuck)}")
    if tracebacks:
        result["errors"] += tracebacks
        result["messages"].append(f"the server log holds {tracebacks} traceback(s)")
    return result


def _cpu_times() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far) of every process: user + system of all its
    threads and of its children that ended (a closed tab's renderer still counts)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        out[int(stat.parent.name)] = (int(fields[1]), sum(map(int, fields[11:15])) / os.sysconf("SC_CLK_TCK"))
    return out


def _tree_cpu_s(times: dict[int, tuple[int, float]], root: int) -> float:
    """CPU seconds of `root` and its living descendants in a `_cpu_times` snapshot."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in times.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, (0, 0.0))[1]
        todo += children.get(pid, [])
    return total


def _cpu_by_part(server: bb.AppServer, port: int) -> dict[str, float]:
    """CPU seconds used so far by the app server (Streamlit runs every session's script in a
    thread of it), chromium (all its processes) and this harness (its Playwright drivers and
    checks). Linux only (/proc): {} elsewhere."""
    if not Path("/proc/self/stat").is_file():
        return {}
    times = _cpu_times()
    flag = f"--remote-debugging-port={port}".encode()
    browser = next((pid for pid in times if flag in _cmdline(pid) and b"--type=" not in _cmdline(pid)), None)
    app = _tree_cpu_s(times, server.proc.pid)
    chromium = _tree_cpu_s(times, browser) if browser else float("nan")
    return {"app": app, "chromium": chromium, "harness": _tree_cpu_s(times, os.getpid()) - app - chromium}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _peak_rss_mib(server: bb.AppServer) -> float:
    """The app server's peak resident memory (VmHWM), in MiB; NaN where /proc cannot tell."""
    try:
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    except (AttributeError, OSError):
        return float("nan")


def summary(runs: list[Session], sessions: int, seconds: float, wall: float) -> dict:
    """Counts and times per kind of action and over all actions (times over all but the first
    visits: `p50_ms`, `p95_ms`, `max_ms`, the time to an updated page); `messages` says what went
    wrong."""

    def stats(kinds: tuple[str, ...]) -> dict:
        times = [t for s in runs for k, t in s.samples if k in kinds]
        return {
            "actions": len(times),
            "errors": sum(k in kinds for s in runs for k, _ in s.errors),
            "isolation_violations": sum(k in kinds for s in runs for k, _ in s.violations),
            "p50_ms": percentile(times, 50) * 1e3,
            "p95_ms": percentile(times, 95) * 1e3,
            "max_ms": max(times, default=float("nan")) * 1e3,
        }

    return {
        "sessions": sessions,
        "seconds": seconds,
        "wall_s": wall,
        **stats(KINDS),
        **{name: value for name, value in stats(KINDS[1:]).items() if name.endswith("_ms")},
        "by_kind": {kind: stats((kind,)) for kind in KINDS},
        "per_session_actions": [len(s.samples) for s in runs],
        "messages": [f"session {s.index} {k}: {m}" for s in runs for k, m in s.errors + s.violations],
    }


def format_summary(result: dict) -> str:
    """The table: per kind of action, then all (times: all but the first visits)."""
    columns = ("actions", "errors", "isolation", "p50 ms", "p95 ms", "max ms")
    lines = [f"{'':<14}" + "".join(f"{c:>11}" for c in columns)]
    for name, r in [*result["by_kind"].items(), ("all", result)]:
        counts = (r["actions"], r["errors"], r["isolation_violations"])
        times = (r["p50_ms"], r["p95_ms"], r["max_ms"])
        lines.append(f"{name:<14}" + "".join(f"{c:>11,}" for c in counts) + "".join(f"{t:>11,.0f}" for t in times))
    return "\n".join(lines)


def rows(result: dict) -> list:
    """benchmarks.common Rows of a `measure` result."""
    from benchmarks.common import Row

    n, secs = result["sessions"], result["seconds"]
    note = f"{n} sessions x {secs:.0f} s, one app server"
    out = [
        Row("load_actions", result["actions"], "count", note=note + "; first visits included"),
        Row("load_errors", result["errors"], "count", note="error boxes, failed actions, server tracebacks"),
        Row(
            "load_isolation_violations",
            result["isolation_violations"],
            "count",
            note="another session's user or upload",
        ),
        Row("load_update_p50_ms", result["p50_ms"], "ms", note="action to updated page, all but first visits"),
        Row("load_update_p95_ms", result["p95_ms"], "ms"),
        Row("load_update_max_ms", result["max_ms"], "ms"),
    ]
    for kind, r in result["by_kind"].items():
        if r["actions"]:
            slug = kind.replace(" ", "_")
            out += [
                Row(f"load_{slug}_p50_ms", r["p50_ms"], "ms", note=f"{r['actions']} actions"),
                Row(f"load_{slug}_p95_ms", r["p95_ms"], "ms"),
            ]
    out.append(Row("load_server_peak_rss_mib", result["server_peak_rss_mib"], "MiB", note="the app server's VmHWM"))
    for part, cores in result["cores_busy"].items():
        out.append(Row(f"load_cores_busy_{part}", cores, "cores", note="during the rounds"))
    return out


def section(ctx) -> list:
    """benchmarks/run.py's optional `load` section (`--only load`): the default data and model."""
    sessions, seconds = {"smoke": (3, 15), "quick": (4, 30)}.get(ctx.sizes.name, (8, 60))
    result = measure(sessions, seconds, log=ctx.log)
    for message in result["messages"]:
        ctx.log(message)
    return rows(result)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import machine_info

    parser = argparse.ArgumentParser(prog="python benchmarks/load.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help="browser sessions driven at once (default 8)")
    parser.add_argument(
        "--seconds", type=float, default=60, help="how long the sessions run, after the warm-up (default 60)"
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder of dataset folders for the app (default $DVBPR_DATA_ROOT, else data/)",
    )
    parser.add_argument(
        "--models-root",
        type=Path,
        default=None,
        help="folder of run folders for the app (default $DVBPR_MODELS_ROOT, else models/)",
    )
    parser.add_argument(
        "--model", default=None, help="the run every session uses (default $DVBPR_DEFAULT_MODEL, else default)"
    )
    parser.add_argument(
        "--pages",
        default=",".join(OTHER_PAGES),
        help=f"pages visited between users and uploads, comma-separated (default {','.join(OTHER_PAGES)}; "
        "on a model without a map, Embeddings starts computing one)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180,
        help="seconds one action may take before it counts as an error (default 180)",
    )
    parser.add_argument(
        "--warm-up",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="open every page once before the sessions start, so that the work done once per model "
        "is not timed (default on; --no-warm-up lets the sessions race to do it, a quicker check)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (with every message)")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.seconds <= 0:
        parser.error("--sessions must be at least 1 and --seconds positive")
    pages = tuple(p.strip() for p in args.pages.split(",") if p.strip())
    unknown = [p for p in pages if p not in OTHER_PAGES]
    if unknown:
        parser.error(f"unknown page(s) {unknown}; choose from {', '.join(OTHER_PAGES)}")
    # the app server inherits these, and the expectations here read the same roots
    for var, value in (("DVBPR_DATA_ROOT", args.data_root), ("DVBPR_MODELS_ROOT", args.models_root)):
        if value is not None:
            os.environ[var] = str(value.resolve())
    machine = machine_info()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    log(f"load on {machine['cpu']} x{machine['cores']}, load average {machine['load_avg']}")
    result = measure(args.sessions, args.seconds, args.model, pages, args.timeout, args.warm_up, log=log)
    result["machine"] = machine | {"load_avg_end": machine_info()["load_avg"]}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(
            f"{args.sessions} sessions x {args.seconds:.0f} s (ran {result['wall_s']:.0f} s after a "
            f"{result['warm_up_s']:.0f} s warm-up); {machine['cpu']} x{machine['cores']} cores; load average "
            f"{machine['load_avg']} -> {result['machine']['load_avg_end']}; app server peak RSS "
            f"{result['server_peak_rss_mib']:,.0f} MiB; cores busy during the rounds: "
            + ", ".join(f"{part} {cores:.2f}" for part, cores in result["cores_busy"].items())
        )
        print(format_summary(result))
        for message in result["messages"]:
            print(message)
    return 1 if result["errors"] or result["isolation_violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
