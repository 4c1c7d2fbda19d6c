"""The recommender API in id space; the app and the CLI both sit on it.

`Recommender.from_run(run_dir)` loads a checkpoint and its dataset, computes phi(X_i) for every
item once (cached on disk, keyed by the checkpoint's hash) and folds the model into two factor
matrices, so a user's scores over the whole catalogue are one matrix-vector product:

    score(u, i) = [theta_u, gamma_u] . [phi_i, gamma_i] + beta_i

Items with no training interaction (cold) have untrained gamma_i and beta_i: they are scored as
an uploaded image is, with gamma_i = 0 and beta_i = the mean bias of the warm items.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import torch

from .checkpoint import dataset_signature, file_hash, find_checkpoint, load_checkpoint, model_from_checkpoint
from .data import Dataset, load_dataset
from .errors import CheckpointError, DVBPRError
from .fsutil import atomic_write_bytes
from .images import ImageStore, load_image, to_model_input
from .model import DVBPR
from .train import ImageBatches, embed_items, resolve_device

ImageInput = str | Path | bytes | BinaryIO


class Recommender:
    def __init__(self, model: DVBPR, dataset: Dataset, store: ImageStore, phi: torch.Tensor,
                 checkpoint: dict, checkpoint_path: Path):
        self.model, self.dataset, self.store = model, dataset, store
        self.checkpoint, self.checkpoint_path = checkpoint, checkpoint_path
        self.device = phi.device
        self.phi = phi
        self.cold = torch.as_tensor(dataset.cold_items, device=self.device)
        with torch.inference_mode():
            parts_u, parts_i = [model.theta_users.weight], [phi]
            if model.cfg.uses_cf:
                parts_u.append(model.gamma_users.weight)
                parts_i.append(model.gamma_items.weight.masked_fill(self.cold[:, None], 0.0))
            self.user_factors = torch.cat(parts_u, 1).float().contiguous()
            self.item_factors = torch.cat(parts_i, 1).float().contiguous()
            self.item_bias = model.item_bias(self.cold).float()
            self.new_item_bias = model.cold_bias(self.cold).float()
        self._train_ptr, self._train_idx = dataset.user_items("train")

    # ------------------------------------------------------------------------- loading
    @classmethod
    def from_run(cls, run_dir: str | Path, data: str | Path | None = None, device: str = "auto",
                 progress: bool = False) -> "Recommender":
        """Load a run folder (best.pt, else last.pt) with its dataset (or `data`)."""
        from .synth import DEFAULT_DATA_DIR, ensure_default_dataset

        path = find_checkpoint(run_dir)
        ckpt = load_checkpoint(path)
        data_path = Path(data) if data is not None else resolve_data_path(ckpt["train_config"]["data"])
        if data is None and data_path == DEFAULT_DATA_DIR:
            ensure_default_dataset(progress=progress)
        dataset = load_dataset(data_path)
        check_compatible(ckpt, dataset, path)
        dev = resolve_device(device)
        model = model_from_checkpoint(ckpt, dev)
        store = ImageStore.open(dataset, model.cfg.image_size, progress=progress)
        phi = _cached_item_features(model, store, dataset, path, dev, progress)
        return cls(model, dataset, store, phi, ckpt, path)

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
        return self.dataset.items.to_ids(self._train_idx[self._train_ptr[u]:self._train_ptr[u + 1]])

    def held_out(self, user_id: str, split: str = "test") -> list[str]:
        """The user's held-out item ids of `split` ("val" or "test")."""
        if split not in ("val", "test"):
            raise DVBPRError(f"split must be 'val' or 'test', got {split!r}")
        u = self.dataset.users.index(user_id)
        ptr, idx = self.dataset.user_items(split)
        return self.dataset.items.to_ids(idx[ptr[u]:ptr[u + 1]])

    # ------------------------------------------------------------------------ scoring
    def scores(self, user_indices: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
        """(B, n_items) scores of users given by index (cold items scored as new images)."""
        u = torch.as_tensor(np.asarray(user_indices), dtype=torch.long, device=self.device)
        with torch.inference_mode():
            return self.user_factors[u] @ self.item_factors.T + self.item_bias

    def recommend(self, user_id: str, k: int = 20, exclude_seen: bool = True,
                  items: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Top-k item ids and scores, best first. `exclude_seen` drops the user's training
        items; `items` restricts the ranking to those ids. k beyond the candidates returns all."""
        self.dataset.users.index(user_id)  # one id: the plain "unknown user 'x'" message
        ids, scores = self.recommend_batch([user_id], k, exclude_seen, items)
        return ids[0], scores[0]

    def recommend_batch(self, user_ids: Sequence[str], k: int = 20, exclude_seen: bool = True,
                        items: Sequence[str] | None = None) -> tuple[list[list[str]], list[np.ndarray]]:
        _check_k(k)
        users = self.dataset.users.indices(user_ids)
        scores = self.scores(users)
        allowed = torch.ones(scores.shape, dtype=torch.bool, device=self.device)
        if items is not None:
            allowed[:] = False
            allowed[:, torch.as_tensor(self.dataset.items.indices(items), device=self.device)] = True
        if exclude_seen:
            rows, cols = self._rows_of(users)
            allowed[rows, cols] = False
        scores = scores.masked_fill(~allowed, -torch.inf)
        n = int(allowed.sum(1).max()) if len(users) else 0
        top = torch.topk(scores, min(k, n), dim=1) if n else None
        out_ids, out_scores = [], []
        for r in range(len(users)):
            keep = int(allowed[r].sum().clamp(max=k))
            idx = top.indices[r, :keep].cpu().numpy() if top is not None else np.zeros(0, int)
            out_ids.append(self.dataset.items.to_ids(idx))
            out_scores.append(top.values[r, :keep].cpu().numpy() if top is not None else np.zeros(0))
        return out_ids, out_scores

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
        k = self.model.cfg.dim
        uf, itf = self.user_factors[u], self.item_factors[i]
        with torch.inference_mode():
            visual = itf[:, :k] @ uf[:k]
            collaborative = itf[:, k:] @ uf[k:] if uf.numel() > k else torch.zeros_like(visual)
            bias = self.item_bias[i]
        parts = {"visual": visual, "collaborative": collaborative, "bias": bias,
                 "total": visual + collaborative + bias}
        return {name: t.cpu().numpy() for name, t in parts.items()}

    # ---------------------------------------------------------------------- new images
    def preprocess(self, image: ImageInput, name: str | None = None) -> np.ndarray:
        """The image as the model sees it: uint8 (size, size, 3) after the training preprocessing."""
        return load_image(image, self.model.cfg.image_size, name=name)

    def embed_image(self, image: ImageInput | np.ndarray, name: str | None = None) -> torch.Tensor:
        """phi of a new image (path, bytes, file object, or an already preprocessed array)."""
        pixels = image if isinstance(image, np.ndarray) else self.preprocess(image, name)
        batch = to_model_input(torch.from_numpy(np.ascontiguousarray(pixels))[None].to(self.device))
        with torch.inference_mode():
            return self.model.cnn(batch.contiguous(memory_format=torch.channels_last)).float()[0]

    def user_scores_for_image(self, image: ImageInput | np.ndarray, name: str | None = None) -> np.ndarray:
        """How much every user would like a new item that has only an image (cold start):
        theta_u . phi(image) + the mean warm item bias; (n_users,) in the order of `users()`."""
        phi = self.embed_image(image, name)
        with torch.inference_mode():
            return (self.model.theta_users.weight @ phi + self.new_item_bias).cpu().numpy()

    def rank_users(self, image: ImageInput | np.ndarray, k: int = 10, name: str | None = None
                   ) -> tuple[list[str], np.ndarray]:
        """The k users who would rank a new image highest, best first, with their scores."""
        _check_k(k)  # a negative k would slice off the last users instead
        scores = self.user_scores_for_image(image, name)
        top = np.argsort(-scores, kind="stable")[:k]
        return self.dataset.users.to_ids(top), scores[top]

    def similar_items(self, item_id: str | None = None, image: ImageInput | np.ndarray | None = None,
                      k: int = 10) -> tuple[list[str], np.ndarray]:
        """Nearest catalogue items in phi space by cosine similarity (the query item excluded)."""
        if (item_id is None) == (image is None):
            raise DVBPRError("give exactly one of item_id or image")
        _check_k(k)
        if item_id is not None:
            query, skip = self.phi[self.dataset.items.index(item_id)], self.dataset.items.index(item_id)
        else:
            query, skip = self.embed_image(image), None
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


def resolve_data_path(recorded: str) -> Path:
    """A run records its dataset path as given; relative paths are tried against the current
    folder, then against the repository root (so the shipped default model works anywhere)."""
    path = Path(recorded)
    if path.is_absolute() or path.exists():
        return path.resolve() if path.exists() else path
    from .synth import DEFAULT_DATA_DIR

    repo_root = DEFAULT_DATA_DIR.parent.parent
    return (repo_root / path).resolve()


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
        raise CheckpointError(
            f"the dataset {dataset.root} changed since {path} was trained: {'; '.join(problems)}. "
            "Fine-tune the run on the new data with `python -m dvbpr train --init-from RUN_DIR`."
        )


def _cached_item_features(model: DVBPR, store: ImageStore, dataset: Dataset, ckpt_path: Path,
                          device: torch.device, progress: bool) -> torch.Tensor:
    """phi of every item, cached in RUN_DIR/cache keyed by the checkpoint's sha256."""
    cache = ckpt_path.parent / "cache" / f"phi_{ckpt_path.stem}_{file_hash(ckpt_path)[:16]}.npy"
    if cache.is_file():
        phi = np.load(cache)
        if phi.shape == (dataset.n_items, model.cfg.dim):
            return torch.from_numpy(phi).to(device)
    phi = embed_items(model, ImageBatches(store, device), dataset.n_items, progress=progress)
    import io

    buffer = io.BytesIO()
    np.save(buffer, phi.cpu().numpy())
    for old in cache.parent.glob(f"phi_{ckpt_path.stem}_*.npy"):
        old.unlink(missing_ok=True)  # features of an older checkpoint of this run
    atomic_write_bytes(cache, buffer.getvalue())
    return phi
