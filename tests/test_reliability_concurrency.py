"""The shared Recommender under concurrent calls (issue 13, section 5).

The app keeps one Recommender per checkpoint for all its sessions (st.cache_resource), and
Streamlit runs each session's script in its own thread. Here 8 threads call it at once, released
together by a barrier on a freshly loaded Recommender (so anything built on first use is built
under contention), many rounds in a shuffled order per thread; every result must equal, ids and
scores bit for bit, what the same call returns when made alone. Adding items while others read
must show each call the catalogue before or after an addition, never a mix.
"""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from dvbpr.recommender import Recommender

THREADS = 8
ROUNDS = 4  # each thread makes every call this many times


def upload(index: int) -> tuple[bytes, str]:
    """A distinct uploaded image (PNG or JPEG) and its file name: a coloured garment-like block
    on white, so each one embeds to its own phi."""
    colour = ((index * 83 + 30) % 256, (index * 47 + 200) % 256, (index * 151 + 90) % 256)
    im = Image.new("RGB", (40 + 6 * index, 56), "white")
    im.paste(colour, (4 + index, 6, 34 + 3 * index, 50))
    fmt = "PNG" if index % 2 else "JPEG"
    buffer = io.BytesIO()
    im.save(buffer, fmt)
    return buffer.getvalue(), f"upload-{index}.{fmt.lower()}"


Call = tuple[str, Callable[[Recommender], object]]


def read_calls(rec: Recommender) -> list[Call]:
    """What the app's pages call on the shared Recommender: recommendations from the top lists
    and by a full scan, users for uploaded images (bytes, embedded on every call), similar items
    to an item and to an upload, held-out items, ranks and explanations."""
    users, items = rec.users(), rec.items()
    calls: list[Call] = []
    for u in users[::3]:
        calls += [
            (f"recommend {u}", lambda r, u=u: r.recommend(u, k=10)),
            (f"recommend scan {u}", lambda r, u=u: r.recommend(u, k=30, exclude_seen=False)),
            (f"recommend among {u}", lambda r, u=u: r.recommend(u, k=5, items=items[::2])),
            (f"held out {u}", lambda r, u=u: (r.held_out(u, "val"), r.held_out(u, "test"))),
        ]
    for i in items[::4]:
        calls.append((f"similar {i}", lambda r, i=i: r.similar_items(item_id=i, k=8)))
    for n in range(6):
        raw, name = upload(n)
        calls += [
            (f"rank users {name}", lambda r, raw=raw, name=name: r.rank_users(raw, k=12, name=name)),
            (f"similar to {name}", lambda r, raw=raw: r.similar_items(image=raw, k=8)),
        ]
    u, raw = users[1], upload(0)[0]
    calls += [
        ("rank of", lambda r: r.rank_of(u, r.held_out(u, "test")[0])),
        ("explain items", lambda r: [(e.heatmap, e.visual_score) for e in r.explain_items(u, items[:3])]),
        ("explain upload", lambda r: (lambda e: (e.heatmap, e.visual_score))(r.explain(u, image=raw))),
    ]
    return calls


def assert_same(label: str, got: object, want: object) -> None:
    """Equal ids and bit-identical arrays (same dtype), recursively through tuples and lists."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype, label
        assert np.array_equal(got, want), f"{label}: {got} != {want}"
    elif isinstance(want, (tuple, list)) and not all(isinstance(x, str) for x in want):
        assert isinstance(got, type(want)) and len(got) == len(want), label
        for g, w in zip(got, want, strict=True):
            assert_same(label, g, w)
    else:
        assert got == want, f"{label}: {got!r} != {want!r}"


def run_threads(work: Callable[[int], None], threads: int = THREADS) -> list[BaseException]:
    """`work(thread_index)` in `threads` threads started together; the errors they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=60)
            work(index)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    pool = [threading.Thread(target=target, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in pool), "a thread did not finish"
    return errors


def test_concurrent_calls_equal_serial_calls(tiny_run: Path) -> None:
    serial = Recommender.from_run(tiny_run, device="cpu")
    calls = read_calls(serial)
    want = {label: call(serial) for label, call in calls}

    shared = Recommender.from_run(tiny_run, device="cpu")  # fresh: its first calls race
    got: list[list[tuple[str, object]]] = [[] for _ in range(THREADS)]

    def work(index: int) -> None:
        order = calls * ROUNDS
        random.Random(index).shuffle(order)
        for label, call in order:
            got[index].append((label, call(shared)))

    errors = run_threads(work)
    assert not errors, errors[:3]
    assert sum(map(len, got)) == THREADS * ROUNDS * len(calls)
    for results in got:
        for label, result in results:
            assert_same(label, result, want[label])


def test_adding_items_while_serving(tiny_run: Path, tiny_data: Path, tiny_copy) -> None:
    """One thread adds items (Recommender.add_item) while 7 read: each read equals the serial
    result on the catalogue after 0, 1, ... or all of the additions."""
    new = [upload(10 + n) for n in range(3)]
    reference = Recommender.from_run(tiny_run, data=tiny_copy(tiny_data, "reference"), device="cpu")
    users, items = reference.users(), reference.items()
    reads: list[Call] = []
    for u in users[::4]:
        reads += [
            (f"recommend {u}", lambda r, u=u: r.recommend(u, k=10)),
            (f"recommend scan {u}", lambda r, u=u: r.recommend(u, k=60, exclude_seen=False)),
        ]
    for i in items[::6]:
        reads.append((f"similar {i}", lambda r, i=i: r.similar_items(item_id=i, k=60)))
    reads.append(("similar to an upload", lambda r: r.similar_items(image=upload(0)[0], k=60)))
    stages = [{label: read(reference) for label, read in reads}]  # after 0, 1, ... additions
    for n, (raw, _) in enumerate(new):
        reference.add_item(raw, item_id=f"added-{n}")
        stages.append({label: read(reference) for label, read in reads})
    assert not all(_equal(stages[0][label], stages[-1][label]) for label, _ in reads)  # the additions show

    shared = Recommender.from_run(tiny_run, data=tiny_copy(tiny_data, "shared"), device="cpu")
    done = threading.Event()
    seen: list[tuple[str, object]] = []

    def work(index: int) -> None:
        if index == 0:
            try:
                for n, (raw, _) in enumerate(new):
                    shared.add_item(raw, item_id=f"added-{n}")
            finally:
                done.set()
            return
        rng = random.Random(index)
        while not done.is_set():
            label, read = rng.choice(reads)
            seen.append((label, read(shared)))

    errors = run_threads(work)
    assert not errors, errors[:3]
    assert shared.items() == reference.items()
    assert seen
    for label, result in seen:
        assert any(_equal(result, stage[label]) for stage in stages), f"{label}: no catalogue state gives {result}"


def _equal(got: object, want: object) -> bool:
    try:
        assert_same("", got, want)
    except AssertionError:
        return False
    return True
