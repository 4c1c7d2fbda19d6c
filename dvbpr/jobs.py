"""Background training jobs that outlive the browser tab and a restart of the app.

A job is `python -m dvbpr train ...` started in its own process session, writing its output to
RUN_DIR/train.log. Its state lives in the run folder alone (status.json, metrics.jsonl and the
flock in .lock), so any process can find, follow and stop it later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import JobError
from .fsutil import safe_name
from .rundir import STATUS
from .train import TrainConfig, is_locked, read_metrics, read_status

LOG = "train.log"


def _cli_args(cfg: TrainConfig) -> list[str]:
    """The `train` command line that reproduces `cfg` (flags mirror the field names)."""
    args: list[str] = []
    defaults = TrainConfig(data="", out="")
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name in ("data", "out") or value == getattr(defaults, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args += [flag if value else "--no-" + flag[2:]]
        else:
            args += [flag, str(value)]
    return ["--data", cfg.data, "--out", cfg.out, *args]


def start_training(cfg: TrainConfig, resume: bool = False) -> int:
    """Launch a detached training process; returns its pid. One job per run folder."""
    cfg.validate()
    run_dir = Path(cfg.out)
    safe_name(run_dir.name, "run name")
    if is_locked(run_dir):
        raise JobError(f"a training job is already running in {run_dir}; stop it or pick another run name")
    if not resume and any((run_dir / n).exists() for n in ("last.pt", "best.pt")):
        raise JobError(f"{run_dir} already holds a run: resume it or pick another run name")
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "dvbpr", "train", *_cli_args(cfg)] + (["--resume"] if resume else [])
    # cwd stays the caller's (relative --data/--out mean what they meant here); the package is
    # installed (scripts/setup.sh: `pip install -e .`), so the job imports it from any folder.
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run_dir / LOG, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=os.getcwd(), env=env)
    # Wait until the job holds its lock and has written its own status (after importing torch:
    # seconds on a busy machine) or has died, so a second start is refused reliably, the run
    # shows up in list_runs at once, and an immediate failure is reported.
    deadline = time.time() + 120
    while (not (is_locked(run_dir) and read_status(run_dir).get("pid") == proc.pid)
           and proc.poll() is None and time.time() < deadline):
        time.sleep(0.05)
    if proc.poll() not in (None, 0):
        raise JobError(f"the training job exited at once (status {proc.returncode}): "
                       f"{job_log(run_dir, lines=1) or 'see ' + str(run_dir / LOG)}")
    return proc.pid


def stop_training(run_dir: str | Path) -> bool:
    """Ask a running job to stop (SIGTERM: it finishes the step and writes a checkpoint)."""
    run_dir = Path(run_dir)
    if not is_locked(run_dir):
        return False
    pid = read_status(run_dir).get("pid")
    if not pid:
        raise JobError(f"the job in {run_dir} has not written its pid yet; try again in a moment")
    try:
        os.kill(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


@dataclass
class RunSummary:
    name: str
    path: str
    state: str
    data: str
    arch: str
    epoch: int
    epochs: int
    best_val_auc: float | None
    updated_at: float | None
    has_checkpoint: bool

    def as_dict(self) -> dict:
        return asdict(self)


def run_state(run_dir: str | Path) -> str:
    """running, finished, stopped, failed, or 'interrupted' for a run that says running but
    whose process is gone (killed): resume it."""
    status = read_status(run_dir)
    state = status.get("state", "new")
    if state in ("running", "starting") and not is_locked(run_dir):
        return "interrupted"
    return state


def list_runs(root: str | Path) -> list[RunSummary]:
    """Every run folder directly under `root` (newest first)."""
    root = Path(root)
    runs = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        status = read_status(path)
        has_ckpt = (path / "best.pt").is_file() or (path / "last.pt").is_file()
        if not status and not has_ckpt:
            continue
        runs.append(RunSummary(
            name=path.name, path=str(path), state=run_state(path), data=str(status.get("data", "")),
            arch=str(status.get("arch", "")), epoch=int(status.get("epoch", 0) or 0),
            epochs=int(status.get("epochs", 0) or 0), best_val_auc=status.get("best_val_auc"),
            updated_at=status.get("updated_at"), has_checkpoint=has_ckpt))
    return sorted(runs, key=lambda r: r.updated_at or 0, reverse=True)


def job_log(run_dir: str | Path, lines: int = 40) -> str:
    path = Path(run_dir) / LOG
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


__all__ = ["start_training", "stop_training", "list_runs", "run_state", "job_log", "read_status",
           "read_metrics", "RunSummary", "STATUS"]
