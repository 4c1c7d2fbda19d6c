"""The one image preprocessing (`load_image`) and the per-dataset decoded image cache.

Every image, whether from the dataset, an upload or the app, goes through `load_image`, so a
model always sees pixels prepared the same way. `ImageStore` decodes a dataset's images once
into a uint8 memmap next to the dataset and serves training batches from it.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import multiprocessing
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from .errors import DVBPRError, ImageError, one_line
from .fsutil import atomic_write_json, read_json

if TYPE_CHECKING:
    from .data import Dataset

SUPPORTED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")  # of a dataset's images
_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")  # what load_image decodes: GIF too, for uploads (first frame)
FORMAT_NAMES = "JPEG, PNG, WebP or GIF"
MAX_PIXELS = 25_000_000
"""The most pixels an image may decode to (JPEG: at the reduced scale it is decoded at), checked
from its header before decoding: a small file claiming a huge size (a decompression bomb) costs
only its header. 25 megapixels (5000 x 5000) take up to ~0.6 GB to decode (RGBA WebP; JPEG far
less, being decoded at 1/8 scale when that still covers `size`)."""
_WHITE = (255, 255, 255)
CACHE_DIR = ".cache"  # a dataset folder's image caches: rebuilt from the images, never copied
_CHUNK_BYTES = 32 << 20  # decoded pixels per worker task: a few progress updates per worker
_LISTED_ERRORS = 20
_SNIFF_BYTES = 512  # read from a file that is no image, to say what it is instead

ImageSource = str | os.PathLike | bytes | BinaryIO | Image.Image

# MAX_PIXELS is below PIL's warning threshold, so its DecompressionBombWarning only adds a second
# message (a traceback-like line on stderr) to the refusal that follows.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def load_image(source: ImageSource, size: int, name: str | None = None) -> np.ndarray:
    """Decode and preprocess one image into a uint8 (size, size, 3) RGB array.

    Takes the first frame of an animation, applies the EXIF orientation, scales 16-bit pixels
    to 8 bits, composites transparency on white, and scales the image so its longer side is
    `size` (bicubic), centred on a white square. ImageError, one line naming the image, when it
    cannot be read, is not JPEG, PNG, WebP or GIF, or has more than MAX_PIXELS pixels (a
    PIL.Image given directly may be any mode PIL can convert).
    """
    if isinstance(source, Image.Image):
        label = name or "<image>"
        return _preprocess(source, size, label)
    if isinstance(source, (str, os.PathLike)):
        label = name or str(source)
    else:
        label = name or str(getattr(source, "name", "<uploaded image>"))
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(fp, formats=_FORMATS) as im:
            # Let JPEG decode at a reduced scale when the image is much larger than needed.
            im.draft("RGB", (size, size))
            return _preprocess(im, size, label)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image {label}: {_not_an_image(fp)}") from None
    except FileNotFoundError:
        raise ImageError(f"cannot read image {label}: file not found") from None
    except Image.DecompressionBombError as exc:  # PIL's own limit, beyond ours: refused at open
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageError(_too_large(label, int(found.group(1)) if found else None)) from None
    except Exception as exc:  # PIL raises many kinds of error on corrupt or hostile files
        raise ImageError(f"cannot read image {label}: {one_line(exc)}") from None


def _preprocess(im: Image.Image, size: int, label: str) -> np.ndarray:
    w, h = im.size
    if w * h > MAX_PIXELS:  # from the header: nothing is decoded yet
        raise ImageError(_too_large(label, w * h, f"{w} x {h}"))
    try:
        im.load()  # decode errors (truncated files) surface here, not at open; animations: frame 0
        im = ImageOps.exif_transpose(im)
    except Exception as exc:  # as above; a corrupt EXIF block can fail the transpose
        raise ImageError(f"cannot read image {label}: {one_line(exc)}") from None
    if im.mode.startswith("I"):
        im = _gray_16_to_8(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        im = _on_white(im)
    if im.mode != "RGB":  # (convert would copy an RGB image: memory a large image cannot spare)
        im = im.convert("RGB")
    w, h = im.size
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), _WHITE)
    canvas.paste(im, ((size - new_w) // 2, (size - new_h) // 2))
    return np.array(canvas, dtype=np.uint8)


def _gray_16_to_8(im: Image.Image) -> Image.Image:
    """16-bit grayscale (as PNG stores it) scaled to 8 bits: convert() would clip to 255, not
    rescale. Its transparency is one 16-bit value, so it becomes an alpha band (LA) here, where
    the values are still exact."""
    deep = im.convert("I")
    gray = deep.point(lambda v: v / 256).convert("L")
    gray.info.pop("transparency", None)  # (as carried over by the conversions, if at all)
    transparent = im.info.get("transparency")
    if not isinstance(transparent, int):
        return gray
    alpha = Image.fromarray(np.where(np.asarray(deep) == transparent, 0, 255).astype(np.uint8))
    return Image.merge("LA", (gray, alpha))


def _on_white(im: Image.Image) -> Image.Image:
    """The image composited on opaque white (RGBA); a helper, so the RGBA copy is freed on return."""
    rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, _WHITE + (255,))
    canvas.alpha_composite(rgba)
    return canvas


def _too_large(label: str, pixels: int | None, dims: str = "") -> str:
    found = f"{pixels:,} pixels" if pixels else "too many pixels"
    return (
        f"cannot read image {label}: {f'{dims} = {found}' if dims else found}, more than the {MAX_PIXELS:,} "
        "an image may have (a decompression bomb?); refused before decoding"
    )


def _not_an_image(fp: str | os.PathLike | BinaryIO) -> str:
    """What a file PIL does not recognise is, from its first bytes: empty, text, SVG, other."""
    try:
        if isinstance(fp, (str, os.PathLike)):
            with open(fp, "rb") as fh:
                head = fh.read(_SNIFF_BYTES)
        else:
            fp.seek(0)
            head = fp.read(_SNIFF_BYTES)
    except (OSError, ValueError):  # not readable again (a stream): no more to say
        head = None
    if head == b"":
        return "the file is empty"
    if head and b"<svg" in head.lower():
        return f"an SVG drawing, not a {FORMAT_NAMES} image (export it as PNG)"
    if head and b"\0" not in head:
        try:  # valid UTF-8 is text (incremental: a character cut at the end of the head is fine)
            if codecs.getincrementaldecoder("utf-8")().decode(head).strip():
                return f"a text file, not a {FORMAT_NAMES} image"
        except UnicodeDecodeError:
            pass
    return f"not a {FORMAT_NAMES} image (or the file is corrupt)"


def to_model_input(batch_uint8_nhwc: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 NHWC images -> NCHW floats in [-1, 1] (x / 127.5 - 1, as the original DVBPR code).

    Runs on the batch's device, so move the uint8 batch to the GPU first (4x less to copy).
    The result has channels_last strides, which convolutions handle fastest.
    """
    x = batch_uint8_nhwc
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (B, H, W, 3) batch, got {x.dtype} {tuple(x.shape)}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating point type, got {dtype}")
    nchw = x.permute(0, 3, 1, 2).to(dtype=dtype, memory_format=torch.channels_last)
    return nchw.div_(127.5).sub_(1.0)


class ImageStore:
    """uint8 array (n_items, size, size, 3) memory-mapped from a cache file next to the dataset.

    The cache is `<dataset>/.cache/images_<size>.u8` with a sidecar `images_<size>.json`; it is
    rebuilt when the dataset fingerprint (CSVs, image sizes and mtimes) changes.
    """

    def __init__(self, array: np.ndarray, size: int, fingerprint: str = "", stamps: list[str] | None = None) -> None:
        self.array = array
        self.size = size
        self.fingerprint = fingerprint  # the dataset's, when built from one: what the pixels come from
        self.stamps = stamps  # the dataset's `image_stamps` the fingerprint was computed from

    def __len__(self) -> int:
        return len(self.array)

    @classmethod
    def open(
        cls,
        dataset: Dataset,
        size: int,
        progress: bool = True,
        progress_callback: Callable[[float, str], None] | None = None,
        workers: int | None = None,
        stamps: list[str] | None = None,
    ) -> ImageStore:
        """Open the cache for `dataset` at `size`, building it first if missing or stale.
        `stamps`: the dataset's `image_stamps()` when the caller has them (stat'ing every image
        of a large catalogue takes seconds).

        ImageError listing every unreadable image (count, then the first 20) if any image
        cannot be decoded; no cache is written in that case.
        """
        data_path, meta_path = _cache_paths(dataset.root, size)
        shape = (dataset.n_items, size, size, 3)
        stamps = dataset.image_stamps() if stamps is None else stamps
        meta = _meta(dataset, size, dataset.fingerprint(stamps))
        if not _is_fresh(data_path, meta_path, meta):
            try:
                data_path.parent.mkdir(parents=True, exist_ok=True)
                # Drop the sidecar first: a crash mid-build must not leave it vouching for old data.
                meta_path.unlink(missing_ok=True)
                _build(dataset, size, data_path, progress, progress_callback, workers)
                atomic_write_json(meta_path, meta)
            except DVBPRError:
                raise
            except OSError as exc:  # a read-only dataset folder, for one
                raise ImageError(
                    f"cannot write the image cache in {data_path.parent}: {exc.strerror or one_line(exc)}"
                ) from None
        elif progress_callback is not None:
            progress_callback(1.0, f"using cached {size}px images")
        return cls(np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape), size, meta["fingerprint"], stamps)

    def batch(self, item_indices: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, size, size, 3) CPU tensor of the given items (one fancy-indexed read)."""
        if isinstance(item_indices, torch.Tensor):
            item_indices = item_indices.detach().cpu().numpy()
        return torch.from_numpy(self.array[np.asarray(item_indices, dtype=np.int64)])


def _cache_paths(root: Path, size: int) -> tuple[Path, Path]:
    """The cache of one size and its sidecar."""
    return root / CACHE_DIR / f"images_{size}.u8", root / CACHE_DIR / f"images_{size}.json"


def _meta(dataset: Dataset, size: int, fingerprint: str) -> dict:
    """The sidecar of a cache that is up to date for `dataset` (whose fingerprint is given)."""
    return {
        "fingerprint": fingerprint,
        "n_items": dataset.n_items,
        "size": size,
        "item_ids_sha": hashlib.sha256("\n".join(dataset.items.ids).encode()).hexdigest(),
    }


def _is_fresh(data_path: Path, meta_path: Path, meta: dict) -> bool:
    try:
        recorded = read_json(meta_path)
    except ValueError:  # a damaged sidecar just means rebuilding
        return False
    shape = (meta["n_items"], meta["size"], meta["size"], 3)
    return recorded == meta and data_path.is_file() and data_path.stat().st_size == int(np.prod(shape))


def append_to_caches(
    before: Dataset, before_fingerprint: str, after: Dataset, after_fingerprint: str, image: ImageSource
) -> list[int]:
    """The image caches of `before` extended by the image of the one item `after` appends to its
    catalogue (`dvbpr.catalogue.add_item`); returns the sizes extended."""

    def append(fh: BinaryIO, size: int) -> None:
        fh.seek(before.n_items * size * size * 3)
        fh.write(load_image(image, size).tobytes())
        fh.truncate()

    return _edit_caches(before, before_fingerprint, after, after_fingerprint, append)


def remove_from_caches(
    before: Dataset, before_fingerprint: str, after: Dataset, after_fingerprint: str, index: int
) -> list[int]:
    """The image caches of `before` without the row of item `index`, which `after` removes from
    its catalogue (`dvbpr.catalogue.remove_item`); returns the sizes changed."""

    def remove(fh: BinaryIO, size: int) -> None:
        row = size * size * 3
        source, chunk = (index + 1) * row, max(row, _CHUNK_BYTES // row * row)
        while source < before.n_items * row:  # the later rows, one place down
            fh.seek(source)
            block = fh.read(min(chunk, before.n_items * row - source))
            fh.seek(source - row)
            fh.write(block)
            source += len(block)
        fh.truncate((before.n_items - 1) * row)

    return _edit_caches(before, before_fingerprint, after, after_fingerprint, remove)


def _edit_caches(
    before: Dataset,
    before_fingerprint: str,
    after: Dataset,
    after_fingerprint: str,
    edit: Callable[[BinaryIO, int], None],
) -> list[int]:
    """Each image cache that was up to date for `before` changed in place by `edit(file, size)`
    into the one for `after`, instead of decoding every image again. The sidecar is dropped first
    and written last, so an interrupted edit leaves a cache that is rebuilt when opened; a cache
    that was not up to date is left to that too (and so is one whose edit failed: the catalogue
    change stands, the cache is derived from it)."""
    edited = []
    for meta_path in sorted((before.root / CACHE_DIR).glob("images_*.json")):
        size_text = meta_path.stem.removeprefix("images_")
        if not size_text.isdigit():
            continue
        size = int(size_text)
        data_path, _ = _cache_paths(before.root, size)
        if not _is_fresh(data_path, meta_path, _meta(before, size, before_fingerprint)):
            continue
        meta_path.unlink()
        try:
            with open(data_path, "r+b") as fh:
                edit(fh, size)
                fh.flush()
                os.fsync(fh.fileno())
            atomic_write_json(meta_path, _meta(after, size, after_fingerprint))
        except (OSError, ImageError):
            continue
        edited.append(size)
    return edited


def _build(
    dataset: Dataset,
    size: int,
    data_path: Path,
    progress: bool,
    progress_callback: Callable[[float, str], None] | None,
    workers: int | None,
) -> None:
    """Decode every item image into a temporary file, chunk by chunk, then move it into place.

    Workers write their chunk straight into the file through their own memmap, so no process
    ever holds more than one chunk of decoded pixels and none are sent between processes.
    """
    n = dataset.n_items
    workers = max(1, workers or min(os.cpu_count() or 1, 8))
    per_chunk = max(1, min(-(-n // (workers * 4)), _CHUNK_BYTES // (size * size * 3)))
    chunks = [range(start, min(start + per_chunk, n)) for start in range(0, n, per_chunk)]
    nbytes = n * size * size * 3
    fd, tmp = tempfile.mkstemp(prefix=f".{data_path.name}.", suffix=".tmp", dir=data_path.parent)
    try:
        with os.fdopen(fd, "r+b") as fh:
            _allocate(fh.fileno(), nbytes, data_path)
            task = _Task(tmp, n, size, dataset.image_paths.strings)
            failures: list[tuple[int, str]] = []
            done = 0
            if progress_callback is not None:
                progress_callback(0.0, f"decoding {n} images at {size}px")
            with tqdm(total=n, desc=f"decoding images ({size}px)", unit="img", disable=not progress) as bar:
                for chunk, errors in _decode_all(task, chunks, workers):
                    failures.extend((chunk.start + i, reason) for i, reason in errors)
                    done += len(chunk)
                    bar.update(len(chunk))
                    if progress_callback is not None:
                        progress_callback(done / n, f"decoded {done}/{n} images")
            if failures:
                raise ImageError(_failures_message(dataset, failures))
            os.fsync(fh.fileno())
        os.replace(tmp, data_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _allocate(fd: int, nbytes: int, data_path: Path) -> None:
    """Give the file its final size up front, so workers can fill in their parts.

    Reserving the blocks makes a full disk fail here, cleanly, instead of killing a process
    with SIGBUS when it writes through the memmap.
    """
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, nbytes)
        else:
            os.ftruncate(fd, nbytes)
    except OSError as exc:
        raise DVBPRError(f"cannot create the image cache {data_path} ({nbytes / 1e9:.2f} GB): {exc.strerror}") from None


def _failures_message(dataset: Dataset, failures: list[tuple[int, str]]) -> str:
    failures.sort()
    lines = [f"  item {dataset.items.ids[i]!r}: {reason}" for i, reason in failures[:_LISTED_ERRORS]]
    if len(failures) > _LISTED_ERRORS:
        lines.append(f"  ... and {len(failures) - _LISTED_ERRORS} more")
    return f"dataset {dataset.name!r}: {len(failures)} of {dataset.n_items} images cannot be read:\n" + "\n".join(lines)


class _Task(NamedTuple):
    """What every worker needs: the output file, its shape, and the image paths."""

    out_path: str
    n_items: int
    size: int
    paths: list[str]


def _decode_all(task: _Task, chunks: list[range], workers: int) -> Iterator[tuple[range, list[tuple[int, str]]]]:
    """Decode the chunks (in worker processes when there are several); yield each chunk's errors."""
    if workers == 1 or len(chunks) == 1:
        for chunk in chunks:
            yield chunk, _decode_chunk(chunk, task)
        return
    # fork starts workers instantly and shares the task (paths) without pickling it.
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_set_task, initargs=(task,))
    try:
        pending: dict[Future, range] = {}
        queue = iter(chunks)
        while True:
            # Only a few chunks queued at a time, so Ctrl-C or a crashed worker stops it promptly.
            while len(pending) < 2 * workers and (chunk := next(queue, None)) is not None:
                pending[pool.submit(_decode_chunk, chunk)] = chunk
            if not pending:
                return
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                chunk = pending.pop(future)
                try:
                    errors = future.result()
                except BrokenProcessPool:  # killed (e.g. out of memory) or crashed in a decoder
                    raise ImageError(
                        f"a worker process decoding the images from {task.paths[chunk.start]} to "
                        f"{task.paths[chunk.stop - 1]} (or others decoded at the same time) died: out of "
                        "memory, or an image crashed the decoder; no image cache was written"
                    ) from None
                yield chunk, errors
    finally:
        pool.shutdown(cancel_futures=True)  # an error or Ctrl-C must not wait for the rest


_worker_task: _Task | None = None  # set once per worker process, so chunks carry no paths


def _set_task(task: _Task) -> None:
    global _worker_task
    _worker_task = task


def _decode_chunk(chunk: range, task: _Task | None = None) -> list[tuple[int, str]]:
    """Decode a run of images into the output file; return (offset, reason) of unreadable ones.

    `task` is given in-process; worker processes use the one their initializer set.
    """
    task = task if task is not None else _worker_task
    if task is None:
        raise RuntimeError("_decode_chunk called in a process without a task")
    out = np.memmap(task.out_path, dtype=np.uint8, mode="r+", shape=(task.n_items, task.size, task.size, 3))
    errors: list[tuple[int, str]] = []
    for i, index in enumerate(chunk):
        try:
            out[index] = load_image(task.paths[index], task.size)
        except ImageError as exc:
            errors.append((i, str(exc)))  # the row stays black; the build fails anyway
    out.flush()
    del out
    return errors
