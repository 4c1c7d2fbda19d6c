"""Training: the run folder, refusal, stop/kill and resume, NaN, fine-tuning, DDP on CPU."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from dvbpr import cli
from dvbpr.checkpoint import load_checkpoint
from dvbpr.config import TrainConfig, cli_args, resume_config
from dvbpr.data import load_dataset
from dvbpr.distributed import process_group
from dvbpr.errors import CheckpointError, TrainingError
from dvbpr.fsutil import append_line
from dvbpr.recommender import Recommender
from dvbpr.rundir import read_metrics, read_status
from dvbpr.train import build_model, train
from tests.helpers import make_tiny_dataset

REPO = Path(__file__).resolve().parent.parent


def config(data: Path, out: Path, base: dict, **changes) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), **{**base, **changes})


def epochs_of(run: Path) -> list[dict]:
    return [r for r in read_metrics(run) if r["type"] == "epoch"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=atol), name


# --- the run folder -------------------------------------------------------------------------


def test_run_folder_holds_checkpoints_config_metrics_and_status(
    tiny_run: Path, tiny_data: Path, tiny_train_kwargs: dict
) -> None:
    names = {p.name for p in tiny_run.iterdir()}
    assert {"best.pt", "last.pt", "config.json", "metrics.jsonl", "status.json"} <= names
    saved = json.loads((tiny_run / "config.json").read_text())
    assert {k: saved[k] for k in tiny_train_kwargs} == tiny_train_kwargs
    assert saved["model"]["arch"] == "cnnf-small" and saved["model"]["n_items"] == 48

    epochs = tiny_train_kwargs["epochs"]
    steps_per_epoch = math.ceil(160 / tiny_train_kwargs["batch_size"])
    records = read_metrics(tiny_run)
    steps = [r for r in records if r["type"] == "step"]
    ends = epochs_of(tiny_run)
    assert len(ends) == epochs and [r["epoch"] for r in ends] == list(range(1, epochs + 1))
    assert len(steps) == epochs * steps_per_epoch // tiny_train_kwargs["log_every"]
    for r in steps + ends:
        assert math.isfinite(r["loss"]) and r["triplets_per_s"] > 0
    for r in ends:
        assert 0.0 <= r["val_auc"] <= 1.0
    assert [r["step"] for r in ends] == [steps_per_epoch * (e + 1) for e in range(epochs)]
    assert ends[-1]["val_auc"] > 0.65  # red users like red items: even this tiny run learns it

    status = read_status(tiny_run)
    assert status["state"] == "finished"
    assert status["epoch"] == epochs and status["epochs"] == epochs
    assert status["step"] == status["total_steps"] == epochs * steps_per_epoch
    assert status["pid"] == os.getpid()  # trained in this process by the fixture
    assert status["best_val_auc"] == max(r["val_auc"] for r in ends)

    best = torch.load(tiny_run / "best.pt", weights_only=True)
    last = torch.load(tiny_run / "last.pt", weights_only=True)
    assert "training_state" in last and "training_state" not in best
    assert last["step"] == epochs * steps_per_epoch and last["epoch"] == epochs
    assert best["metrics"]["val_auc"] == status["best_val_auc"]
    dataset = load_dataset(tiny_data)
    assert best["user_ids"] == dataset.users.ids and best["item_ids"] == dataset.items.ids
    assert best["cold_items"].tolist() == dataset.cold_items.tolist()


@pytest.mark.parametrize("select, kept_epoch", [("val-auc", 1), ("last", 2)])
def test_select_decides_which_epoch_best_pt_keeps(
    select: str, kept_epoch: int, tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict, monkeypatch
) -> None:
    from dvbpr import train as train_module

    real = train_module.evaluate_model
    falling = iter([0.9, 0.8])  # validation AUC peaks in the first epoch

    def evaluated(*args, **kwargs):
        result = real(*args, **kwargs)
        result.metrics["auc"] = next(falling)
        return result

    monkeypatch.setattr(train_module, "evaluate_model", evaluated)
    run = tmp_path / select
    status = train(config(tiny_data, run, tiny_train_kwargs, epochs=2, select=select), progress=False)
    assert status["state"] == "finished" and status["best_val_auc"] == 0.9  # the record stays the best AUC
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == kept_epoch and best["metrics"]["val_auc"] == [0.9, 0.8][kept_epoch - 1]
    last = load_checkpoint(run / "last.pt")
    same = all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert same is (select == "last")


def test_refuses_to_train_into_an_existing_run(
    tiny_run: Path, tiny_data: Path, tiny_copy, tiny_train_kwargs: dict
) -> None:
    run = tiny_copy(tiny_run, "run")
    before = {str(p.relative_to(run)): sha(p) for p in run.rglob("*") if p.is_file()}
    with pytest.raises(TrainingError, match="--resume"):
        train(config(tiny_data, run, tiny_train_kwargs), progress=False)
    after = {str(p.relative_to(run)): sha(p) for p in run.rglob("*") if p.is_file()}
    assert after == before  # not even status.json touched


def test_resume_refuses_a_changed_dataset_and_a_run_without_last(tiny_run: Path, tiny_data: Path, tiny_copy) -> None:
    run, data = tiny_copy(tiny_run, "run"), tiny_copy(tiny_data, "data")
    with open(data / "interactions.csv", "a") as fh:
        fh.write("u1,i3,1800000000\n")
    with pytest.raises(TrainingError, match="changed"):
        train(resume_config(run, data=str(data)), resume=True, progress=False)
    assert read_status(run)["state"] == "failed"
    (run / "last.pt").unlink()
    with pytest.raises(TrainingError, match="nothing to resume"):
        resume_config(run)


def test_augment_moves_every_training_batch_and_nothing_else(
    tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict, monkeypatch
) -> None:
    from dvbpr import train as train_module

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = train_module.random_flip_shift

    def recorded(x: torch.Tensor) -> torch.Tensor:
        seen.append((x.clone(), real(x)))
        return seen[-1][1]

    monkeypatch.setattr(train_module, "random_flip_shift", recorded)
    cnn_inputs: list[torch.Tensor] = []
    original_build = train_module.build_model

    def watch(cnn: torch.nn.Module, args: tuple) -> None:
        if cnn.training:
            cnn_inputs.append(args[0].detach().clone())

    def build_and_watch(*args, **kwargs):
        model, info = original_build(*args, **kwargs)
        model.cnn.register_forward_pre_hook(watch)
        return model, info

    monkeypatch.setattr(train_module, "build_model", build_and_watch)
    status = train(config(tiny_data, tmp_path / "aug", tiny_train_kwargs, epochs=1, augment=True), progress=False)
    assert status["state"] == "finished"
    assert len(seen) == len(cnn_inputs) == status["total_steps"] > 0  # every training batch, and no evaluation pass
    for (_, after), fed in zip(seen, cnn_inputs, strict=True):
        torch.testing.assert_close(fed, after)  # the CNN trains on the moved images
    assert any(not torch.equal(before, after) for before, after in seen)
    seen.clear()
    train(config(tiny_data, tmp_path / "plain", tiny_train_kwargs, epochs=1), progress=False)
    assert seen == []  # off by default


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 1}, "batch size"),
        ({"lr": 0.0}, "learning rate"),
        ({"l2_theta": -1.0}, "L2"),
        ({"log_every": 0}, "log interval"),
        ({"checkpoint_every": -1}, "checkpoint"),
        ({"arch": "vgg"}, "arch"),
        ({"terms": "cf"}, "terms"),
        ({"negatives": "cold"}, "negatives"),
        ({"device": "tpu"}, "device"),
        ({"lr_schedule": "step"}, "schedule"),
    ],
)
def test_bad_training_options_are_refused_before_anything_is_written(
    change: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(TrainingError, match=message):
        train(TrainConfig(data="nowhere", out=str(tmp_path / "run"), **change), progress=False)
    assert not (tmp_path / "run").exists()


# --- stop, kill and resume ------------------------------------------------------------------


def test_sigterm_stops_resumably_and_resume_finishes_like_an_uninterrupted_run(
    tiny_run: Path, tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    run = tmp_path / "run"

    sent = []

    def sigterm_once(fraction: float, message: str) -> None:  # at the first log line: step 5
        if message.startswith("epoch") and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    status = train(config(tiny_data, run, tiny_train_kwargs), progress=False, progress_callback=sigterm_once)
    assert status["state"] == "stopped" and "--resume" in status["message"]
    assert signal.getsignal(signal.SIGTERM) is handler  # the training handler is removed again
    last = load_checkpoint(run / "last.pt")
    assert (last["epoch"], last["step"], last["training_state"]["step_in_epoch"]) == (0, 5, 5)
    assert not (run / "best.pt").exists()  # no epoch finished yet

    assert cli.main(["train", "--out", str(run), "--resume"]) == 0
    status = read_status(run)
    assert status["state"] == "finished"
    assert status["step"] == status["total_steps"] == read_status(tiny_run)["total_steps"]
    resumed = {k: v for k, v in read_metrics(run)[1].items() if k != "time"}
    assert resumed == {"type": "resume", "epoch": 0, "step": 5}
    # RNG state, optimizer and the epoch's triplets are restored: the same run as uninterrupted
    assert [r["val_auc"] for r in epochs_of(run)] == pytest.approx(
        [r["val_auc"] for r in epochs_of(tiny_run)], abs=1e-6
    )
    assert_same_weights(run / "last.pt", tiny_run / "last.pt")


def test_sigterm_while_loading_still_ends_in_a_resumable_stop(
    tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    run = tmp_path / "run"

    def sigterm_at_image_cache(fraction: float, message: str) -> None:
        if "images" in message:  # ImageStore.open reports the images: still loading
            os.kill(os.getpid(), signal.SIGTERM)

    # Were training not to catch SIGTERM this early, this handler would swallow it (rather
    # than the signal killing pytest) and the run would finish: the assertions would say so.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        status = train(
            config(tiny_data, run, tiny_train_kwargs), progress=False, progress_callback=sigterm_at_image_cache
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert status["state"] == "stopped"
    assert load_checkpoint(run / "last.pt")["step"] == 1  # one step, then the stop


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(
    tiny_run: Path, tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    run = tmp_path / "run"
    cfg = config(tiny_data, run, tiny_train_kwargs, checkpoint_every=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvbpr", "train", *cli_args(cfg)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                ckpt = torch.load(run / "last.pt", weights_only=True)
            except (FileNotFoundError, RuntimeError, EOFError):
                ckpt = None
            if ckpt is not None and ckpt["training_state"]["step_in_epoch"] > 0:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before a mid-epoch checkpoint"
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = load_checkpoint(run / "last.pt")  # atomic writes: intact even after SIGKILL
    stopped_at = ckpt["training_state"]["step_in_epoch"]
    assert stopped_at > 0 and ckpt["step"] % 2 == 0
    assert read_status(run)["state"] == "running"  # what the killed process left behind

    assert cli.main(["train", "--out", str(run), "--resume"]) == 0
    status = read_status(run)
    assert status["state"] == "finished"
    assert status["step"] == status["total_steps"] == read_status(tiny_run)["total_steps"]
    resumed = [r for r in read_metrics(run) if r["type"] == "resume"]
    assert resumed and resumed[-1]["step"] == ckpt["step"]
    steps = [r["step"] for r in read_metrics(run) if r["type"] == "step"]
    assert steps == sorted(set(steps))  # the steps logged after the checkpoint were dropped, then replayed
    # Resume restores the RNG state and regenerates the epoch's triplets, so the result is the
    # uninterrupted run's (exactly, in practice; the tolerance only allows for float noise).
    assert epochs_of(run)[-1]["val_auc"] == pytest.approx(epochs_of(tiny_run)[-1]["val_auc"], abs=1e-4)
    assert_same_weights(run / "last.pt", tiny_run / "last.pt", atol=1e-4)


def test_resume_drops_the_metrics_lines_logged_after_the_checkpoint(
    tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    run = tmp_path / "run"
    assert cli.main(["train", *cli_args(config(tiny_data, run, tiny_train_kwargs, epochs=1))]) == 0
    checkpoint_step = load_checkpoint(run / "last.pt")["step"]
    # what a process killed after that checkpoint leaves: lines of steps the resume will replay
    for step in range(checkpoint_step + 1, checkpoint_step + 4):
        append_line(run / "metrics.jsonl", json.dumps({"type": "step", "epoch": 2, "step": step, "loss": -1.0}))

    assert cli.main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 0
    records = read_metrics(run)
    assert not [r for r in records if r.get("loss") == -1.0]
    steps = [r["step"] for r in records if r["type"] == "step"]
    assert steps == sorted(set(steps)) and steps[-1] == read_status(run)["total_steps"]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]
    assert [r["step"] for r in records if r["type"] == "resume"] == [checkpoint_step]


# --- divergence -----------------------------------------------------------------------------


def test_nan_loss_fails_clearly_and_keeps_the_last_good_checkpoint(
    tiny_run: Path, tiny_data: Path, tiny_copy, monkeypatch
) -> None:
    from dvbpr.model import DVBPR

    run = tiny_copy(tiny_run, "run")  # copied away from its dataset: --data says where it is
    before = {name: sha(run / name) for name in ("best.pt", "last.pt")}
    forward = DVBPR.forward
    monkeypatch.setattr(DVBPR, "forward", lambda *a, **k: forward(*a, **k) * float("nan"))
    with pytest.raises(TrainingError, match="loss became nan"):
        train(resume_config(run, data=tiny_data, epochs=4), resume=True, progress=False)
    status = read_status(run)
    assert status["state"] == "failed" and "loss became nan" in status["message"]
    assert {name: sha(run / name) for name in before} == before


def test_diverging_run_never_writes_a_broken_checkpoint(
    tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match="nan|inf"):
        train(
            config(tiny_data, run, tiny_train_kwargs, lr=1e30, epochs=1, checkpoint_every=1, log_every=1),
            progress=False,
        )
    assert [r["step"] for r in read_metrics(run)] == [1]  # the one good step was logged
    status = read_status(run)
    assert status["state"] == "failed" and "lower --lr" in status["message"]
    for name in ("last.pt", "best.pt"):  # whatever was saved must be usable
        if (run / name).exists():
            weights = load_checkpoint(run / name)["model"]
            assert all(torch.isfinite(w).all() and w.abs().max() < 1e6 for w in weights.values())
    # no checkpoint, so the folder can be trained into again: from a clean metrics.jsonl
    assert train(config(tiny_data, run, tiny_train_kwargs, epochs=1), progress=False)["state"] == "finished"
    assert [r["step"] for r in read_metrics(run) if r["type"] == "step"] == [5, 10]
    assert "message" not in read_status(run) or read_status(run)["message"] == ""


# --- fine-tuning ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grown_data(tmp_path_factory, tiny_make_dataset) -> Path:
    """The tiny dataset plus 8 new (red) users and 6 new items, listed first in the files."""
    return tiny_make_dataset(tmp_path_factory.mktemp("grown") / "data", new_users=8, new_items=6)


def test_init_from_copies_matched_ids_and_cnn_and_leaves_new_ones_fresh(
    tiny_run: Path, grown_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    source = load_checkpoint(tiny_run / "best.pt")
    dataset = load_dataset(grown_data)
    assert dataset.users.ids[0] == "u40" and dataset.items.ids[0] == "i48"  # new ids come first
    torch.manual_seed(123)
    model, _ = build_model(
        config(grown_data, tmp_path / "ft", tiny_train_kwargs, init_from=str(tiny_run)), dataset, torch.device("cpu")
    )
    state = model.state_dict()
    for name, tensor in source["model"].items():
        if name.startswith("cnn."):
            assert torch.equal(state[name], tensor), name
    old_users = {u: k for k, u in enumerate(source["user_ids"])}
    old_items = {i: k for k, i in enumerate(source["item_ids"])}
    for table, ids, old in (
        ("theta_users", dataset.users.ids, old_users),
        ("gamma_users", dataset.users.ids, old_users),
        ("gamma_items", dataset.items.ids, old_items),
        ("beta_items", dataset.items.ids, old_items),
    ):
        new_rows = state[f"{table}.weight"]
        src_rows = source["model"][f"{table}.weight"]
        for k, id_ in enumerate(ids):
            if id_ in old:
                assert torch.equal(new_rows[k], src_rows[old[id_]]), (table, id_)
            else:  # fresh initialisation, not any trained row
                assert not any(torch.equal(new_rows[k], row) for row in src_rows), (table, id_)
    new_theta = state["theta_users.weight"][:8]  # the fresh N(0, 0.01) rows of the new users
    assert float(new_theta.abs().max()) <= 0.06 and float(new_theta.min()) < 0 < float(new_theta.max())
    assert torch.equal(state["beta_items.weight"][:6], torch.zeros(6, 1))


def test_freeze_cnn_trains_only_the_embeddings_and_resumes_without_its_source(
    tiny_run: Path, grown_data: Path, tmp_path: Path, tiny_copy, tiny_train_kwargs: dict
) -> None:
    source_run = tiny_copy(tiny_run, "source")
    run = tmp_path / "frozen"
    status = train(
        config(grown_data, run, tiny_train_kwargs, epochs=1, init_from=str(source_run), freeze_cnn=True), progress=False
    )
    assert status["state"] == "finished"
    source = load_checkpoint(source_run / "best.pt")["model"]
    tuned = load_checkpoint(run / "last.pt")["model"]
    cnn = [n for n in source if n.startswith("cnn.")]
    assert cnn and all(torch.equal(tuned[n], source[n]) for n in cnn)
    ids = load_dataset(grown_data).users.ids
    old = ids.index("u0")
    assert not torch.equal(tuned["theta_users.weight"][old], source["theta_users.weight"][0])
    # a resume continues from the run's own checkpoint: the source run is no longer needed
    shutil.rmtree(source_run)
    assert train(resume_config(run, epochs=2), resume=True, progress=False)["state"] == "finished"
    resumed = load_checkpoint(run / "last.pt")
    assert resumed["epoch"] == 2 and all(torch.equal(resumed["model"][n], source[n]) for n in cnn)


def test_crop_agreement_trains_with_its_head_and_fine_tunes_either_way(
    tiny_run: Path, tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict, monkeypatch
) -> None:
    from dvbpr import model as model_module

    calls: list[int] = []
    real = model_module.DVBPR.crop_agreement_loss
    monkeypatch.setattr(
        model_module.DVBPR,
        "crop_agreement_loss",
        lambda self, x, gather=None: calls.append(len(x)) or real(self, x, gather),
    )
    run = tmp_path / "crops"
    status = train(config(tiny_data, run, tiny_train_kwargs, epochs=1, crop_agreement=2.0), progress=False)
    assert status["state"] == "finished"
    half = tiny_train_kwargs["batch_size"] // 2
    assert len(calls) == status["total_steps"] and max(calls) == half  # every step, half the positives
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["model_config"]["crop_head"] is True and ckpt["train_config"]["crop_agreement"] == 2.0
    assert any(".crop_head." in name for name in ckpt["model"])
    served = Recommender.from_run(run, device="cpu")  # the head is for training only: serving is as ever
    assert len(served.recommend(served.dataset.users.ids[0], k=3)[0]) == 3
    # fine-tuning drops the head when the new run does not use it, and adds a fresh one when it does
    calls.clear()
    plain = config(tiny_data, tmp_path / "plain", tiny_train_kwargs, epochs=1, init_from=str(run))
    assert train(plain, progress=False)["state"] == "finished" and calls == []
    assert not any(".crop_head." in name for name in load_checkpoint(tmp_path / "plain" / "best.pt")["model"])
    added = config(
        tiny_data, tmp_path / "added", tiny_train_kwargs, epochs=1, init_from=str(tiny_run), crop_agreement=1.0
    )
    assert train(added, progress=False)["state"] == "finished" and calls


def test_fine_tuned_new_users_get_recommendations_that_fit_them_better_than_popularity(
    tiny_run: Path, grown_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    run = tmp_path / "tuned"
    train(config(grown_data, run, tiny_train_kwargs, epochs=2, init_from=str(tiny_run)), progress=False)
    source = load_checkpoint(tiny_run / "best.pt")["model"]
    tuned = load_checkpoint(run / "best.pt")["model"]
    first_conv = next(n for n in source if n.startswith("cnn.") and n.endswith(".weight"))
    assert not torch.equal(tuned[first_conv], source[first_conv])  # not frozen
    rec = Recommender.from_run(run, device="cpu")
    popularity = rec.dataset.item_popularity.astype(float)
    model_auc, pop_auc = [], []
    for user in [f"u{k}" for k in range(40, 48)]:
        excluded = set(rec.user_history(user)) | set(rec.held_out(user, "val"))
        (target,) = rec.held_out(user, "test")
        candidates = [i for i in rec.items() if i not in excluded]
        n_neg = len(candidates) - 1
        model_auc.append(1 - (rec.rank_of(user, target) - 1) / n_neg)
        cand = rec.dataset.items.indices(candidates)
        t = rec.dataset.items.index(target)
        pop_rank = int((popularity[cand] >= popularity[t]).sum())  # the target counts itself: the 1 +
        pop_auc.append(1 - (pop_rank - 1) / n_neg)
    # new users are red; popularity favours blue items (blue users have more interactions)
    assert np.mean(model_auc) > np.mean(pop_auc) + 0.15, (model_auc, pop_auc)
    assert np.mean(model_auc) > 0.6


# --- DDP ------------------------------------------------------------------------------------


def torchrun_two(*args: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node=2 ARGS` from the repository, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ddp_two_processes_on_cpu_write_once_and_match_a_single_process(
    tiny_run: Path, tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    run = tmp_path / "ddp"
    cfg = config(tiny_data, run, tiny_train_kwargs)
    out = torchrun_two("-m", "dvbpr", "train", *cli_args(cfg))
    assert out.returncode == 0, out.stderr[-3000:]
    assert [line for line in out.stdout.splitlines() if line.startswith("finished:")] == [
        f"finished: {run} (best validation AUC {read_status(run)['best_val_auc']})"
    ]

    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == len((tiny_run / "metrics.jsonl").read_text().splitlines())
    keys = [(r["type"], r["step"]) for r in map(json.loads, lines)]
    assert len(keys) == len(set(keys))  # each record once: only rank 0 writes
    status = read_status(run)
    assert status["state"] == "finished" and status["world_size"] == 2
    assert isinstance(status["pid"], int) and status["pid"] != os.getpid()
    assert status["total_steps"] == read_status(tiny_run)["total_steps"]  # same global batch

    ddp, single = epochs_of(run), epochs_of(tiny_run)
    # Same data and batches; dropout masks, hue draws and BatchNorm statistics are per rank. The
    # loss follows the single process closely; one epoch's validation AUC on 40 users swings by
    # 0.2 between seeds even in one process, so only the end result is compared with a bar.
    for a, b in zip(ddp, single):
        assert a["loss"] == pytest.approx(b["loss"], abs=0.1)
    assert ddp[-1]["val_auc"] > 0.65


def test_ddp_trains_with_crop_agreement(tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict) -> None:
    """The crop loss runs outside DDP's forward, on each process's crops against every process's:
    its gradients (the head's too) must still be reduced, or DDP stops with an unfinished
    reduction."""
    run = tmp_path / "ddp-crops"
    cfg = config(tiny_data, run, tiny_train_kwargs, epochs=1, crop_agreement=1.0)
    out = torchrun_two("-m", "dvbpr", "train", *cli_args(cfg))
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["model_config"]["crop_head"] and read_status(run)["state"] == "finished"
    head = [name for name in ckpt["model"] if ".crop_head." in name and name.endswith("weight")]
    assert head and all(torch.isfinite(ckpt["model"][name]).all() for name in head)


def test_distributed_crop_loss_has_the_single_process_gradient() -> None:
    """Each process's crops are negatives for every other process's (tests/ddp_nt_xent.py): two
    processes, their gradients averaged, match one process on the whole batch."""
    out = torchrun_two(str(REPO / "tests" / "ddp_nt_xent.py"))
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert out.stdout.count("local-only differs: True") == 2


def test_process_group_is_left_by_whoever_joined_it(tmp_path: Path) -> None:
    """tests/ddp_process_group.py: train's group is destroyed when training ends (gloo threads
    alive at interpreter exit aborted a rank now and then), a caller's own group is not."""
    out = torchrun_two(str(REPO / "tests" / "ddp_process_group.py"))
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert out.stdout.count("joined True, left True") == 2
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with process_group("cpu") as d:  # the caller's own group: used, and left as it was
            assert d.world == 1
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_ddp_nan_in_one_process_fails_every_process_cleanly(
    tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    run = tmp_path / "ddp-nan"
    cfg = config(tiny_data, run, tiny_train_kwargs, epochs=1)
    out = torchrun_two(str(REPO / "tests" / "ddp_nan_rank.py"), "train", *cli_args(cfg))
    assert out.returncode != 0
    # rank 0 (the writer) saw rank 1's NaN through the all-reduce and failed with a message,
    # instead of waiting in backward until torchrun tore it down
    status = read_status(run)
    assert status["state"] == "failed", status
    assert "loss became nan or inf in another process" in status["message"]


def test_unknown_run_folder_for_init_from(tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        train(config(tiny_data, tmp_path / "x", tiny_train_kwargs, init_from=str(tmp_path / "nope")), progress=False)
    assert read_status(tmp_path / "x")["state"] == "failed"


def test_resume_with_more_epochs_stretches_the_cosine_schedule(
    tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    run = tmp_path / "cosine"
    base = dict(tiny_train_kwargs, lr_schedule="cosine", log_every=1)
    assert train(config(tiny_data, run, base, epochs=1), progress=False)["state"] == "finished"
    steps = [r for r in read_metrics(run) if r["type"] == "step"]
    assert steps[-1]["lr"] < 0.1 * base["lr"]  # a finished one-epoch schedule has annealed
    train(resume_config(run, epochs=2), resume=True, progress=False)
    second = [r for r in read_metrics(run) if r["type"] == "step"][len(steps) :]
    # spread over two epochs: the second epoch starts near half the base rate and anneals to ~0
    assert 0.3 * base["lr"] < second[0]["lr"] < 0.6 * base["lr"]
    assert second[-1]["lr"] < 0.1 * base["lr"]
    assert all(a["lr"] >= b["lr"] for a, b in zip(second, second[1:]))


def test_a_two_stream_run_says_when_colour_is_no_taste_of_the_data(
    capsys, tiny_data: Path, tmp_path: Path, tiny_train_kwargs: dict
) -> None:
    """Users of the tiny helper dataset consume items of unrelated colours: a two-stream run says
    so before it trains; one CNN, or users who keep to one colour (tiny_data), hear nothing."""
    unrelated = make_tiny_dataset(tmp_path / "data", n_users=24, n_items=24, per_user=6)
    kwargs = tiny_train_kwargs | {"epochs": 1}
    for data, colour_stream, noted in ((unrelated, True, True), (unrelated, False, False), (tiny_data, True, False)):
        out = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        status = train(TrainConfig(data=str(data), out=str(out), colour_stream=colour_stream, **kwargs), progress=False)
        printed = capsys.readouterr().out
        assert status["state"] == "finished" and ("hardly a taste" in printed) == noted, (data, colour_stream, printed)
        assert ("hardly a taste" in str(read_status(out).get("note"))) == noted  # for the app's live view
        if noted:
            assert "--no-colour-stream" in printed
