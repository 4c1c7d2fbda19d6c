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
from pathlib import Path

from .config import TrainConfig, cli_args
from .errors import JobError
from .fsutil import safe_name
from .rundir import (  # the run folder's readers, re-exported for the app
    LOG,
    STATUS,
    RunSummary,
    has_checkpoint,
    is_locked,
    list_runs,
    read_metrics,
    read_status,
    run_state,
)


def start_training(cfg: TrainConfig, resume: bool = False) -> int:
    """Launch a detached training process; returns its pid. One job per run folder."""
    cfg.validate()
    run_dir = Path(cfg.out)
    safe_name(run_dir.name, "run name")
    if is_locked(run_dir):
        raise JobError(f"a training job is already running in {run_dir}; stop it or pick another run name")
    if not resume and has_checkpoint(run_dir):
        raise JobError(f"{run_dir} already holds a run: resume it or pick another run name")
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "dvbpr", "train", *cli_args(cfg)] + (["--resume"] if resume else [])
    # cwd stays the caller's (relative --data/--out mean what they meant here); the package is
    # installed (scripts/setup.sh: `pip install -e .`), so the job imports it from any folder.
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run_dir / LOG, "ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=os.getcwd(),
            env=env,
        )
    # Wait until the job holds its lock and has written its own status (after importing torch:
    # seconds on a busy machine) or has died, so a second start is refused reliably, the run
    # shows up in list_runs at once, and an immediate failure is reported.
    deadline = time.time() + 120
    while (
        not (is_locked(run_dir) and read_status(run_dir).get("pid") == proc.pid)
        and proc.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.05)
    if proc.poll() not in (None, 0):
        raise JobError(
            f"the training job exited at once (status {proc.returncode}): "
            f"{job_log(run_dir, lines=1) or 'see ' + str(run_dir / LOG)}"
        )
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


def job_log(run_dir: str | Path, lines: int = 40) -> str:
    path = Path(run_dir) / LOG
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


__all__ = [
    "start_training",
    "stop_training",
    "list_runs",
    "run_state",
    "job_log",
    "read_status",
    "read_metrics",
    "RunSummary",
    "STATUS",
]
