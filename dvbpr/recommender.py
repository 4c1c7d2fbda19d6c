"""The recommender API in id space (ids in, lists and numpy arrays out); the app and the CLI
both sit on it.

`Recommender.from_run(run_dir)` loads a checkpoint and its dataset, computes phi(X_i) for every
item once (cached on disk, keyed by the checkpoint's bytes and the images) and folds the model
into factor matrices (`DVBPR.serving_factors`), so a user's scores over the whole catalogue are
one matrix-vector product:

    score(u, i) = [theta_u, gamma_u] . [phi_i, gamma_i] + beta_i

Items with no training interaction (cold) have untrained gamma_i and beta_i: they are scored as
an uploaded image is, with gamma_i = 0 and beta_i = the mean bias of the warm items. An uploaded
image is embedded once (`cold_item`) and reused for ranking users, similar items and the map.

Serving: an exact scan of a large catalogue reads every item's factors per user. So every
user's top lists (training items excluded) can be precomputed once per checkpoint, in chunks of
users, and cached beside phi: `recommend` is then a lookup. Small catalogues get them at load
time; `python -m dvbpr precompute RUN_DIR` builds them for large ones. Calls the lists cannot
answer (`items=`, `exclude_seen=False`, k beyond the lists) scan exactly.

The catalogue may grow after training (`dvbpr.catalogue.add_item`, or `add_item` here): items
appended to it with no interaction are served at once as cold items. phi is computed for them
only, and each is inserted into the top lists of the users who score it above their last entry,
instead of recomputing the lists. `explain` shows where in an image a user's visual score comes
from (`dvbpr.explain`).

Threads: one Recommender serves many at once (the app shares one per checkpoint between its
sessions). Reads take no lock: the state that `add_item` grows (dataset, images, phi, factors, top
lists) is one immutable snapshot, read once per call and replaced whole, so a call running while
an item is added sees the catalogue before or after it, never a mix. Writers take turns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from .catalogue import add_item as add_to_catalogue
from .checkpoint import dataset_signature, load_checkpoint, model_from_checkpoint
from .data import Dataset, load_dataset
from .errors import DataError, DatasetChangedError, DVBPRError
from .evaluate_core import MAX_CHUNK_SCORES
from .explain import Explanation, explain_pixels
from .features import ImageBatches, embed_items, embed_pixels, resolve_device
from .fsutil import atomic_write_bytes, file_hash
from .images import ImageStore, load_image
from .model import DVBPR, ServingFactors
from .rundir import CACHE, find_checkpoint, find_run_data, recorded_data

ImageInput = str | Path | bytes | BinaryIO

TOP_LIST_K = 100
"""Length of the precomputed top lists: `recommend` with k up to this is a lookup."""

AUTO_TOP_LIST_SCORES = 200_000_000
"""users x items up to which `from_run` precomputes the top lists at load (about a second)."""


@dataclass(frozen=True)
class ColdItem:
    """A new image, embedded once (`Recommender.cold_item`): pass it to `rank_users`,
    `similar_items(image=...)` and `embedmap.place` instead of the image."""

    pixels: np.ndarray  # uint8 (size, size, 3): the image as the model sees it
    phi: np.ndarray  # (K,) float32: its visual features
    user_scores: np.ndarray  # (n_users,) float32 in the order of `users()`: theta_u . phi + the mean warm bias


@dataclass(frozen=True)
class _Catalogue:
    """What `add_item` grows, replaced whole (see the module's "Threads")."""

    dataset: Dataset
    store: ImageStore
    phi: torch.Tensor
    factors: ServingFactors
    top_ids: np.ndarray | None = None  # (n_users, K) item indices, best first, -1 padded
    top_scores: np.ndarray | None = None


class Recommender:
    def __init__(
        self,
        model: DVBPR,
        dataset: Dataset,
        store: ImageStore,
        phi: torch.Tensor,
        checkpoint: dict,
        checkpoint_path: Path,
    ):
        self.model = model
        self.checkpoint, self.checkpoint_path = checkpoint, checkpoint_path
        self.device = phi.device
        cold = torch.as_tensor(dataset.cold_items, device=self.device)
        trained = model.cfg.n_items  # the items after these were added to the catalogue since
        factors = _with_new_items(model.serving_factors(phi[:trained], cold[:trained]), phi[trained:])
        self._train_ptr, self._train_idx = dataset.user_items("train")  # the same for a grown catalogue
        self._cat = _Catalogue(dataset, store, phi, factors)
        self._write_lock = threading.RLock()  # add_item, precompute_top_lists: one at a time

    def _publish(self, **changes: object) -> None:
        """Replace fields of the snapshot (a writer's last step: readers see all changes or none)."""
        with self._write_lock:
            self._cat = dataclasses.replace(self._cat, **changes)

    # Each property reads the current snapshot: a call that needs several fields reads `_cat` once.
    @property
    def dataset(self) -> Dataset:
        return self._cat.dataset

    @property
    def store(self) -> ImageStore:
        return self._cat.store

    @property
    def phi(self) -> torch.Tensor:
        """phi(X_i) of every catalogue item, (n_items, K) on `device`."""
        return self._cat.phi

    @property
    def factors(self) -> ServingFactors:
        return self._cat.factors

    @property
    def top_ids(self) -> np.ndarray | None:
        """(n_users, K) item indices of the precomputed top lists, best first, -1 padded (or None)."""
        return self._cat.top_ids

    @top_ids.setter
    def top_ids(self, value: np.ndarray | None) -> None:
        self._publish(top_ids=value)

    @property
    def top_scores(self) -> np.ndarray | None:
        return self._cat.top_scores

    @top_scores.setter
    def top_scores(self, value: np.ndarray | None) -> None:
        self._publish(top_scores=value)

    @property
    def new_item_bias(self) -> torch.Tensor:
        """The bias of an item that has only an image: the mean warm item bias (0-dim tensor)."""
        return self.factors.new_item_bias

    # ------------------------------------------------------------------------- loading
    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        data: str | Path | None = None,
        device: str = "auto",
        progress: bool = False,
        top_lists: bool | None = None,
    ) -> Recommender:
        """Load a run folder (best.pt, else last.pt) with its dataset: `data` when given, else
        the one the run records, found as `dvbpr.rundir` describes.

        `top_lists`: None loads the cached top lists, or computes and caches them when the
        catalogue is small (users x items <= AUTO_TOP_LIST_SCORES); True always has them (computed
        and cached if missing); False does without (every `recommend` scans)."""
        path = find_checkpoint(run_dir)
        ckpt = load_checkpoint(path)
        data_path = find_run_data(path.parent, recorded_data(ckpt["train_config"]), data, progress=progress)
        dataset = load_dataset(data_path)
        check_compatible(ckpt, dataset, path)
        dev = resolve_device(device)
        model = model_from_checkpoint(ckpt, dev)
        store = ImageStore.open(dataset, model.cfg.image_size, progress=progress)
        cache = _RunCache(path, dataset.items.ids, store.stamps)
        phi = cache.item_features(model, store, dev, progress)
        rec = cls(model, dataset, store, phi, ckpt, path)
        if top_lists is not False:
            loaded = cache.load_top_lists(dataset.n_users)
            if loaded is not None:
                covered, ids, scores = loaded
                if covered < dataset.n_items:  # items were added since: inserted, not recomputed
                    ids, scores = _admit_new_items(
                        dataclasses.replace(rec._cat, top_ids=ids, top_scores=scores), covered
                    )
                    cache.save_top_lists(ids, scores)
                rec._publish(top_ids=ids, top_scores=scores)
            elif top_lists or dataset.n_users * dataset.n_items <= AUTO_TOP_LIST_SCORES:
                rec.precompute_top_lists(progress=progress)
                cache.save_top_lists(rec.top_ids, rec.top_scores)
        return rec

    # --------------------------------------------------------------------------- ids
    def users(self) -> list[str]:
        return list(self.dataset.users.ids)

    def items(self) -> list[str]:
        return list(self.dataset.items.ids)

    def item_embeddings(self) -> np.ndarray:
        """phi(X_i) of every item, (n_items, K), in the order of `items()`."""
        return self.phi.cpu().numpy()

    def user_history(self, user_id: str) -> list[str]:
        """The user's training items, oldest first."""
        ds = self.dataset
        u = ds.users.index(user_id)
        return ds.items.to_ids(self._train_idx[self._train_ptr[u] : self._train_ptr[u + 1]])

    def held_out(self, user_id: str, split: str = "test") -> list[str]:
        """The user's held-out item ids of `split` ("val" or "test")."""
        if split not in ("val", "test"):
            raise DVBPRError(f"split must be 'val' or 'test', got {split!r}")
        ds = self.dataset
        u = ds.users.index(user_id)
        ptr, idx = ds.user_items(split)
        return ds.items.to_ids(idx[ptr[u] : ptr[u + 1]])

    # ------------------------------------------------------------------------ scoring
    def scores(
        self, user_indices: torch.Tensor | np.ndarray | Sequence[int], out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, n_items) scores of users given by index, a tensor on `device` (the index-space
        call evaluation and the top lists use; cold items scored as new images), written into
        `out` when given (fresh memory is slow to fault in: reuse a buffer for many calls)."""
        return self.factors.scores(self._user_tensor(user_indices), out)

    def _user_tensor(self, user_indices: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
        if isinstance(user_indices, torch.Tensor):
            return user_indices.to(device=self.device, dtype=torch.long)
        return torch.as_tensor(np.asarray(user_indices), dtype=torch.long, device=self.device)

    def recommend(
        self, user_id: str, k: int = 20, exclude_seen: bool = True, items: Sequence[str] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """Top-k item ids and scores, best first. `exclude_seen` drops the user's training
        items; `items` restricts the ranking to those ids. k beyond the candidates returns all."""
        self.dataset.users.index(user_id)  # one id: the plain "unknown user 'x'" message
        ids, scores = self.recommend_batch([user_id], k, exclude_seen, items)
        return ids[0], scores[0]

    def recommend_batch(
        self, user_ids: Sequence[str], k: int = 20, exclude_seen: bool = True, items: Sequence[str] | None = None
    ) -> tuple[list[list[str]], list[np.ndarray]]:
        _check_k(k)
        c = self._cat
        users = c.dataset.users.indices(user_ids)
        if exclude_seen and items is None and c.top_ids is not None and k <= c.top_ids.shape[1]:
            top_ids, top_scores = c.top_ids[users, :k], c.top_scores[users, :k]
        else:
            top_ids, top_scores = self._scan_top(c, users, k, exclude_seen, items)
        out_ids, out_scores = [], []
        for ids, scores in zip(top_ids, top_scores):
            keep = ids >= 0  # fewer candidates than k
            out_ids.append(c.dataset.items.to_ids(ids[keep]))
            out_scores.append(scores[keep])
        return out_ids, out_scores

    def precompute_top_lists(self, k: int = TOP_LIST_K, progress: bool = False) -> None:
        """Every user's top-k items (training items excluded), computed in chunks of users and
        kept in `top_ids` / `top_scores`: `recommend` with up to k items becomes a lookup."""
        _check_k(k)
        with self._write_lock:  # lists of the catalogue as it is: no item is added meanwhile
            ds = self.dataset
            k = min(k, ds.n_items)
            top_ids = np.empty((ds.n_users, k), dtype=np.int32)
            top_scores = np.empty((ds.n_users, k), dtype=np.float32)
            for users, ids, scores in self.iter_top_lists(k, cached=False, progress=progress):
                top_ids[users], top_scores[users] = ids, scores
            self._publish(top_ids=top_ids, top_scores=top_scores)

    def iter_top_lists(
        self, k: int = TOP_LIST_K, chunk_users: int = 1024, cached: bool = True, progress: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every user's top-k in index space (training items excluded), a chunk of users at a
        time: (user indices, (B, k) item indices with -1 past the last candidate, scores). From the
        precomputed top lists when they hold k items (and `cached`), else by an exact scan."""
        _check_k(k)
        c = self._cat
        n_users, n_items = c.dataset.n_users, c.dataset.n_items
        k = min(k, n_items)
        lookup = cached and c.top_ids is not None and c.top_ids.shape[1] >= k
        # Large chunks keep the matrix product efficient; one reused buffer of at most
        # MAX_CHUNK_SCORES bounds the memory and avoids faulting in fresh pages for every chunk.
        chunk = max(1, min(chunk_users, n_users, MAX_CHUNK_SCORES // n_items))
        if not lookup:
            with torch.inference_mode():
                buffer = torch.empty((chunk, n_items), device=self.device)
        with tqdm(total=n_users, desc="top lists", unit="user", disable=not progress) as bar:
            for start in range(0, n_users, chunk):
                users = np.arange(start, min(start + chunk, n_users))
                if lookup:
                    yield users, c.top_ids[users, :k], c.top_scores[users, :k]
                else:
                    yield users, *self._scan_top(c, users, k, True, None, buffer[: len(users)])
                bar.update(len(users))

    def _scan_top(
        self,
        c: _Catalogue,
        users: np.ndarray,
        k: int,
        exclude_seen: bool,
        items: Sequence[str] | None,
        out: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of the users' full score rows in the snapshot `c`: (B, k) item indices (-1
        past the last candidate) and scores. Masks in place on the score matrix (no (B, n_items) mask)."""
        scores = c.factors.scores(self._user_tensor(users), out)
        n_items = c.dataset.n_items
        with torch.inference_mode():
            if items is not None:
                outside = torch.ones(n_items, dtype=torch.bool, device=self.device)
                outside[torch.as_tensor(c.dataset.items.indices(items), device=self.device)] = False
                scores.masked_fill_(outside, -torch.inf)
            if exclude_seen:
                scores[self._rows_of(users)] = -torch.inf
            top = torch.topk(scores, min(k, n_items), dim=1)
        values = top.values.cpu().numpy()
        indices = top.indices.cpu().numpy().astype(np.int32)
        indices[values == -np.inf] = -1  # scores are finite: -inf marks exactly the masked items
        return indices, values

    def _rows_of(self, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, item) index pairs of the users' training items, for masking."""
        counts = np.diff(self._train_ptr)[users]
        starts = self._train_ptr[users]
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = self._train_idx[np.repeat(starts, counts) + within]
        rows = np.repeat(np.arange(len(users)), counts)
        return (torch.as_tensor(rows, device=self.device), torch.as_tensor(cols, device=self.device))

    def rank_of(self, user_id: str, item_id: str, split: str = "test") -> int:
        """1-based rank of an item in the user's full ranking as evaluation sees it: training
        items (and validation items on the test split) excluded, ties broken pessimistically."""
        c = self._cat
        u = c.dataset.users.index(user_id)
        i = c.dataset.items.index(item_id)
        scores = c.factors.scores(self._user_tensor([u]))[0]
        excluded = set(self.user_history(user_id))
        if split == "test":
            excluded.update(self.held_out(user_id, "val"))
        excluded.discard(item_id)
        mask = torch.ones_like(scores, dtype=torch.bool)
        if excluded:
            mask[torch.as_tensor(c.dataset.items.indices(sorted(excluded)), device=self.device)] = False
        mask[i] = False
        return int((scores[mask] >= scores[i]).sum()) + 1

    def score_breakdown(self, user_id: str, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Per item: the visual (theta_u . phi_i), collaborative (gamma_u . gamma_i) and bias
        parts of the score, and their total (as `scores` computes it)."""
        c = self._cat
        u = c.dataset.users.index(user_id)
        i = torch.as_tensor(c.dataset.items.indices(item_ids), device=self.device)
        f = c.factors
        k = f.visual_dim
        uf, itf = f.users[u], f.items_t[:, i].T
        with torch.inference_mode():
            visual = itf[:, :k] @ uf[:k]
            collaborative = itf[:, k:] @ uf[k:] if uf.numel() > k else torch.zeros_like(visual)
            bias = f.bias[i]
        parts = {"visual": visual, "collaborative": collaborative, "bias": bias, "total": visual + collaborative + bias}
        return {name: t.cpu().numpy() for name, t in parts.items()}

    # ---------------------------------------------------------------------- explanations
    def explain(
        self,
        user_id: str,
        item: str | None = None,
        image: ImageInput | np.ndarray | ColdItem | None = None,
        name: str | None = None,
    ) -> Explanation:
        """Where in an image the user's visual score theta_u . phi(X) comes from (`dvbpr.explain`):
        a heatmap aligned with the image as the model sees it, and the score. The image is a
        catalogue `item` (by id) or a new `image` (as `cold_item` takes it)."""
        if (item is None) == (image is None):
            raise DVBPRError("give exactly one of item or image")
        if item is not None:
            return self.explain_items(user_id, [item])[0]
        pixels = image.pixels if isinstance(image, ColdItem) else image
        if not isinstance(pixels, np.ndarray):
            pixels = self.preprocess(pixels, name)
        return explain_pixels(self.model, self._theta(user_id), pixels[None])[0]

    def explain_items(self, user_id: str, item_ids: Sequence[str]) -> list[Explanation]:
        """`explain` of many catalogue items, in one pass through the CNN."""
        c = self._cat
        pixels = c.store.array[c.dataset.items.indices(item_ids)]
        return explain_pixels(self.model, self._theta(user_id), pixels)

    def _theta(self, user_id: str) -> torch.Tensor:
        return self.model.theta_users.weight[self.dataset.users.index(user_id)]

    # ---------------------------------------------------------------------- new images
    def preprocess(self, image: ImageInput, name: str | None = None) -> np.ndarray:
        """The image as the model sees it: uint8 (size, size, 3) after the training preprocessing."""
        return load_image(image, self.model.cfg.image_size, name=name)

    def cold_item(self, image: ImageInput | np.ndarray | ColdItem, name: str | None = None) -> ColdItem:
        """A new image (path, bytes, file object, or an already preprocessed uint8 array) through
        the CNN once: its pixels as the model sees them, phi, and every user's score of it as a
        cold item (theta_u . phi + the mean warm item bias). A ColdItem is returned as it is."""
        if isinstance(image, ColdItem):
            return image
        pixels = image if isinstance(image, np.ndarray) else self.preprocess(image, name)
        phi = embed_pixels(self.model, pixels[None], self.device)[0]
        return ColdItem(pixels, phi.cpu().numpy(), self.factors.new_item_scores(phi).cpu().numpy())

    def embed_image(self, image: ImageInput | np.ndarray | ColdItem, name: str | None = None) -> torch.Tensor:
        """phi of a new image as a tensor on `device` (`cold_item(image).phi` in numpy)."""
        return torch.from_numpy(self.cold_item(image, name).phi).to(self.device)

    def user_scores_for_image(self, image: ImageInput | np.ndarray | ColdItem, name: str | None = None) -> np.ndarray:
        """How much every user would like a new item that has only an image (cold start):
        theta_u . phi(image) + the mean warm item bias; (n_users,) in the order of `users()`."""
        return self.cold_item(image, name).user_scores

    def rank_users(
        self, image: ImageInput | np.ndarray | ColdItem, k: int = 10, name: str | None = None
    ) -> tuple[list[str], np.ndarray]:
        """The k users who would rank a new image highest, best first, with their scores."""
        _check_k(k)  # a negative k would slice off the last users instead
        scores = self.cold_item(image, name).user_scores
        top = np.argsort(-scores, kind="stable")[:k]
        return self.dataset.users.to_ids(top), scores[top]

    def similar_items(
        self, item_id: str | None = None, image: ImageInput | np.ndarray | ColdItem | None = None, k: int = 10
    ) -> tuple[list[str], np.ndarray]:
        """Nearest catalogue items in phi space by cosine similarity (the query item excluded)."""
        if (item_id is None) == (image is None):
            raise DVBPRError("give exactly one of item_id or image")
        _check_k(k)
        c = self._cat
        if item_id is not None:
            skip = c.dataset.items.index(item_id)
            query = c.phi[skip]
        else:
            query, skip = self.embed_image(image), None  # a ColdItem is not embedded again
        with torch.inference_mode():
            sims = torch.nn.functional.cosine_similarity(c.phi, query[None, :], dim=1)
            if skip is not None:
                sims[skip] = -torch.inf
            top = torch.topk(sims, min(k, len(sims) - (skip is not None)))
        return c.dataset.items.to_ids(top.indices.cpu().numpy()), top.values.cpu().numpy()

    # ---------------------------------------------------------------------- new items
    def add_item(self, image: ImageInput, item_id: str | None = None, category: str = "", title: str = "") -> str:
        """Add an item with only an image to the dataset's catalogue (`dvbpr.catalogue.add_item`)
        and serve it at once as a cold item, as `from_run` serves a grown catalogue: phi of the new
        item only, and the top lists updated (`recommend` shows it to the users who score it above
        their last entry); items another process added since are served too. Returns its id.
        DatasetChangedError (the item added all the same) when the dataset changed otherwise
        since it was loaded. The run's cache is brought up to date by the next `from_run`.
        Calls running meanwhile in other threads see the catalogue without the item."""
        with self._write_lock:
            c = self._cat
            old, stamps = c.dataset, c.store.stamps
            grown = add_to_catalogue(old, image, item_id, category, title, stamps=stamps)
            n = old.n_items
            same = grown.users.ids == old.users.ids and grown.items.ids[:n] == old.items.ids
            if not same or any(not np.array_equal(a, b) for a, b in zip(_splits(grown), _splits(old))):
                raise DatasetChangedError(
                    f"{grown.items.ids[-1]!r} was added to {grown.root}, but the dataset had changed since this "
                    "Recommender loaded it: load the run again (Recommender.from_run) to serve it"
                )
            # the store add_to_catalogue extended (not decoded again), its old images not stat'ed again
            stamps = None if stamps is None else stamps + grown.image_stamps(start=n)
            store = ImageStore.open(grown, self.model.cfg.image_size, progress=False, stamps=stamps)
            added = ImageBatches(ImageStore(store.array[n:], store.size), self.device)
            phi = embed_items(self.model, added, grown.n_items - n)
            c = _Catalogue(
                grown, store, torch.cat([c.phi, phi]), _with_new_items(c.factors, phi), c.top_ids, c.top_scores
            )
            if c.top_ids is not None:
                ids, scores = _admit_new_items(c, n)
                c = dataclasses.replace(c, top_ids=ids, top_scores=scores)
            self._cat = c
        return grown.items.ids[-1]


# ----------------------------------------------------------------------------- helpers
def _splits(dataset: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return dataset.train, dataset.val, dataset.test


def _admit_new_items(c: _Catalogue, start: int) -> tuple[np.ndarray, np.ndarray]:
    """The top lists of `c` with items `start`.. (added to the catalogue: cold, in no user's
    history) inserted: each into those of the users who score it above their last entry, after
    the entries that score at least as high. One matrix product scores them for every user; the
    lists grow only where they held every candidate (a catalogue smaller than the lists). New
    arrays: the snapshot's may be read by other threads meanwhile."""
    ids, scores = c.top_ids.copy(), c.top_scores.copy()
    n_items, k = c.dataset.n_items, ids.shape[1]
    wide = min(max(k, TOP_LIST_K), n_items) if k == start else k
    if wide > k:  # -1 / -inf: no candidate there, so every new item beats it
        ids = np.concatenate([ids, np.full((len(ids), wide - k), -1, dtype=ids.dtype)], 1)
        scores = np.concatenate([scores, np.full((len(ids), wide - k), -np.inf, dtype=scores.dtype)], 1)
    with torch.inference_mode():
        f = c.factors
        new = torch.addmm(f.bias[start:], f.users, f.items_t[:, start:]).cpu().numpy()
    cols = np.arange(wide)
    for offset, item_scores in enumerate(new.T):
        rows = np.flatnonzero(item_scores > scores[:, -1])
        if not len(rows):
            continue
        score = item_scores[rows, None]
        place = (scores[rows] >= score).sum(1, keepdims=True)  # < wide: it beats the last entry
        source = np.maximum(np.where(cols < place, cols, cols - 1), 0)  # the tail moves one down
        row_ids = np.take_along_axis(ids[rows], source, 1)
        row_scores = np.take_along_axis(scores[rows], source, 1)
        row_ids[cols == place] = start + offset
        row_scores[cols == place] = score[:, 0]
        ids[rows], scores[rows] = row_ids, row_scores
    return ids, scores


def _with_new_items(factors: ServingFactors, phi: torch.Tensor) -> ServingFactors:
    """The factors with items appended that have only an image (phi (n, K)): scored as a cold
    item is, theta_u . phi + the mean warm item bias, with no collaborative term."""
    if not len(phi):
        return factors
    cf = factors.items_t.shape[0] - factors.visual_dim
    columns = torch.cat([phi.T.float(), phi.new_zeros(cf, len(phi))])
    return dataclasses.replace(
        factors,
        items_t=torch.cat([factors.items_t, columns], 1).contiguous(),
        bias=torch.cat([factors.bias, factors.new_item_bias.expand(len(phi))]),
    )


def _check_k(k: int) -> None:
    if k < 1:
        raise DVBPRError(f"k must be at least 1, got {k}")


def check_compatible(ckpt: dict, dataset: Dataset, path: Path) -> None:
    """The checkpoint's users, items and interactions must be the dataset's. The catalogue may
    have grown since by added items (`dvbpr.catalogue`): after the checkpoint's own, with no
    interaction."""
    problems = []
    trained = len(ckpt["item_ids"])
    if ckpt["user_ids"] != dataset.users.ids:
        problems.append(f"users differ ({len(ckpt['user_ids'])} in the model, {dataset.n_users} in the data)")
    if dataset.items.ids[:trained] != ckpt["item_ids"]:
        problems.append(f"items differ ({trained} in the model, {dataset.n_items} in the data)")
    if not problems:
        try:
            as_trained = dataset.head(trained)
        except DataError:
            problems.append(f"items after the model's {trained} have interactions")
        else:
            if ckpt.get("dataset_signature") != dataset_signature(as_trained):
                problems.append("the interactions differ")
    shared_ids = set(ckpt["user_ids"]) & set(dataset.users.ids) or set(ckpt["item_ids"]) & set(dataset.items.ids)
    if problems and not shared_ids:
        raise DatasetChangedError(
            f"{path} was trained on another dataset than {dataset.root}: they have no user or item id in "
            "common. Use the run with its own dataset, or train a model on this one (`python -m dvbpr train`)."
        )
    if problems:
        raise DatasetChangedError(
            f"the dataset {dataset.root} changed since {path} was trained: {'; '.join(problems)}. "
            "Fine-tune the run on the new data with `python -m dvbpr train --init-from RUN_DIR`."
        )


class _RunCache:
    """Derived arrays of a checkpoint in RUN_DIR/cache: phi of every item and the users' top
    lists. A file is named after a hash of the checkpoint's bytes, the number n of catalogue items
    it covers and a hash of those items' ids and image stamps (path, size, mtime), so neither a
    new checkpoint nor a changed image is ever read stale, while the arrays of a catalogue that
    has grown since by added items (`dvbpr.catalogue`) still hold for its first n items: they are
    extended, not recomputed. Older files of the run are deleted when replaced."""

    def __init__(self, ckpt_path: Path, item_ids: list[str], stamps: list[str]):
        self.folder = ckpt_path.parent / CACHE
        self.stem = ckpt_path.stem
        # checkpoint first: the map job (embedmap) finds phi by the checkpoint's part alone
        self.checkpoint = file_hash(ckpt_path)[:16]
        self.lines = [f"{item_id}\t{stamp}\n" for item_id, stamp in zip(item_ids, stamps, strict=True)]

    def _path(self, kind: str, n: int) -> Path:
        items = hashlib.sha256("".join(self.lines[:n]).encode()).hexdigest()[:8]
        return self.folder / f"{kind}_{self.stem}_{self.checkpoint}_{n}_{items}.npy"

    def _covered(self, kind: str) -> list[int]:
        """The numbers of first catalogue items that files of `kind` hold valid arrays for, most first."""
        found = set()
        for path in self.folder.glob(f"{kind}_{self.stem}_{self.checkpoint}_*_*.npy"):
            n = path.stem.split("_")[-2]
            if n.isdigit() and int(n) <= len(self.lines) and path == self._path(kind, int(n)):
                found.add(int(n))
        return sorted(found, reverse=True)

    def _load(self, kind: str, n: int, shape: tuple[int, ...]) -> np.ndarray | None:
        path = self._path(kind, n)
        if not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # unreadable: computed again and replaced
            return None
        return array if array.shape == shape else None

    def _save(self, kind: str, array: np.ndarray) -> None:
        """`array` of `kind` for the whole catalogue."""
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        for old in self.folder.glob(f"{kind}_{self.stem}_*.npy"):
            old.unlink(missing_ok=True)  # of an older checkpoint or catalogue of this run
        atomic_write_bytes(self._path(kind, len(self.lines)), buffer.getvalue())

    def item_features(self, model: DVBPR, store: ImageStore, device: torch.device, progress: bool) -> torch.Tensor:
        """phi of every item, computed once: for a catalogue that grew, of the items added only."""
        n_items, dim = len(self.lines), model.cfg.dim
        cached = next(
            (phi for n in self._covered("phi") if (phi := self._load("phi", n, (n, dim))) is not None),
            np.zeros((0, dim), dtype=np.float32),
        )
        if len(cached) == n_items:
            return torch.from_numpy(cached).to(device)
        rest = store if not len(cached) else ImageStore(store.array[len(cached) :], store.size)
        added = embed_items(model, ImageBatches(rest, device), n_items - len(cached), progress=progress)
        phi = torch.cat([torch.from_numpy(cached).to(device), added])
        self._save("phi", phi.cpu().numpy())
        return phi

    def load_top_lists(self, n_users: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        """(n, ids, scores): the top lists of the catalogue's first n items, n as large as cached."""
        for n in self._covered("topids"):
            shape = (n_users, min(TOP_LIST_K, n))
            ids, scores = self._load("topids", n, shape), self._load("topscores", n, shape)
            if ids is not None and scores is not None:
                return n, ids, scores
        return None

    def save_top_lists(self, ids: np.ndarray, scores: np.ndarray) -> None:
        self._save("topids", ids)
        self._save("topscores", scores)
