"""Shared session fixtures: one tiny two-community dataset and one tiny trained run.

The dataset has "red" and "blue" items (solid images in distinct shades) and users who each
stick to one colour, so even a 2-epoch CNN-F-small run on 32 px images learns something real.
Fixtures are named `tiny_*`; tests that change files work on copies (`tiny_copy`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

# One thread per process (training subprocesses inherit it): on a machine shared with other
# work, several spinning OpenMP threads per process make tiny models ten times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tests.helpers import write_csv, write_image  # noqa: E402

THREADS = int(os.environ["OMP_NUM_THREADS"])
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    """The same torch thread count in every test: fitting UMAP in this process (test_embedmap)
    raises it, and a run trained with more threads reduces in another order, so it would no
    longer equal the session's `tiny_run` (the resume tests compare the two)."""
    torch.set_num_threads(THREADS)


# 160 training interactions: 10 steps per epoch at batch 16, about a second per epoch on a CPU.
# negatives="all": the tiny data's quality checks were calibrated with the paper's pool, under
# which its 4 cold items take part in training as negatives.
TINY_TRAIN = dict(
    arch="cnnf-small",
    image_size=32,
    dim=8,
    cf_dim=8,
    epochs=3,
    batch_size=16,
    lr=0.003,
    l2_theta=0.01,
    device="cpu",
    log_every=5,
    seed=0,
    negatives="all",
)


def is_red(item: int) -> bool:
    return item % 2 == 0


def item_colour(item: int) -> tuple[int, int, int]:
    shade = (180 + (item * 7) % 60, 10 + (item * 11) % 50, 20 + (item * 5) % 40)
    return shade if is_red(item) else (shade[1], shade[2], shade[0])


def make_community_dataset(
    root: Path, *, n_users: int = 40, n_items: int = 48, new_users: int = 0, new_items: int = 0, seed: int = 0
) -> Path:
    """Users u0.. alternate red/blue (red users have 5 interactions, blue 7, so popularity
    favours blue); the last 4 base items are never interacted with (cold). `new_users` (all red)
    and `new_items` come first in the files, so they take the low indices of a grown dataset
    and matching by id is not matching by index. Rows: each user's in time order."""
    root = Path(root)
    base_items, all_items = list(range(n_items - 4)), list(range(n_items + new_items))
    rows: list[dict] = []

    def add_user(u: int, red: bool, pool: list[int], count: int) -> None:
        rng = np.random.default_rng([seed, u])
        choices = [j for j in pool if is_red(j) == red]
        for j in rng.choice(choices, size=count, replace=False):
            rows.append({"user_id": f"u{u}", "item_id": f"i{j}", "timestamp": 1_700_000_000 + 60 * len(rows)})

    for u in range(n_users, n_users + new_users):
        add_user(u, True, all_items, 5)
    for u in range(n_users):
        add_user(u, u % 2 == 0, base_items, 5 if u % 2 == 0 else 7)
    write_csv(root / "interactions.csv", rows)
    order = list(range(n_items, n_items + new_items)) + list(range(n_items))
    write_csv(
        root / "items.csv",
        [{"item_id": f"i{j}", "category": "red" if is_red(j) else "blue", "title": f"Item {j}"} for j in order],
    )
    for j in all_items:
        write_image(root / "images" / f"i{j}.png", item_colour(j))
    return root


@pytest.fixture(scope="session")
def tiny_make_dataset() -> Callable[..., Path]:
    """The dataset builder, for tests that need a variant (e.g. a grown dataset)."""
    return make_community_dataset


@pytest.fixture(scope="session")
def tiny_train_kwargs() -> dict:
    """TrainConfig fields of the shared run (copy before changing)."""
    return dict(TINY_TRAIN)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_data(tiny_root: Path) -> Path:
    return make_community_dataset(tiny_root / "data")


@pytest.fixture(scope="session")
def tiny_run(tiny_root: Path, tiny_data: Path) -> Path:
    """A finished 2-epoch run on `tiny_data`: treat as read-only (copy it to change it)."""
    from dvbpr.config import TrainConfig
    from dvbpr.train import train

    out = tiny_root / "runs" / "base"
    status = train(TrainConfig(data=str(tiny_data), out=str(out), **TINY_TRAIN), progress=False)
    assert status["state"] == "finished", status
    return out


@pytest.fixture(scope="session")
def tiny_rec(tiny_run: Path):
    from dvbpr.recommender import Recommender

    return Recommender.from_run(tiny_run, device="cpu")


@pytest.fixture
def tiny_copy(tmp_path: Path) -> Callable[[Path, str], Path]:
    """Copy a dataset or run folder into this test's tmp_path."""

    def copy(src: Path, name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock", "cache"))
        return dst

    return copy
