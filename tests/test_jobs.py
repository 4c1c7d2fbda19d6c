"""Background training jobs: start, refuse a second start, kill, resume, stop, list."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dvbpr import cli
from dvbpr.config import TrainConfig, cli_args
from dvbpr.errors import JobError
from dvbpr.jobs import job_log, list_runs, run_state, start_training, stop_training
from dvbpr.rundir import read_status


def wait_for(condition: Callable[[], bool], what: str, pid: int, run: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        assert os.waitpid(pid, os.WNOHANG) == (0, 0), f"the job died: {job_log(run)}"
        time.sleep(0.05)


def reap(pid: int) -> int:
    """Wait for a job started by this process; its exit status as subprocess reports it."""
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def test_cli_args_reproduce_the_config(tiny_train_kwargs: dict) -> None:
    cfg = TrainConfig(
        data="d",
        out="runs/x",
        **{**tiny_train_kwargs, "init_from": "runs/base", "freeze_cnn": True, "max_minutes": 1.5},
    )
    args = cli.build_parser().parse_args(["train", *cli_args(cfg)])
    rebuilt = TrainConfig(
        **{k: getattr(args, k) if getattr(args, k) is not None else getattr(cfg, k) for k in cfg.__dataclass_fields__}
    )
    assert rebuilt == cfg
    assert cli_args(TrainConfig(data="d", out="o")) == ["--data", "d", "--out", "o"]


def test_job_lifecycle(tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    run = runs / "job"
    # many epochs: the job is stopped long before it could finish
    cfg = TrainConfig(data=str(tiny_data), out=str(run), **{**tiny_train_kwargs, "epochs": 200, "checkpoint_every": 3})
    assert run_state(run) == "new" and stop_training(run) is False

    pid = start_training(cfg)
    try:
        wait_for(lambda: (run / "last.pt").exists(), "the first checkpoint", pid, run)
        assert run_state(run) == "running" and read_status(run)["pid"] == pid
        with pytest.raises(JobError, match="already running"):
            start_training(cfg, resume=True)
        with pytest.raises(JobError, match="already"):
            start_training(cfg)
        (summary,) = list_runs(runs)
        assert (summary.name, summary.state, summary.has_checkpoint, summary.epochs) == ("job", "running", True, 200)
        assert "dvbpr train" in job_log(run) and "--epochs 200" in job_log(run)

        os.kill(pid, signal.SIGKILL)  # a crash, an OOM kill or a reboot
        assert reap(pid) == -signal.SIGKILL
        assert read_status(run)["state"] == "running" and run_state(run) == "interrupted"
        assert list_runs(runs)[0].state == "interrupted"
        with pytest.raises(JobError, match="already holds a run"):
            start_training(cfg)

        pid = start_training(cfg, resume=True)
        resumed_from = [line for line in job_log(run, lines=200).splitlines() if "--resume" in line]
        assert resumed_from
        wait_for(
            lambda: read_status(run).get("pid") == pid and read_status(run).get("state") == "running",
            "the resumed job to run",
            pid,
            run,
        )
        assert stop_training(run) is True
        assert reap(pid) == 0
    finally:
        if read_status(run).get("pid") and run_state(run) == "running":
            os.kill(read_status(run)["pid"], signal.SIGKILL)
    status = read_status(run)
    assert status["state"] == "stopped" and run_state(run) == "stopped"
    assert 0 < status["step"] < status["total_steps"]
    (summary,) = list_runs(runs)
    assert summary.state == "stopped" and summary.has_checkpoint
    assert stop_training(run) is False  # nothing left to stop


def test_a_job_that_dies_at_once_is_reported(tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict) -> None:
    run = tmp_path / "empty"
    cfg = TrainConfig(data=str(tiny_data), out=str(run), **tiny_train_kwargs)
    with pytest.raises(JobError, match="exited at once.*nothing to resume"):
        start_training(cfg, resume=True)  # no last.pt: the job fails before it takes the lock
    assert run_state(run) == "new" and "nothing to resume" in job_log(run)
