"""Embedding diagnostics: is the visual embedding phi(X_i) collapsed, and what does it encode?

A DVBPR model can score well while its CNN maps every item onto a handful of directions: the
ranking then only follows what those directions encode (say colour), and the embedding map, the
similar-items lists and cold-start ranking inherit the collapse. These numbers show it at a glance:

- `participation_ratio`: the effective number of dimensions of phi (1 = a line, K = isotropic);
- `variance_share`: how much of phi's variance its top principal components hold;
- `near_duplicate_share`: how many item pairs phi cannot tell apart (cosine above a threshold);
- `neighbour_agreement` vs `chance_agreement`: which catalogue columns (colour, pattern, ...)
  an item's nearest neighbour shares, against what a random other item would;
- `linear_probe`: whether those columns can be read off phi along straight directions (held-out
  accuracy of a softmax regression), which is what a user's theta_u needs;
- `colour_coherence`: a property of the data, not of the model: how much more alike in colour a
  user's training items are than random pairs of consumed items (is colour a taste here?);
- `taste_lifts`: on generated data with `hidden_tastes.json`, whether the model's top lists
  follow the users' hidden tastes (colour, pattern, category), beside the training data's own
  lift (what a model could learn).

`embedding_report(rec)` runs them all on a `Recommender`; `format_report` prints the result.
Everything here is numpy/torch, cheap enough for a 350k x 100 embedding (the PCA comes from the
K x K covariance, the neighbour searches are chunked products on a sample of items).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .images import to_model_input
from .model import TwoStreamCNN

if TYPE_CHECKING:
    from .recommender import Recommender

TASTES_FILE = "hidden_tastes.json"
VARIANCE_KS = (1, 3, 5, 10)
NEAR_DUPLICATE_THRESHOLD = 0.99
DEAD_UNIT_IMAGES = 512  # catalogue images a unit must stay silent on to count as dead
"""Cosine above which two items count as near duplicates in the report."""
COLLAPSED_PR = 10.0
"""Participation ratio under which an embedding counts as collapsed (the app warns)."""
COLLAPSED_NEAR_DUPLICATES = 0.01
"""Share of near-duplicate item pairs over which an embedding counts as collapsed."""
SKIPPED_COLUMNS = ("item_id", "title", "image")
COLOUR_LEVELS = 4  # per RGB channel: a 64-bin colour histogram
BACKGROUND = 236  # pixels with every channel at least this count as the white background
COLOUR_TASTE_EXCESS = 0.05
"""Excess colour similarity of a user's items under which colour hardly is a taste of the data
(measured: 0.015 on the emoji data, where the colour stream costs ranking, 0.31 on the default
data, where colour is the users' first taste; docs/training.md)."""

Embedding = torch.Tensor | np.ndarray
_ROWS = 65_536  # rows per chunk of the covariance (bounds the float64 copy)
_QUERIES = 1_024  # query rows per chunk of a similarity matrix
_SCORES = 1 << 25  # at most this many similarities (128 MB) per chunk


# ----------------------------------------------------------------------------- spectrum
def _as_tensor(phi: Embedding) -> torch.Tensor:
    t = torch.as_tensor(phi)
    if t.ndim != 2:
        raise ValueError(f"phi must be (n_items, K), got shape {tuple(t.shape)}")
    return t.detach()


def covariance_eigenvalues(phi: Embedding) -> np.ndarray:
    """Eigenvalues (descending, float64) of the centred phi's K x K scatter matrix, i.e. the
    squared singular values s^2 of phi - mean: accumulated in row chunks so a 350k x 100 phi
    costs one pass and K x K memory, not an SVD of the whole matrix."""
    x = _as_tensor(phi)
    mean = x.double().mean(0) if len(x) else torch.zeros(x.shape[1], dtype=torch.float64)
    scatter = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, len(x), _ROWS):
        c = x[start : start + _ROWS].double() - mean
        scatter += c.T @ c
    eig = torch.linalg.eigvalsh(scatter.cpu()).numpy()[::-1]
    return np.clip(eig, 0.0, None)  # round-off can leave tiny negatives


def _participation(eig: np.ndarray) -> float:
    total = float(eig.sum())
    return total * total / float((eig * eig).sum()) if total > 0 else 0.0


def _shares(eig: np.ndarray, ks: Iterable[int]) -> dict[int, float]:
    total = float(eig.sum())
    cum = np.cumsum(eig)
    return {int(k): (float(cum[min(k, len(eig)) - 1]) / total if total > 0 else 1.0) for k in ks}


def participation_ratio(phi: Embedding) -> float:
    """(sum s^2)^2 / sum s^4 over the centred phi's singular values s: the effective number of
    dimensions (1 for a rank-1 embedding, K for an isotropic one; 0 for a constant phi)."""
    return _participation(covariance_eigenvalues(phi))


def variance_share(phi: Embedding, ks: Sequence[int] = VARIANCE_KS) -> dict[int, float]:
    """{k: share of phi's variance in its top-k principal components} (1.0 for k >= K)."""
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {tuple(ks)}")
    return _shares(covariance_eigenvalues(phi), ks)


# --------------------------------------------------------------------------- similarity
def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (a zero row stays zero), float32."""
    x = x.float()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    """All of 0..n-1 when n <= size, else a fixed random sample of `size` of them, sorted."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def near_duplicate_share(
    phi: Embedding, threshold: float = NEAR_DUPLICATE_THRESHOLD, sample: int = 2000, seed: int = 0
) -> float:
    """Share of distinct item pairs whose cosine exceeds `threshold`: pairs the embedding cannot
    tell apart. Exact on up to `sample` items, else over the pairs of a fixed random sample."""
    x = _as_tensor(phi)
    rows = _sample(len(x), sample, seed)
    if len(rows) < 2:
        return 0.0
    u = _unit(x[torch.as_tensor(rows, device=x.device)])
    count = 0
    with torch.inference_mode():
        for start in range(0, len(u), _QUERIES):
            sims = u[start : start + _QUERIES] @ u[start + 1 :].T  # row r pairs with later items only
            later = (
                torch.arange(sims.shape[1], device=u.device)[None, :]
                >= torch.arange(sims.shape[0], device=u.device)[:, None]
            )
            count += int(((sims > threshold) & later).sum())
    n = len(rows)
    return count / (n * (n - 1) / 2)


def nearest_neighbours(phi: Embedding, queries: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """For each query row, the index (into phi) of its nearest other row by cosine among
    `candidates` (default: all rows), self excluded; -1 when there is no other candidate."""
    x = _as_tensor(phi)
    cand = np.arange(len(x)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    queries = np.asarray(queries, dtype=np.int64)
    out = np.full(len(queries), -1, dtype=np.int64)
    if len(cand) == 0 or len(queries) == 0:
        return out
    dev = x.device
    pool = _unit(x[torch.as_tensor(cand, device=dev)])
    pos = np.full(len(x), -1, dtype=np.int64)
    pos[cand] = np.arange(len(cand))  # a query's own column in the candidate pool, if any
    step = max(1, min(_QUERIES, _SCORES // len(cand)))  # a (step, candidates) block at a time
    with torch.inference_mode():
        for start in range(0, len(queries), step):
            q = queries[start : start + step]
            sims = _unit(x[torch.as_tensor(q, device=dev)]) @ pool.T
            own = pos[q]
            inside = np.flatnonzero(own >= 0)
            sims[torch.as_tensor(inside, device=dev), torch.as_tensor(own[inside], device=dev)] = -torch.inf
            best = sims.max(dim=1)
            found = torch.isfinite(best.values).cpu().numpy()
            out[start : start + len(q)] = np.where(found, cand[best.indices.cpu().numpy()], -1)
    return out


def chance_agreement(labels: Sequence[Any]) -> float:
    """Probability that two distinct items drawn at random share a label:
    sum_v n_v (n_v - 1) / (N (N - 1)). Missing labels (None or "") are left out."""
    counts = np.array(list(Counter(v for v in labels if not _missing(v)).values()), dtype=np.float64)
    n = counts.sum()
    return float((counts * (counts - 1)).sum() / (n * (n - 1))) if n >= 2 else float("nan")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "") or (isinstance(v, float) and v != v)


def neighbour_agreement(
    phi: Embedding, labels: Sequence[Any], sample: int = 5000, seed: int = 0, _cache: dict | None = None
) -> dict[str, float | int]:
    """Share of (sampled) items whose nearest other item by cosine has the same label, beside
    `chance_agreement`: what the embedding's neighbourhoods encode. Items with a missing label
    are left out as queries and as neighbours. Returns {agreement, chance, items, missing}."""
    labels = list(labels)
    x = _as_tensor(phi)
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} labels for {len(x)} items")
    present = np.array([not _missing(v) for v in labels], dtype=bool)
    known = np.flatnonzero(present)
    queries = known[_sample(len(known), sample, seed)]
    key = present.tobytes()
    if _cache is not None and key in _cache:  # columns with the same labelled items share it
        nn = _cache[key]
    else:
        nn = nearest_neighbours(x, queries, known)
        if _cache is not None:
            _cache[key] = nn
    codes = {v: c for c, v in enumerate(dict.fromkeys(labels[i] for i in known))}
    code = np.array([codes.get(v, -1) if p else -1 for v, p in zip(labels, present)])
    has = nn >= 0
    agreement = float((code[queries[has]] == code[nn[has]]).mean()) if has.any() else float("nan")
    return {
        "agreement": agreement,
        "chance": chance_agreement([labels[i] for i in known]),
        "items": int(has.sum()),
        "missing": int((~present).sum()),
    }


def linear_probe(
    phi: Embedding, labels: Sequence[Any], sample: int = 5000, seed: int = 0, l2: float = 1e-3
) -> dict[str, float | int]:
    """Held-out accuracy of a softmax regression from phi to the labels, beside the majority
    class's share: whether the attribute lies along directions of phi, which is what a user's
    linear theta_u needs (a neighbourhood can hold it while no direction does). Standardised
    phi of (sampled) labelled items in a random order, 3/4 fitted with L-BFGS, 1/4 scored (a
    split in catalogue order would score classes never fitted wherever items.csv is sorted by
    the label, as real catalogues often are). Returns {accuracy, majority, items}."""
    labels = list(labels)
    x = _as_tensor(phi).float().cpu()
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} labels for {len(x)} items")
    known = np.flatnonzero([not _missing(v) for v in labels])
    rows = np.random.default_rng(seed).permutation(known[_sample(len(known), sample, seed)])
    codes = {v: c for c, v in enumerate(dict.fromkeys(labels[i] for i in rows))}
    y = torch.tensor([codes[labels[i]] for i in rows])
    n_fit = (3 * len(rows)) // 4
    if len(codes) < 2 or len(rows) - n_fit < 1:
        return {"accuracy": float("nan"), "majority": float("nan"), "items": int(len(rows))}
    z = x[torch.as_tensor(rows)]
    z = (z - z[:n_fit].mean(0)) / (z[:n_fit].std(0) + 1e-6)
    with torch.enable_grad():
        weight = torch.zeros(z.shape[1] + 1, len(codes), requires_grad=True)
        fit = torch.cat([z[:n_fit], torch.ones(n_fit, 1)], 1)
        opt = torch.optim.LBFGS([weight], max_iter=200, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            opt.zero_grad()
            value = F.cross_entropy(fit @ weight, y[:n_fit]) + l2 * weight[:-1].pow(2).sum()
            value.backward()
            return value

        opt.step(loss)
    test = torch.cat([z[n_fit:], torch.ones(len(z) - n_fit, 1)], 1)
    with torch.inference_mode():
        accuracy = float(((test @ weight).argmax(1) == y[n_fit:]).float().mean())
    majority = float(torch.bincount(y[n_fit:]).max()) / (len(rows) - n_fit)
    return {"accuracy": accuracy, "majority": majority, "items": int(len(rows))}


# ------------------------------------------------------------------------------ tastes
def taste_attribute(key: str) -> str:
    """The item attribute of a user's taste key: plural -> singular ("categories" ->
    "category", "colours" -> "colour")."""
    if key.endswith("ies"):
        return key[:-3] + "y"
    return key[:-1] if key.endswith("s") else key


def taste_lifts(
    top_ids: Mapping[str, Sequence[str]],
    train_items_per_user: Mapping[str, Sequence[str]],
    tastes: Mapping[str, Mapping[str, Any]],
    item_attributes: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, float | int]]:
    """Whether top lists follow the users' hidden tastes, per taste key ("colours", ...).

    `tastes`: user id -> {"colours": [...], "patterns": [...], ...} (hidden_tastes.json's
    "users"); `item_attributes`: item id -> {"colour": ..., ...} (its "items"). A taste key is
    used when its values are lists and items carry its singular. Per key, over the users with
    favourites: top_share = mean share of a user's top items whose value is a favourite,
    catalogue_share = mean share of the catalogue in the user's favourite values (what a random
    list would get), lift = top_share / catalogue_share; interactions_share / interactions_lift
    are the same for the users' training items (the signal a model could learn)."""
    keys = sorted({k for t in tastes.values() for k, v in t.items() if isinstance(v, (list, tuple))})
    out: dict[str, dict[str, float | int]] = {}
    for key in keys:
        attr = taste_attribute(key)
        value = {i: a[attr] for i, a in item_attributes.items() if not _missing(a.get(attr))}
        if not value:
            continue
        counts = Counter(value.values())
        top, top_cat, inter, inter_cat = [], [], [], []
        for user, taste in tastes.items():
            fav = set(taste.get(key) or ())
            if not fav:
                continue
            catalogue = sum(counts[v] for v in fav) / len(value)
            for lists, shares, cats in ((top_ids, top, top_cat), (train_items_per_user, inter, inter_cat)):
                vals = [value[i] for i in lists.get(user, ()) if i in value]
                if vals:
                    shares.append(np.mean([v in fav for v in vals]))
                    cats.append(catalogue)
        if not top:
            continue
        row = {"top_share": float(np.mean(top)), "catalogue_share": float(np.mean(top_cat)), "users": len(top)}
        row["lift"] = row["top_share"] / row["catalogue_share"] if row["catalogue_share"] else float("nan")
        row["interactions_share"] = float(np.mean(inter)) if inter else float("nan")
        row["interactions_lift"] = (
            row["interactions_share"] / float(np.mean(inter_cat)) if inter and np.mean(inter_cat) else float("nan")
        )
        out[key] = row
    return out


# ------------------------------------------------------------------------------ report
def colour_histograms(images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(n, 64) colour histograms of the uint8 (h, w, 3) images `images[rows]` (all by default),
    each channel in `COLOUR_LEVELS` levels, the white background left out; square-rooted and
    scaled to unit length, so that a dot product is the Bhattacharyya coefficient of two colour
    distributions (0 for an all-white image). Read in chunks: `images` may be a large memmap."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    n = len(rows)
    bins = COLOUR_LEVELS**3
    out = np.zeros((n, bins))
    for start in range(0, n, 1024):
        chunk = np.asarray(images[rows[start : start + 1024]])
        level = chunk.astype(np.int64) * COLOUR_LEVELS // 256
        code = (level[..., 0] * COLOUR_LEVELS + level[..., 1]) * COLOUR_LEVELS + level[..., 2]
        code = code + bins * np.arange(len(chunk))[:, None, None]
        keep = chunk.min(axis=-1) < BACKGROUND
        counts = np.bincount(code[keep], minlength=bins * len(chunk)).reshape(len(chunk), bins)
        out[start : start + len(chunk)] = np.sqrt(counts / np.maximum(counts.sum(1, keepdims=True), 1))
    return out


def colour_coherence(
    images: np.ndarray, train: np.ndarray, users: int = 2000, pairs: int = 20000, seed: int = 0
) -> dict[str, float | int] | None:
    """Is colour a taste of the data? The mean colour similarity (`colour_histograms`) of two
    training items of one user (averaged per user, over up to `users` users with two or more
    items), against two random training interactions of different users, so that both sides
    weigh items by popularity. `excess` = (within - random) / (1 - random): 0 when a user's items
    are no more alike in colour than anyone's, 1 when each user's items share one colour.
    None without a user of two items or without two users. `images` (n_items, h, w, 3) uint8
    may be a memmap: only the items drawn are read."""
    rng = np.random.default_rng(seed)
    u, i = train[:, 0], train[:, 1]
    order = np.argsort(u, kind="stable")
    u, i = u[order], i[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    ends = np.r_[starts[1:], len(u)]
    several = np.flatnonzero(ends - starts >= 2)
    if len(several) == 0:
        return None
    chosen = np.sort(rng.choice(several, size=min(users, len(several)), replace=False))
    a, b = rng.integers(0, len(u), size=(2, pairs))
    other = u[a] != u[b]
    if not other.any():
        return None
    a, b = a[other], b[other]
    drawn = np.concatenate([i[starts[k] : ends[k]] for k in chosen] + [i[a], i[b]])
    needed = np.unique(drawn)
    hist = colour_histograms(images, needed)  # row r: item needed[r]

    def rows(items: np.ndarray) -> np.ndarray:
        return hist[np.searchsorted(needed, items)]

    within = []
    for k in chosen:  # mean over pairs p != q of h_p . h_q = (|sum h|^2 - sum |h|^2) / (m (m - 1))
        h = rows(i[starts[k] : ends[k]])
        m = len(h)
        within.append((np.square(h.sum(0)).sum() - np.square(h).sum()) / (m * (m - 1)))
    w = float(np.mean(within))
    r = float((rows(i[a]) * rows(i[b])).sum(1).mean())
    return {"within_user": w, "random_pairs": r, "excess": (w - r) / (1 - r) if r < 1 else 0.0, "users": len(chosen)}


def categorical_columns(table: Mapping[str, Sequence[str]], n_items: int) -> dict[str, list[str]]:
    """The catalogue columns worth comparing neighbours on: all but item_id/title/image with
    between 2 and n_items / 2 distinct non-empty values (not constants, not per-item ids)."""
    out = {}
    for name, values in table.items():
        if name in SKIPPED_COLUMNS:
            continue
        distinct = len({v for v in values if not _missing(v)})
        if 2 <= distinct <= n_items / 2:
            out[name] = list(values)
    return out


@torch.inference_mode()
def dead_units(cnn: torch.nn.Module, images: torch.Tensor, batch_size: int = 128) -> dict[str, float]:
    """Share of each ReLU layer's units (channels of a conv layer, neurons of an fc layer) that
    never fire on `images`, in eval mode: a dead unit carries nothing into phi. Layers are named
    conv1.., fc1.. in forward order, prefixed by the stream in a two-stream CNN ("colour.conv1").
    Works on a copy: hooks on a Recommender's shared CNN would also fire for other threads' calls."""
    cnn = copy.deepcopy(cnn).eval()
    named = [(name, m) for name, m in cnn.named_modules() if isinstance(m, torch.nn.ReLU)]
    streams = [name.split(".")[0] + "." if isinstance(cnn, TwoStreamCNN) else "" for name, _ in named]
    relus = [m for _, m in named]
    fired: list[torch.Tensor | None] = [None] * len(relus)
    kinds: list[str] = [""] * len(relus)

    def hook(index: int):
        def record(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            conv = output.dim() == 4
            active = (output > 0).flatten(2).any(2).any(0) if conv else (output > 0).any(0)
            fired[index] = active if fired[index] is None else fired[index] | active
            kinds[index] = "conv" if conv else "fc"

        return record

    for j, m in enumerate(relus):
        m.register_forward_hook(hook(j))
    for start in range(0, len(images), batch_size):
        cnn(images[start : start + batch_size])
    result: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for active, kind, stream in zip(fired, kinds, streams):
        if active is None:
            continue
        counts[stream + kind] += 1
        result[f"{stream}{kind}{counts[stream + kind]}"] = float(1.0 - active.float().mean())
    return result


def embedding_report(
    rec: Recommender, k: int = 20, sample: int = 5000, threshold: float = NEAR_DUPLICATE_THRESHOLD, seed: int = 0
) -> dict[str, Any]:
    """All the diagnostics of a Recommender's phi, as a JSON-able dict (see the module doc).

    `sample` bounds the items searched for neighbours and near duplicates, and the users whose
    top-`k` lists are checked against hidden_tastes.json (present on generated datasets only)."""
    ds = rec.dataset
    phi = rec.phi
    eig = covariance_eigenvalues(phi)
    K = int(phi.shape[1])
    pr = _participation(eig)
    report: dict[str, Any] = {
        "items": int(ds.n_items),
        "K": K,
        "participation_ratio": pr,
        "variance_share": {str(j): s for j, s in _shares(eig, VARIANCE_KS).items()},
        "near_duplicate_threshold": float(threshold),
        "near_duplicate_share": near_duplicate_share(phi, threshold, sample=sample, seed=seed),
        "sample": int(sample),
    }
    report["collapsed"] = bool(pr < COLLAPSED_PR or report["near_duplicate_share"] > COLLAPSED_NEAR_DUPLICATES)
    probe = _sample(ds.n_items, DEAD_UNIT_IMAGES, seed)
    report["dead_units"] = dead_units(rec.model.cnn, to_model_input(rec.store.batch(probe)).to(rec.device))
    report["dead_unit_images"] = len(probe)
    cache: dict = {}
    columns = categorical_columns(ds.item_table(), ds.n_items)
    report["neighbour_agreement"] = {
        name: neighbour_agreement(phi, labels, sample=sample, seed=seed, _cache=cache)
        for name, labels in columns.items()
    }
    report["linear_probe"] = {
        name: linear_probe(phi, labels, sample=sample, seed=seed) for name, labels in columns.items()
    }
    coherence = colour_coherence(rec.store.array, ds.train, users=sample, seed=seed)
    if coherence is not None:
        report["colour_coherence"] = coherence
        report["colour_stream"] = isinstance(rec.model.cnn, TwoStreamCNN)
    path = ds.root / TASTES_FILE
    if path.is_file():
        hidden = json.loads(path.read_text())
        users = [u for u in ds.users.ids if u in hidden.get("users", {})]
        users = [users[j] for j in _sample(len(users), sample, seed)]
        if users:
            top, _ = rec.recommend_batch(users, k)
            lifts = taste_lifts(
                dict(zip(users, top)),
                {u: rec.user_history(u) for u in users},
                {u: hidden["users"][u] for u in users},
                hidden.get("items", {}),
            )
            if lifts:
                report["taste_lifts"] = lifts
                report["taste_k"] = int(k)
    return report


def colour_summary(coherence: Mapping[str, Any]) -> str:
    """`colour_coherence` in words, as the report and the app show it."""
    return (
        f"two training items of one user have colour similarity {coherence['within_user']:.3f}, "
        f"two random consumed items {coherence['random_pairs']:.3f} (excess {coherence['excess']:.3f})"
    )


def colour_note(coherence: Mapping[str, Any] | None, colour_stream: bool) -> str | None:
    """Advice for a model with the colour stream on data whose users have no colour taste
    (`colour_coherence` excess under `COLOUR_TASTE_EXCESS`); None otherwise."""
    if not colour_stream or not coherence or coherence["excess"] >= COLOUR_TASTE_EXCESS:
        return None
    return (
        f"Colour is hardly a taste in this data (excess {coherence['excess']:.2f} < {COLOUR_TASTE_EXCESS:g}): "
        "the colour stream may cost ranking here; compare a run with --no-colour-stream (docs/training.md)"
    )


def format_report(report: Mapping[str, Any]) -> str:
    """The report as lines for the terminal."""
    pr, K = report["participation_ratio"], report["K"]
    shares = ", ".join(f"top {k}: {s:.1%}" for k, s in report["variance_share"].items())
    lines = [
        "embedding health (phi)",
        f"  participation ratio  {pr:.1f} of K={K}",
        f"  variance share       {shares}",
        f"  near duplicates      {report['near_duplicate_share']:.2%} of item pairs with cosine > "
        f"{report['near_duplicate_threshold']:g}",
    ]
    if report.get("collapsed"):
        lines.append(
            f"  warning: the embedding looks collapsed (participation ratio under {COLLAPSED_PR:g} "
            f"or over {COLLAPSED_NEAR_DUPLICATES:.0%} near-duplicate pairs)"
        )
    if report.get("dead_units"):
        lines.append(
            f"  dead ReLU units (never fire on {report['dead_unit_images']} catalogue images)  "
            + ", ".join(f"{name} {share:.0%}" for name, share in report["dead_units"].items())
        )
    if report.get("neighbour_agreement"):
        lines.append("  nearest neighbour shares the item's ...   agreement   chance   items")
        for name, row in report["neighbour_agreement"].items():
            lines.append(f"    {name:<38} {row['agreement']:10.3f} {row['chance']:8.3f} {row['items']:7d}")
    if report.get("linear_probe"):
        lines.append("  a linear read-out of phi predicts the item's ...   accuracy   majority")
        for name, row in report["linear_probe"].items():
            lines.append(f"    {name:<47} {row['accuracy']:9.3f} {row['majority']:10.3f}")
    colour = report.get("colour_coherence")
    if colour:
        lines.append(f"  colour in the data: {colour_summary(colour)}")
        note = colour_note(colour, report.get("colour_stream", False))
        if note:
            lines.append(f"  {note}")
    if report.get("taste_lifts"):
        lines.append(
            f"  hidden tastes in the top-{report.get('taste_k', 20)} lists (share / catalogue = lift; "
            "training interactions' own share and lift)"
        )
        for name, row in report["taste_lifts"].items():
            lines.append(
                f"    {name:<14} {row['top_share']:.3f} / {row['catalogue_share']:.3f} = "
                f"{row['lift']:5.2f}   interactions {row['interactions_share']:.3f}, "
                f"lift {row['interactions_lift']:.2f}"
            )
    return "\n".join(lines)
