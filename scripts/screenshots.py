"""Regenerate docs/screenshots/<page>.png: every page of the app, as a person sees it.

    python scripts/screenshots.py [--out docs/screenshots] [--port N] [--url URL] [--data-root DIR]
                                  [--models-root DIR] [--model NAME] [--image PATH]

Starts `streamlit run app.py` on a local port (the default data and model, data/default and
models/default, unless the flags or DVBPR_DATA_ROOT / DVBPR_MODELS_ROOT / DVBPR_DEFAULT_MODEL
say otherwise), opens it in Debian's chromium at 1400x1000 and saves one full-page screenshot per
page: recommendations.png (a user whose test item is in their top 20) and explanations.png (the
same with the heatmap overlay of what raises the user's visual score), embeddings.png (the map:
computed first if needed, a minute or two), upload.png (a new garment image, drawn for the shot,
uploaded), train.png, evaluate.png (with the baselines: computed first if needed, minutes on a
busy CPU) and data.png; `--only` takes some of the pages. Exits with status 1 if a page shows
an error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "scripts"]
sys.path.insert(0, str(ROOT))

from benchmarks import browser as bb  # noqa: E402  (the app/browser harness)

SLOW_MS = 20 * 60_000  # the map and the baselines on the full default data, on a busy machine
STEP_MS = 5 * 60_000


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _new_garment(folder: Path) -> Path:
    """A garment the catalogue does not hold (drawn by the default dataset's generator with a seed
    of its own): a red polka-dot dress, as a PNG in `folder`."""
    from dvbpr.synth import render_item

    path = folder / "red-polka-dot-dress.png"
    render_item("dress", "red", "dots", size=256, seed=[20171, 1]).save(path)
    return path


def _check(page, name: str) -> None:
    errors = bb.errors_shown(page)
    if errors:
        raise SystemExit(f"the {name} page shows an error: {errors[0]}")


def shoot(url: str, out: Path, image: Path | None, only: list[str] | None = None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    saved = []
    with sync_playwright() as p:
        browser = bb.launch(p)
        try:
            page = bb.new_page(browser, timeout_ms=STEP_MS)
            page.goto(url)
            page.wait_for_selector('[data-testid="stAppViewContainer"]')
            bb.wait_idle(page, SLOW_MS, until_js=bb.heading_js("Recommendations") + bb.RECS_READY_JS)
            _check(page, "Recommendations")

            for slug, title in bb.PAGES.items():
                if only and slug not in only:
                    continue
                t0 = time.perf_counter()
                bb.open_page(page, title, SLOW_MS)
                if slug == "recommendations":
                    # a user whose test item is a hit: turning "only hits" on picks one, turning it
                    # off again keeps that user
                    for _ in range(2):
                        since = bb.arm(page)
                        bb.widget(page, "rec_only_hits").locator("label").click()
                        bb.wait_idle(page, STEP_MS, since=since)
                    bb.wait_idle(page, SLOW_MS, until_js=bb.RECS_READY_JS)
                elif slug == "embeddings":
                    _log("  waiting for the embedding map (computed in the background the first time)")
                    bb.wait_idle(page, SLOW_MS, until_js=bb.MAP_READY_JS)
                elif slug == "upload" and image is not None:
                    since = bb.arm(page)
                    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(image))
                    bb.wait_idle(
                        page,
                        SLOW_MS,
                        since=since,
                        until_js=("return document.querySelectorAll('[data-testid=\"stMain\"] .dv-row').length > 1;"),
                    )
                elif slug == "evaluate":
                    _log("  waiting for the baselines (computed once per dataset)")
                    bb.wait_idle(
                        page,
                        SLOW_MS,
                        until_js=(
                            "return document.querySelector('[data-testid=\"stMain\"]').textContent.includes('bpr-mf');"
                        ),
                    )
                else:
                    bb.wait_idle(page, SLOW_MS, until_js=bb.PAGE_READY_JS[title])
                _check(page, title)
                saved.append(bb.full_screenshot(page, out / f"{slug}.png"))
                _log(f"{title}: {saved[-1]} ({time.perf_counter() - t0:.1f} s)")
                if slug == "recommendations":  # the same user with the explanation overlay
                    since = bb.arm(page)
                    bb.widget(page, "rec_explain").locator("label").click()
                    bb.wait_idle(page, STEP_MS, since=since, until_js=bb.RECS_READY_JS)
                    _check(page, title)
                    saved.append(bb.full_screenshot(page, out / "explanations.png"))
                    _log(f"{title} explained: {saved[-1]}")
                    since = bb.arm(page)
                    bb.widget(page, "rec_explain").locator("label").click()
                    bb.wait_idle(page, STEP_MS, since=since)
        finally:
            browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/screenshots.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "screenshots",
        help="folder for the PNG files (default docs/screenshots)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port for the app server this script starts (default: a free one)"
    )
    parser.add_argument(
        "--url",
        default=None,
        help="use the app already running at this URL (e.g. http://localhost:8501) "
        "instead of starting one; --port, --data-root, --models-root and --model "
        "are then ignored",
    )
    parser.add_argument(
        "--data-root", type=Path, default=None, help="folder of dataset folders (default $DVBPR_DATA_ROOT, else data)"
    )
    parser.add_argument(
        "--models-root", type=Path, default=None, help="folder of run folders (default $DVBPR_MODELS_ROOT, else models)"
    )
    parser.add_argument("--model", default=None, help="the model shown (default $DVBPR_DEFAULT_MODEL, else default)")
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated pages to shoot (default all: {','.join(bb.PAGES)}); "
        "recommendations also makes explanations.png",
    )
    parser.add_argument(
        "--image",
        type=Path,
        default=None,
        help="image uploaded on the Upload page (default: a new red polka-dot dress drawn "
        "by the default dataset's generator, not in the catalogue)",
    )
    args = parser.parse_args(argv)
    only = [p.strip() for p in args.only.split(",") if p.strip()] if args.only else None
    unknown = sorted(set(only or ()) - set(bb.PAGES))
    if unknown:
        parser.error(f"unknown page(s) {unknown}; choose from {list(bb.PAGES)}")
    try:
        bb.check_chromium()
    except RuntimeError as exc:
        parser.exit(1, f"{exc}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dvbpr-shots-") as tmp:
        image = args.image or _new_garment(Path(tmp))
        if args.url:
            shoot(args.url.rstrip("/") + "/", args.out, image, only)
            return 0
        server = bb.AppServer(
            args.data_root and args.data_root.resolve(),
            args.models_root and args.models_root.resolve(),
            args.model,
            port=args.port,
        )
        _log(f"starting the app on port {server.port} (log: {server.log_path})")
        with server:
            try:
                shoot(server.page_url(), args.out, image, only)
            except BaseException:
                _log(f"--- server log ---\n{server.log_tail()}")
                raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
