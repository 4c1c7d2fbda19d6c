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
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import dataset_signature, load_checkpoint, model_from_checkpoint
from .data import Dataset, load_dataset
from .errors import DatasetChangedError, DVBPRError
from .features import ImageBatches, embed_items, embed_pixels, resolve_device
from .fsutil import atomic_write_bytes, file_hash
from .images import ImageStore, load_image
from .model import DVBPR
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
        self.model, self.dataset, self.store = model, dataset, store
        self.checkpoint, self.checkpoint_path = checkpoint, checkpoint_path
        self.device = phi.device
        self.phi = phi
        self.cold = torch.as_tensor(dataset.cold_items, device=self.device)
        self.factors = model.serving_factors(phi, self.cold)
        self._train_ptr, self._train_idx = dataset.user_items("train")
        self.top_ids: np.ndarray | None = None  # (n_users, K) item indices, best first, -1 padded
        self.top_scores: np.ndarray | None = None

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
        cache = _RunCache(path, store.fingerprint)
        phi = cache.item_features(model, store, dataset, dev, progress)
        rec = cls(model, dataset, store, phi, ckpt, path)
        if top_lists is not False:
            loaded = cache.load_top_lists(dataset.n_users, min(TOP_LIST_K, dataset.n_items))
            if loaded is not None:
                rec.top_ids, rec.top_scores = loaded
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
        u = self.dataset.users.index(user_id)
        return self.dataset.items.to_ids(self._train_idx[self._train_ptr[u] : self._train_ptr[u + 1]])

    def held_out(self, user_id: str, split: str = "test") -> list[str]:
        """The user's held-out item ids of `split` ("val" or "test")."""
        if split not in ("val", "test"):
            raise DVBPRError(f"split must be 'val' or 'test', got {split!r}")
        u = self.dataset.users.index(user_id)
        ptr, idx = self.dataset.user_items(split)
        return self.dataset.items.to_ids(idx[ptr[u] : ptr[u + 1]])

    # ------------------------------------------------------------------------ scoring
    def scores(
        self, user_indices: torch.Tensor | np.ndarray | Sequence[int], out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, n_items) scores of users given by index, a tensor on `device` (the index-space
        call evaluation and the top lists use; cold items scored as new images), written into
        `out` when given (fresh memory is slow to fault in: reuse a buffer for many calls)."""
        if isinstance(user_indices, torch.Tensor):
            u = user_indices.to(device=self.device, dtype=torch.long)
        else:
            u = torch.as_tensor(np.asarray(user_indices), dtype=torch.long, device=self.device)
        return self.factors.scores(u, out)

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
        users = self.dataset.users.indices(user_ids)
        if exclude_seen and items is None and self.top_ids is not None and k <= self.top_ids.shape[1]:
            top_ids, top_scores = self.top_ids[users, :k], self.top_scores[users, :k]
        else:
            top_ids, top_scores = self._scan_top(users, k, exclude_seen, items)
        out_ids, out_scores = [], []
        for ids, scores in zip(top_ids, top_scores):
            keep = ids >= 0  # fewer candidates than k
            out_ids.append(self.dataset.items.to_ids(ids[keep]))
            out_scores.append(scores[keep])
        return out_ids, out_scores

    def precompute_top_lists(self, k: int = TOP_LIST_K, progress: bool = False) -> None:
        """Every user's top-k items (training items excluded), computed in chunks of users and
        kept in `top_ids` / `top_scores`: `recommend` with up to k items becomes a lookup."""
        _check_k(k)
        n_users, n_items = self.dataset.n_users, self.dataset.n_items
        k = min(k, n_items)
        top_ids = np.empty((n_users, k), dtype=np.int32)
        top_scores = np.empty((n_users, k), dtype=np.float32)
        # Large chunks keep the matrix product efficient; one reused buffer of at most 128M
        # scores (512 MB) bounds the memory and avoids faulting in fresh pages for every chunk.
        chunk = max(1, min(1024, n_users, (1 << 27) // n_items))
        with torch.inference_mode():
            buffer = torch.empty((chunk, n_items), device=self.device)
        for start in tqdm(range(0, n_users, chunk), desc="top lists", unit="chunk", disable=not progress):
            users = np.arange(start, min(start + chunk, n_users))
            top_ids[users], top_scores[users] = self._scan_top(users, k, True, None, buffer[: len(users)])
        self.top_ids, self.top_scores = top_ids, top_scores

    def _scan_top(
        self,
        users: np.ndarray,
        k: int,
        exclude_seen: bool,
        items: Sequence[str] | None,
        out: torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of the users' full score rows: (B, k) item indices (-1 past the last
        candidate) and scores. Masks in place on the score matrix (no (B, n_items) mask)."""
        scores = self.scores(users, out)
        with torch.inference_mode():
            if items is not None:
                outside = torch.ones(self.dataset.n_items, dtype=torch.bool, device=self.device)
                outside[torch.as_tensor(self.dataset.items.indices(items), device=self.device)] = False
                scores.masked_fill_(outside, -torch.inf)
            if exclude_seen:
                scores[self._rows_of(users)] = -torch.inf
            top = torch.topk(scores, min(k, self.dataset.n_items), dim=1)
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
        u = self.dataset.users.index(user_id)
        i = self.dataset.items.index(item_id)
        scores = self.scores([u])[0]
        excluded = set(self.user_history(user_id))
        if split == "test":
            excluded.update(self.held_out(user_id, "val"))
        excluded.discard(item_id)
        mask = torch.ones_like(scores, dtype=torch.bool)
        if excluded:
            mask[torch.as_tensor(self.dataset.items.indices(sorted(excluded)), device=self.device)] = False
        mask[i] = False
        return int((scores[mask] >= scores[i]).sum()) + 1

    def score_breakdown(self, user_id: str, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Per item: the visual (theta_u . phi_i), collaborative (gamma_u . gamma_i) and bias
        parts of the score, and their total (as `scores` computes it)."""
        u = self.dataset.users.index(user_id)
        i = torch.as_tensor(self.dataset.items.indices(item_ids), device=self.device)
        k = self.factors.visual_dim
        uf, itf = self.factors.users[u], self.factors.items_t[:, i].T
        with torch.inference_mode():
            visual = itf[:, :k] @ uf[:k]
            collaborative = itf[:, k:] @ uf[k:] if uf.numel() > k else torch.zeros_like(visual)
            bias = self.factors.bias[i]
        parts = {"visual": visual, "collaborative": collaborative, "bias": bias, "total": visual + collaborative + bias}
        return {name: t.cpu().numpy() for name, t in parts.items()}

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
        if item_id is not None:
            query, skip = self.phi[self.dataset.items.index(item_id)], self.dataset.items.index(item_id)
        else:
            query, skip = self.embed_image(image), None  # a ColdItem is not embedded again
        with torch.inference_mode():
            sims = torch.nn.functional.cosine_similarity(self.phi, query[None, :], dim=1)
            if skip is not None:
                sims[skip] = -torch.inf
            top = torch.topk(sims, min(k, len(sims) - (skip is not None)))
        return self.dataset.items.to_ids(top.indices.cpu().numpy()), top.values.cpu().numpy()


# ----------------------------------------------------------------------------- helpers
def _check_k(k: int) -> None:
    if k < 1:
        raise DVBPRError(f"k must be at least 1, got {k}")


def check_compatible(ckpt: dict, dataset: Dataset, path: Path) -> None:
    """The checkpoint's users, items and training interactions must be the dataset's."""
    problems = []
    if ckpt["user_ids"] != dataset.users.ids:
        problems.append(f"users differ ({len(ckpt['user_ids'])} in the model, {dataset.n_users} in the data)")
    if ckpt["item_ids"] != dataset.items.ids:
        problems.append(f"items differ ({len(ckpt['item_ids'])} in the model, {dataset.n_items} in the data)")
    if not problems and ckpt.get("dataset_signature") != dataset_signature(dataset):
        problems.append("the interactions differ")
    if problems:
        raise DatasetChangedError(
            f"the dataset {dataset.root} changed since {path} was trained: {'; '.join(problems)}. "
            "Fine-tune the run on the new data with `python -m dvbpr train --init-from RUN_DIR`."
        )


class _RunCache:
    """Derived arrays of a checkpoint in RUN_DIR/cache, named after a hash of the checkpoint's
    bytes and of the images' fingerprint, so neither a new checkpoint nor a changed image ever
    reads stale features (older files of the run are deleted when replaced)."""

    def __init__(self, ckpt_path: Path, images_fingerprint: str):
        self.folder = ckpt_path.parent / CACHE
        self.stem = ckpt_path.stem
        # checkpoint first: the map job (embedmap) finds phi by the checkpoint's part alone
        self.tag = f"{file_hash(ckpt_path)[:16]}_{hashlib.sha256(images_fingerprint.encode()).hexdigest()[:8]}"

    def _path(self, kind: str) -> Path:
        return self.folder / f"{kind}_{self.stem}_{self.tag}.npy"

    def _load(self, kind: str, shape: tuple[int, ...]) -> np.ndarray | None:
        path = self._path(kind)
        if not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # unreadable: computed again and replaced
            return None
        return array if array.shape == shape else None

    def _save(self, kind: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        for old in self.folder.glob(f"{kind}_{self.stem}_*.npy"):
            old.unlink(missing_ok=True)  # of an older checkpoint of this run
        atomic_write_bytes(self._path(kind), buffer.getvalue())

    def item_features(
        self, model: DVBPR, store: ImageStore, dataset: Dataset, device: torch.device, progress: bool
    ) -> torch.Tensor:
        """phi of every item, computed once."""
        phi = self._load("phi", (dataset.n_items, model.cfg.dim))
        if phi is not None:
            return torch.from_numpy(phi).to(device)
        phi = embed_items(model, ImageBatches(store, device), dataset.n_items, progress=progress)
        self._save("phi", phi.cpu().numpy())
        return phi

    def load_top_lists(self, n_users: int, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        ids, scores = self._load("topids", (n_users, k)), self._load("topscores", (n_users, k))
        return None if ids is None or scores is None else (ids, scores)

    def save_top_lists(self, ids: np.ndarray, scores: np.ndarray) -> None:
        self._save("topids", ids)
        self._save("topscores", scores)
