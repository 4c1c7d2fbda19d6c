"""What every benchmark module shares: result rows, the run modes and their sizes, timing,
memory measurement, the work folder and running a step in a fresh process.

Imports only the standard library, numpy and torch (the GPU machines have nothing else).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
GIB = float(1 << 30)
MEMORY_BUDGET_GIB = 24.0  # this machine's RAM: every scale step must fit in it


# ------------------------------------------------------------------------------------ rows
@dataclass
class Row:
    """One result. `reference` is what `value` is compared with: a baseline measured in the same
    run (compute bound, tutorial pipeline, per-user loop) or, where there is none, the goal or
    budget (10 ms, 300 ms, 24 GiB). `ratio` = value / reference. `note` is for the text table."""

    name: str
    value: float
    unit: str
    reference: float | None = None
    ratio: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        self.value = float(self.value)
        if self.reference is not None:
            self.reference = float(self.reference)
            if self.ratio is None and self.reference:
                self.ratio = self.value / self.reference

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "reference": self.reference,
            "ratio": self.ratio,
        }


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table."""

    def num(x: float | None) -> str:
        if x is None:
            return ""
        return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"

    header = ("name", "value", "unit", "reference", "ratio", "note")
    body = [
        (r.name, num(r.value), r.unit, num(r.reference), f"{r.ratio:.2f}" if r.ratio is not None else "", r.note)
        for r in rows
    ]
    widths = [max(len(str(line[c])) for line in [header, *body]) for c in range(5)]
    lines = []
    for line in [header, *body]:
        cells = [str(line[0]).ljust(widths[0])] + [str(line[c]).rjust(widths[c]) for c in range(1, 5)]
        lines.append("  ".join(cells + [str(line[5])]).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- modes
@dataclass(frozen=True)
class Sizes:
    """Everything a mode scales: full (the issue's sizes), quick (< 10 min here), smoke (seconds)."""

    name: str
    # training throughput: (warmup steps, steps per round, rounds); batches and image sizes
    small_steps: tuple[int, int, int] = (3, 10, 4)
    cnnf_steps: tuple[int, int, int] = (1, 1, 3)
    cnnf_batch: int = 128
    cnnf_size: int = 224
    small_batch: int = 128
    small_size: int = 64
    train_data: str = "default"  # "default": data/default; else a tiny pool catalogue
    # evaluation: users in the per-user loop (the vectorised run always does every test user)
    loop_users: int = 1200
    big_eval_items: int = 100_000
    big_eval_users: int = 2000
    big_loop_users: int = 200
    # serving: catalogue sizes (items, users) and calls
    catalogues: tuple[tuple[int, int], ...] = ((5_000, 1_200), (100_000, 30_000), (350_000, 97_678))
    recommend_calls: int = 300
    rank_users_calls: int = 50
    # scale: fraction of Amazon Women, pool of distinct looks, training steps, evaluated users
    scale_fraction: float = 1.0
    scale_pool: int = 5000
    scale_train_steps: int = 200
    scale_eval_users: int = 5000
    # embedding map: items of the large catalogue
    umap_items: int = 350_000
    umap_sample: int = 0  # items UMAP is fitted on; 0: the app's default (20,000)
    umap_default: bool = True


FULL = Sizes("full")
QUICK = Sizes(
    "quick",
    small_steps=(2, 8, 3),
    cnnf_steps=(1, 1, 3),
    cnnf_batch=16,
    loop_users=300,
    big_eval_users=1024,
    big_loop_users=60,
    recommend_calls=100,
    rank_users_calls=20,
    catalogues=((5_000, 1_200), (100_000, 30_000), (350_000, 9_768)),
    scale_fraction=0.1,
    scale_pool=1000,
    scale_train_steps=40,
    scale_eval_users=1000,
    umap_items=35_000,
)
SMOKE = Sizes(
    "smoke",
    small_steps=(1, 1, 2),
    cnnf_steps=(1, 1, 1),
    cnnf_batch=2,
    cnnf_size=64,
    small_batch=16,
    small_size=32,
    train_data="tiny",
    loop_users=20,
    big_eval_items=2000,
    big_eval_users=64,
    big_loop_users=8,
    catalogues=((500, 100), (2_000, 300)),
    recommend_calls=10,
    rank_users_calls=3,
    scale_fraction=0.001,
    scale_pool=20,
    scale_train_steps=2,
    scale_eval_users=50,
    umap_items=10,
    umap_default=False,
)
MODES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


@dataclass
class Context:
    sizes: Sizes
    work: Path  # scratch folder for generated datasets, caches and runs (outside the repository)
    log: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr, flush=True))


def default_work_dir() -> Path:
    return Path(os.environ.get("DVBPR_BENCH_DIR", Path(tempfile.gettempdir()) / "dvbpr-bench"))


# ---------------------------------------------------------------------------------- timing
class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self.t0


def latencies_ms(fn: Callable[[int], object], calls: int, warmup: int = 3) -> np.ndarray:
    """Wall time of `fn(k)` for k = 0..calls-1 (after `warmup` untimed calls), in ms."""
    for k in range(warmup):
        fn(k)
    out = np.empty(calls)
    for k in range(calls):
        t0 = time.perf_counter()
        fn(k)
        out[k] = (time.perf_counter() - t0) * 1e3
    return out


def p50_p99(ms: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


# ---------------------------------------------------------------------------------- memory
def _status_kib(field_name: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_gib() -> float:
    """Peak resident set of this process (VmHWM): anonymous memory plus the file pages it
    touched, memory-mapped image store included (those are page cache the kernel can drop)."""
    kib = _status_kib("VmHWM")
    if not kib:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024 / GIB


class AnonPeak:
    """Samples RssAnon (memory that must fit in RAM: no file pages) every 20 ms in a thread."""

    def __enter__(self) -> AnonPeak:
        self.peak_kib = _status_kib("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kib = max(self.peak_kib, _status_kib("RssAnon"))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, _status_kib("RssAnon"))

    @property
    def gib(self) -> float:
        return self.peak_kib * 1024 / GIB


# ------------------------------------------------------------------------------ processes
def run_step(module: str, args: list[str], log: Callable[[str], None], timeout: float | None = None) -> dict:
    """Run `python -m benchmarks.<module> ARGS` in a fresh process (so its peak memory is its
    own) and return the JSON object it prints on its last stdout line."""
    cmd = [sys.executable, "-m", f"benchmarks.{module}", *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{' '.join(cmd)} printed nothing:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


def emit(result: dict) -> None:
    """The last stdout line of a step process (read by `run_step`)."""
    print(json.dumps(result), flush=True)


# -------------------------------------------------------------------------------- machine
def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB if hasattr(os, "sysconf") else 0.0
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def ensure_repo_on_path() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
