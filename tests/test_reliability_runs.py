"""Run folders and jobs under stress (issue 13): a second training into a busy run folder, a disk
that fills up while a checkpoint is written (on a real, small file system), and background jobs
(training, embedding map) killed with SIGKILL, seen from the job functions and from the pages."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dvbpr import cli, embedmap, jobs
from dvbpr.checkpoint import load_checkpoint, model_from_checkpoint
from dvbpr.config import TrainConfig, cli_args
from dvbpr.errors import DiskFullError, JobError
from dvbpr.fsutil import append_line, is_file_locked
from dvbpr.jobs import run_state, start_training
from dvbpr.rundir import read_metrics, read_status
from tests.test_app import app, errors, ok
from tests.test_jobs import reap, wait_for

GONE_WITHIN_S = 3.0  # "within a few seconds": a killed job must stop looking alive by then


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its sha256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_checkpoints_load(run: Path) -> None:
    """Every .pt in the run loads into a model; no temporary file of a failed write is left."""
    names = sorted(p.name for p in run.iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    pts = [n for n in names if n.endswith(".pt")]
    assert {"best.pt", "last.pt"} <= set(pts)
    for name in pts:
        model_from_checkpoint(load_checkpoint(run / name))


def seconds_until(condition: Callable[[], bool], timeout: float = 30.0) -> float:
    t0 = time.time()
    while not condition():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)
    return time.time() - t0


# -------------------------------------------------------------------------- a busy run folder
def test_a_second_training_into_a_busy_run_is_refused_and_the_first_finishes(
    tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "busy"
    cfg = TrainConfig(data=str(tiny_data), out=str(run), **{**tiny_train_kwargs, "checkpoint_every": 3})
    pid = start_training(cfg)
    try:
        wait_for(lambda: (run / "last.pt").exists(), "the first checkpoint", pid, run)
        os.kill(pid, signal.SIGSTOP)  # frozen mid-run, its lock held: every attempt meets a live run
        before = snapshot(run)
        with pytest.raises(JobError, match="already running"):
            start_training(cfg)
        with pytest.raises(JobError, match="already running"):
            start_training(cfg, resume=True)
        for args in (cli_args(cfg), ["--out", str(run), "--resume"]):  # `dvbpr train ...`, fresh and resumed
            capsys.readouterr()
            assert cli.main(["train", *args]) == 2
            assert f"error: run folder {run} is in use by another training job" in capsys.readouterr().err
        assert snapshot(run) == before  # not a byte of the first run changed
        assert run_state(run) == "running"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert reap(pid) == 0
    status = read_status(run)
    assert status["state"] == "finished" and status["step"] == status["total_steps"] > 0
    records = read_metrics(run)
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2, 3]
    assert not [r for r in records if r["type"] == "resume"]
    assert_checkpoints_load(run)
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


# ------------------------------------------------------------------------------ a full disk
SMALL_FS_MB = 16  # the tiny run's checkpoints: best.pt about 1 MB, last.pt about 3 MB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real file system of SMALL_FS_MB: a tmpfs, else a loop-mounted ext4 image. Both need
    root (as in CI); anything else failing to mount fails the test, saying why."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system (tmpfs or a loop-mounted image) needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    image = tmp_path / "small.img"
    attempts = [["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS_MB}m", "tmpfs", str(mnt)]]
    attempts.append(f"truncate -s {SMALL_FS_MB}M {image} && mkfs.ext4 -q -F {image} && mount -o loop {image} {mnt}")
    failures = []
    for command in attempts:
        done = subprocess.run(command, shell=isinstance(command, str), capture_output=True, text=True)
        if done.returncode == 0:
            break
        failures.append(f"{command}: {done.stderr.strip()}")
    else:
        pytest.fail("cannot mount a small file system to fill: " + " | ".join(failures))
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(ballast: Path, leave: int = 0) -> int:
    """Grow `ballast` until its file system is full, then give `leave` bytes of it back; returns
    the bytes free afterwards."""
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 65536)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        os.ftruncate(fd, max(os.fstat(fd).st_size - leave, 0))
    finally:
        os.close(fd)
    st = os.statvfs(ballast.parent)
    return st.f_bfree * st.f_frsize


def assert_failed_for_a_full_disk(run: Path, written: str) -> dict:
    """status.json is valid JSON and says the run failed because the disk is full, writing the
    file `written` (a regular expression)."""
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and run_state(run) == "failed", status
    assert re.search(rf"the disk is full .* writing \S+/{written} \(", status["message"]), status["message"]
    return status


def test_disk_full_while_checkpointing_fails_cleanly_and_resume_continues(
    small_fs: Path, tiny_data: Path, tiny_train_kwargs: dict, capsys
) -> None:
    run, ballast = small_fs / "run", small_fs / "ballast"
    cfg = TrainConfig(data=str(tiny_data), out=str(run), **{**tiny_train_kwargs, "epochs": 1})
    assert cli.main(["train", *cli_args(cfg)]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    checkpoint_bytes = (run / "best.pt").stat().st_size

    # room for status.json, metrics.jsonl and config.json, not for a checkpoint
    free = fill(ballast, leave=256 * 1024)
    assert free < checkpoint_bytes, (free, checkpoint_bytes)
    capsys.readouterr()
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "error: the disk is full (No space left on device) writing" in err, err[-500:]
    status = assert_failed_for_a_full_disk(run, r"(best|last)\.pt")
    assert status["step"] == 20 and "resume with --resume" in status["message"]  # epoch 2 ran to its end
    assert_checkpoints_load(run)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # the one before the failed write

    # not a byte left: even the atomic write of status.json fails, and the failure is still
    # recorded (status.json rewritten in place); a metrics line cut short is taken back
    fill(ballast)
    metrics = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(DiskFullError, match="metrics.jsonl"):
        append_line(run / "metrics.jsonl", json.dumps({"type": "step", "pad": "x" * 20000}))
    assert (run / "metrics.jsonl").read_bytes() == metrics
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 2
    assert "the disk is full" in capsys.readouterr().err
    assert_failed_for_a_full_disk(run, r"status\.json")
    assert_checkpoints_load(run)

    ballast.unlink()
    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == 0
    status = read_status(run)
    assert status["state"] == "finished" and status["step"] == status["total_steps"] == 30
    assert all(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    assert [r["epoch"] for r in read_metrics(run) if r["type"] == "epoch"] == [1, 2, 3]  # no epoch twice
    assert_checkpoints_load(run)
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


def test_an_unreadable_status_reads_as_failed(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text('{"state": "runn')
    status = read_status(tmp_path)
    assert status["state"] == "failed" and "status.json is unreadable" in status["message"]
    assert run_state(tmp_path) == "failed"


# --------------------------------------------------------------------- killed jobs, in the app
@pytest.fixture
def app_roots(tiny_data: Path, tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """The app over a copy of the tiny dataset ("default") and an empty models folder."""
    data_root, models_root = tmp_path / "data", tmp_path / "models"
    shutil.copytree(tiny_data, data_root / "default")
    models_root.mkdir()
    monkeypatch.setenv("DVBPR_DATA_ROOT", str(data_root))
    monkeypatch.setenv("DVBPR_MODELS_ROOT", str(models_root))
    monkeypatch.setenv("DVBPR_DEFAULT_MODEL", "job")
    monkeypatch.delenv("DVBPR_PUBLIC", raising=False)
    return {"data": data_root / "default", "models": models_root}


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_killed_training_and_map_jobs_show_as_ended_with_resume_offered(
    app_roots: dict[str, Path], tiny_train_kwargs: dict, monkeypatch
) -> None:
    run = app_roots["models"] / "job"
    cfg = TrainConfig(
        data=str(app_roots["data"]), out=str(run), **{**tiny_train_kwargs, "epochs": 200, "checkpoint_every": 3}
    )
    pid = start_training(cfg)
    try:
        wait_for(lambda: (run / "best.pt").exists(), "the first epoch's checkpoints", pid, run)
        at = ok(app("pages/train.py"))
        assert "**job** :green-badge[running]" in markdown(at)
        assert [b for b in at.button if b.key == "tr_stop"]
    finally:
        os.kill(pid, signal.SIGKILL)  # a crash, the OOM killer, a reboot
    assert seconds_until(lambda: run_state(run) not in ("running", "starting")) < GONE_WITHIN_S
    assert reap(pid) == -signal.SIGKILL
    assert run_state(run) == "interrupted" and read_status(run)["state"] == "running"
    at.run()  # what the live view's 2-second refresh shows next
    ok(at)
    assert "**job** :orange-badge[interrupted]" in markdown(at)
    assert any("process is gone" in w.value and "resume it below" in w.value for w in at.warning)
    assert [b for b in at.button if b.key == "tr_resume"] and not [b for b in at.button if b.key == "tr_stop"]

    # the embedding-map job of the run's checkpoint, killed while it computes
    embedmap.start_map_job(run)
    status = embedmap.map_status(run)
    map_pid = status["pid"]
    lock = run / "cache" / f"umap_{embedmap.checkpoint_key(run)}.lock"
    wait_for(lambda: is_file_locked(lock), "the map job to take its lock", map_pid, run)
    assert embedmap.map_status(run)["state"] == "running"
    os.kill(map_pid, signal.SIGKILL)
    assert seconds_until(lambda: embedmap.map_status(run)["state"] != "running") < GONE_WITHIN_S
    assert reap(map_pid) == -signal.SIGKILL
    status = embedmap.map_status(run)
    assert status["state"] == "failed" and "ended before the map was done" in status["message"]

    restarts = []
    monkeypatch.setattr(embedmap, "start_map_job", lambda run_dir, data=None: restarts.append(Path(run_dir)))
    page = ok(app("pages/embeddings.py", model="job"))
    assert "Computing the map failed: the map job's process ended" in errors(page)
    [b for b in page.button if b.label == "Compute the map again"][0].click().run()
    ok(page)
    assert restarts == [run]

    # the Resume button resumes this run (a killed job's resume itself: tests/test_jobs.py)
    resumed = []
    monkeypatch.setattr(jobs, "start_training", lambda cfg, resume=False: resumed.append((cfg, resume)) or 4242)
    [b for b in at.button if b.key == "tr_resume"][0].click().run()
    ok(at)
    ((cfg, resume),) = resumed
    assert resume and Path(cfg.out) == run and cfg.epochs == 200
