"""Image preprocessing (`load_image`), `to_model_input` and the `ImageStore` cache."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dvbpr.data import load_dataset
from dvbpr.errors import ImageError
from dvbpr.features import copy_to_device
from dvbpr.images import ImageStore, load_image, to_model_input
from tests.helpers import item_colour, make_tiny_dataset, write_image

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def close(pixel: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.abs(pixel.astype(int) - colour).max() <= tol)


def halves(size: tuple[int, int] = (40, 20), mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue."""
    im = Image.new(mode, size, BLUE)
    im.paste(RED, (0, 0, size[0] // 2, size[1]))
    return im


# --- load_image -------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    halves().save(path, "JPEG", quality=95, exif=exif.tobytes())
    out = load_image(path, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    # Displayed upright the 40x20 image is 20 wide, 40 tall, red on top: a centred column.
    assert close(out[4, 16], RED) and close(out[28, 16], BLUE)
    assert close(out[16, 1], WHITE) and close(out[16, 30], WHITE)


def test_non_square_is_padded_with_white_centred() -> None:
    out = load_image(Image.new("RGB", (32, 16), RED), 16)
    assert (out[:4] == 255).all() and (out[12:] == 255).all()
    assert (out[4:12] == RED).all()


def test_rgba_transparency_composited_on_white() -> None:
    im = halves(mode="RGBA")
    im.paste((0, 0, 0, 0), (20, 0, 40, 20))  # right half fully transparent black
    im.putpixel((0, 0), (0, 0, 0, 128))
    out = load_image(im, 40)
    assert (out[10:30, 21:] == 255).all()
    assert (out[15, :19] == RED).all()
    assert close(out[10, 0], (127, 127, 127), tol=2)  # half-transparent black over white


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, *RED] + [0] * 762)
    im.paste(1, (0, 0, 4, 8))
    path = tmp_path / "p.png"
    im.save(path, transparency=0)  # palette index 0 (black) is transparent
    out = load_image(path, 8)
    assert (out[:, :4] == RED).all() and (out[:, 4:] == 255).all()


def test_la_and_grayscale_become_rgb(tmp_path: Path) -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    assert (load_image(la, 4) == 255).all()
    gray = load_image(Image.new("L", (4, 4), 90), 4)
    assert gray.shape == (4, 4, 3) and (gray == 90).all()
    path = tmp_path / "deep.png"
    Image.new("I;16", (4, 4), 32768).save(path)  # 16-bit: scaled, not clipped to white
    assert np.abs(load_image(path, 4).astype(int) - 128).max() <= 1


def test_sources_bytes_file_object_and_webp(tmp_path: Path) -> None:
    path = write_image(tmp_path / "a.webp", (10, 200, 30), size=(16, 16))
    expected = load_image(path, 16)
    assert close(expected[12, 12], (10, 200, 30), tol=20)
    assert (load_image(path.read_bytes(), 16) == expected).all()
    with path.open("rb") as fh:
        assert (load_image(fh, 16) == expected).all()
    assert (load_image(str(path), 16) == expected).all()


def test_large_jpeg_matches_colour_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    halves((800, 400)).save(path, quality=95)  # large enough for a reduced-scale decode
    out = load_image(path, 64)
    assert out.shape == (64, 64, 3)
    assert close(out[32, 5], RED, tol=20) and close(out[32, 58], BLUE, tol=20) and (out[:14] == 255).all()


def test_text_file_named_jpg_is_an_image_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(ImageError, match="notes.jpg"):
        load_image(path, 8)
    with pytest.raises(ImageError, match="upload.png"):
        load_image(b"garbage", 8, name="upload.png")


def test_truncated_missing_unsupported_and_bomb_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = tmp_path / "full.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(full, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:600])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(cut, 8)
    with pytest.raises(ImageError, match="missing.png: file not found"):
        load_image(tmp_path / "missing.png", 8)
    bmp = io.BytesIO()
    Image.new("RGB", (4, 4)).save(bmp, "BMP")
    with pytest.raises(ImageError, match="not a JPEG, PNG, WebP or GIF"):
        load_image(bmp.getvalue(), 8, name="old.bmp")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="full.jpg.*decompression bomb"):
        load_image(full, 8)


def test_to_model_input_range_layout_and_dtype() -> None:
    batch = torch.tensor([[[[0, 255, 51]]]], dtype=torch.uint8).expand(2, 3, 5, 3)
    x = to_model_input(batch)
    assert x.shape == (2, 3, 3, 5) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x[:, 0], torch.tensor(-1.0)) and torch.allclose(x[:, 1], torch.tensor(1.0))
    assert torch.allclose(x[:, 2], torch.tensor(51 / 127.5 - 1))
    assert to_model_input(batch, torch.float16).dtype == torch.float16
    with pytest.raises(ValueError):
        to_model_input(batch[0])


# --- ImageStore -------------------------------------------------------------------------------


@pytest.fixture
def dataset_root(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path / "ds", n_users=5, n_items=9, image_format="jpg", image_size=(20, 12))


def test_store_matches_load_image_and_batches(dataset_root: Path) -> None:
    ds = load_dataset(dataset_root)
    calls: list[tuple[float, str]] = []
    store = ImageStore.open(ds, 16, progress=False, progress_callback=lambda f, m: calls.append((f, m)), workers=2)
    assert len(store) == 9 and store.size == 16
    assert store.array.shape == (9, 16, 16, 3) and not store.array.flags.writeable
    expected = np.stack([load_image(p, 16) for p in ds.image_paths])
    assert (np.asarray(store.array) == expected).all()
    assert close(expected[3, 12, 12], item_colour(3), tol=20)
    assert calls[0][0] == 0.0 and calls[-1][0] == 1.0
    assert [f for f, _ in calls] == sorted(f for f, _ in calls)

    for idx in (np.array([4, 0, 4]), torch.tensor([4, 0, 4])):
        batch = store.batch(idx)
        assert batch.dtype == torch.uint8 and batch.shape == (3, 16, 16, 3)
        assert (batch.numpy() == expected[[4, 0, 4]]).all()

    serial = tuple(ImageStore.open(ds, 12, progress=False, workers=1).array)
    parallel = tuple(ImageStore.open(load_dataset(dataset_root), 12, progress=False, workers=3).array)
    assert all((a == b).all() for a, b in zip(serial, parallel))


def test_store_copies_to_a_device_in_chunks_without_a_read_only_warning(dataset_root: Path) -> None:
    # On CUDA ImageBatches keeps the whole store on the GPU; the store is a read-only memmap,
    # which torch.from_numpy warns about. Chunks smaller than a row, of some rows and of all.
    store = ImageStore.open(load_dataset(dataset_root), 16, progress=False, workers=1)
    row = store.array[:1].nbytes
    for chunk_bytes in (1, 4 * row, 100 * row):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            copied = copy_to_device(store.array, torch.device("cpu"), chunk_bytes=chunk_bytes)
        assert copied.dtype == torch.uint8 and copied.shape == store.array.shape
        assert (copied.numpy() == np.asarray(store.array)).all()


def test_store_cache_is_reused_then_rebuilt_when_an_image_changes(dataset_root: Path) -> None:
    ds = load_dataset(dataset_root)
    cache = dataset_root / ".cache" / "images_16.u8"
    ImageStore.open(ds, 16, progress=False)
    first = cache.stat()
    assert (dataset_root / ".cache" / "images_16.json").is_file()

    ImageStore.open(load_dataset(dataset_root), 16, progress=False)
    again = cache.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)

    changed = ds.image_paths[2]
    write_image(changed, (0, 0, 0), size=(20, 12))
    # A distinct mtime for sure, even on filesystems with coarse timestamps.
    os.utime(changed, ns=(first.st_mtime_ns, first.st_mtime_ns + 10**9))
    store = ImageStore.open(load_dataset(dataset_root), 16, progress=False)
    rebuilt = cache.stat()
    assert rebuilt.st_ino != first.st_ino
    assert (np.asarray(store.array[2]) == load_image(changed, 16)).all()
    assert [p.name for p in (dataset_root / ".cache").iterdir() if p.suffix == ".tmp"] == []


def test_unreadable_images_are_all_listed(tmp_path: Path) -> None:
    root = make_tiny_dataset(tmp_path / "ds", n_users=30, n_items=30, per_user=1)
    for j in (3, 7):
        (root / "images" / f"i{j}.png").write_text("broken")
    ds = load_dataset(root)
    with pytest.raises(ImageError) as exc:
        ImageStore.open(ds, 8, progress=False, workers=2)
    msg = str(exc.value)
    assert "2 of 30 images cannot be read" in msg
    assert "item 'i3'" in msg and "i3.png" in msg and "item 'i7'" in msg and "i7.png" in msg
    assert not any((root / ".cache").iterdir())  # no cache, no temp file left behind

    for j in range(30):
        (root / "images" / f"i{j}.png").write_text("broken")
    with pytest.raises(ImageError, match=r"30 of 30 images(.|\n)*and 10 more"):
        ImageStore.open(load_dataset(root), 8, progress=False, workers=1)


def test_damaged_sidecar_means_rebuild(dataset_root: Path) -> None:
    ds = load_dataset(dataset_root)
    ImageStore.open(ds, 8, progress=False)
    cache = dataset_root / ".cache" / "images_8.u8"
    before = cache.stat().st_ino
    (dataset_root / ".cache" / "images_8.json").write_text("{not json")
    store = ImageStore.open(ds, 8, progress=False)
    assert cache.stat().st_ino != before and len(store) == ds.n_items
