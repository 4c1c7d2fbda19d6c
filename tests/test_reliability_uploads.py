"""Hostile uploads and checkpoints (issue 13, sections 1 and 3).

Every file of the issue's list is made here (PIL, numpy, bytes) and sent through the Python API
(`load_image`, `Recommender.rank_users` / `similar_items(image=...)`) and the CLI (`rank-users`,
`similar --image`): each gives a correct result, checked on the pixels the model sees, or one
line saying what is wrong. The decompression bomb also goes through the real entry point in a
subprocess, whose peak memory and time are measured. Checkpoints with code in them, cut short or
of another dataset are refused, and the code is never run.

The Upload page's side is `test_upload_page_refuses_a_bomb_and_text_and_reads_a_gif` in
tests/test_browser.py.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from dvbpr import cli
from dvbpr.checkpoint import load_checkpoint
from dvbpr.errors import CheckpointError, DatasetChangedError, ImageError
from dvbpr.images import MAX_PIXELS, load_image
from dvbpr.recommender import Recommender

REPO = Path(__file__).resolve().parent.parent
S = 32  # the tiny run's image size: what the model sees
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 160, 0)
BOMB_SIDE = 40_000
GIB_KB = 1 << 20  # ru_maxrss is in KiB on Linux
# dvbpr.images silences PIL's warning before its own refusal, but pytest resets the filters per test
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


# ----------------------------------------------------------------------------- the files
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, side: int = BOMB_SIDE, rows_per_segment: int = 1000) -> Path:
    """A valid 1-bit black PNG of side x side pixels in a few hundred KB, written in a fraction of
    a second: its rows (a filter byte 0 and zero bits) are all zero bytes, so one compressed
    segment of rows, ended by a full flush (it then refers to nothing before it), is repeated."""
    row_bytes = 1 + (side + 7) // 8
    segment = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = segment.compress(bytes(row_bytes * rows_per_segment)) + segment.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(side, rows_per_segment)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = tail.compress(bytes(row_bytes * rest)) + tail.flush()
    adler = ((side * row_bytes) % 65521) << 16 | 1  # Adler-32 of that many zero bytes
    idat = b"\x78\xda" + block * full + last + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )
    return path


def halves(size: tuple[int, int] = (64, 32), mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue (so a rotation or a mirror would show)."""
    im = Image.new(mode, size, BLUE)
    im.paste(RED, (0, 0, size[0] // 2, size[1]))
    return im


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _cmyk_jpeg() -> bytes:
    return _save(halves().convert("CMYK"), "JPEG", quality=95)


def _gray16_png() -> bytes:
    deep = np.full((32, 64), 16384, dtype=np.uint16)
    deep[:, 32:] = 49152
    return _save(Image.fromarray(deep), "PNG")  # mode I;16


def _palette_transparent_png() -> bytes:
    im = Image.new("P", (64, 32), 0)
    im.putpalette([0, 0, 0, *RED] + [0] * 762)
    im.paste(1, (0, 0, 32, 32))
    return _save(im, "PNG", transparency=0)  # palette index 0 (black): the right half, transparent


def _animated(fmt: str, **kw) -> bytes:
    """First frame red | blue, then a green frame: only the first may be seen."""
    return _save(halves(), fmt, save_all=True, append_images=[Image.new("RGB", (64, 32), GREEN)], duration=100, **kw)


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored lying on its side: "rotate 90 degrees clockwise to display"
    return _save(halves().transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())


def _truncated_jpeg() -> bytes:
    whole = _save(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG", quality=95)
    return whole[: len(whole) // 2]


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b'<rect width="64" height="64" fill="red"/></svg>\n'
)


# --------------------------------------------------------------------------- expectations
def close(pixels: np.ndarray, colour: tuple[int, int, int], tol: int = 24) -> bool:
    return bool(np.abs(pixels.astype(int) - colour).max() <= tol)


def band(out: np.ndarray) -> bool:
    """A 2:1 image as the model sees it: a band in the middle (rows 8-23), white above and below."""
    return bool((out[:8] == 255).all() and (out[24:] == 255).all())


def halves_seen(out: np.ndarray, tol: int = 24) -> bool:
    """The red | blue picture of `halves` as the model sees it (away from the edge between them)."""
    return band(out) and close(out[9:23, 2:14], RED, tol) and close(out[9:23, 18:30], BLUE, tol)


def _upright(out: np.ndarray) -> bool:
    """The rotated JPEG shown upright equals the same picture stored upright, up to JPEG noise."""
    upright = load_image(_save(halves(), "JPEG", quality=95), S)
    return np.abs(out.astype(int) - upright).mean() < 3 and halves_seen(out)


def _gray16(out: np.ndarray) -> bool:
    """16384 | 49152 of 65535: scaled to 64 | 192, not clipped to white."""
    return band(out) and close(out[9:23, 2:14], (64,) * 3, 1) and close(out[9:23, 18:30], (192,) * 3, 1)


def _palette(out: np.ndarray) -> bool:
    return close(out[9:23, 2:14], RED, 0) and (out[:, 18:] == 255).all()  # the transparent half: white


def _first_frame(out: np.ndarray) -> bool:
    return bool((out == load_image(halves(), S)).all())  # exact: palette-exact colours, lossless WebP


@dataclass(frozen=True)
class Case:
    name: str  # the file name, extension included (a lie, for some)
    make: Callable[[Path], object]  # writes the file
    refusal: str = ""  # a pattern of the one-line message; "" when it is a usable image
    check: Callable[[np.ndarray], bool] | None = None  # holds for load_image(file, S)


def _bytes(data: bytes | Callable[[], bytes]) -> Callable[[Path], object]:
    return lambda path: path.write_bytes(data() if callable(data) else data)


CASES = [
    Case("bomb.png", write_png_bomb, r"1,600,000,000 pixels, more than the 25,000,000 .*decompression bomb"),
    # under PIL's own limit (2 x 89 M pixels), so our check from the header refuses it
    Case(
        "bomb-100mp.png",
        lambda p: write_png_bomb(p, 10_000),
        r"10000 x 10000 = 100,000,000 pixels.*refused before decoding",
    ),
    Case("empty.png", _bytes(b""), r"the file is empty"),
    Case("cut.jpg", _bytes(_truncated_jpeg), r"truncated"),
    Case("notes.png", _bytes(b"user_id,item_id\nu1,i1\n"), r"a text file, not a JPEG, PNG, WebP or GIF image"),
    Case("drawing.svg", _bytes(SVG), r"an SVG drawing, not a JPEG, PNG, WebP or GIF image"),
    Case("cmyk.jpg", _bytes(_cmyk_jpeg), check=halves_seen),
    Case("gray16.png", _bytes(_gray16_png), check=_gray16),
    Case("palette-alpha.png", _bytes(_palette_transparent_png), check=_palette),
    Case("animated.gif", _bytes(lambda: _animated("GIF")), check=_first_frame),
    Case("animated.webp", _bytes(lambda: _animated("WEBP", lossless=True)), check=_first_frame),
    Case("dot.png", _bytes(lambda: _save(Image.new("RGB", (1, 1), RED), "PNG")), check=lambda o: close(o, RED, 0)),
    Case(
        "strip.png",
        _bytes(lambda: _save(Image.new("RGB", (8000, 8), RED), "PNG")),
        # 8 rows of 8000 scaled to 32 wide: one row, centred
        check=lambda o: close(o[15], RED, 0) and bool((np.delete(o, 15, axis=0) == 255).all()),
    ),
    Case("rotated.jpg", _bytes(_exif_rotated_jpeg), check=_upright),
    Case(
        "clear.png",
        _bytes(lambda: _save(Image.new("RGBA", (64, 32), (200, 0, 0, 0)), "PNG")),
        check=lambda o: bool((o == 255).all()),  # red under alpha 0: nothing to see
    ),
    Case("photo.png", _bytes(lambda: _save(halves(), "JPEG", quality=95)), check=halves_seen),  # a JPEG
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    for case in CASES:
        case.make(folder / case.name)
    return {case.name: folder / case.name for case in CASES}


def one_line_refusal(message: str, case: Case) -> None:
    assert "\n" not in message and case.name in message and re.search(case.refusal, message), message


# ------------------------------------------------------------------------------ the API
def test_the_bomb_is_a_valid_png_of_a_few_hundred_kb(files: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    assert 100_000 < files["bomb.png"].stat().st_size < 400_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's own limit off: its header is read
    with Image.open(files["bomb.png"]) as im:
        assert (im.size, im.mode) == ((BOMB_SIDE, BOMB_SIDE), "1")
    small = write_png_bomb(tmp_path / "small.png", 1500)  # the same writer, decoded: all black
    with Image.open(small) as im:
        assert im.size == (1500, 1500) and im.getextrema() == (0, 0)
    assert BOMB_SIDE**2 > MAX_PIXELS


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_api(case: Case, files: dict[str, Path], tiny_rec: Recommender) -> None:
    path = files[case.name]
    raw = path.read_bytes()
    calls = {
        "load_image": lambda src: load_image(src, S, name=case.name),
        "rank_users": lambda src: tiny_rec.rank_users(src, k=5, name=case.name),
        "cold_item": lambda src: tiny_rec.cold_item(src, name=case.name).user_scores,  # the Upload page's path
        "similar_items": lambda src: tiny_rec.similar_items(image=src, k=5),
    }
    if case.refusal:
        for what, call in calls.items():
            for source in (path, raw):
                with pytest.raises(ImageError) as err:
                    call(source)
                if what != "similar_items" or source is path:  # similar_items takes no name for bytes
                    one_line_refusal(str(err.value), case)
        return
    pixels = load_image(path, S)
    assert case.check(pixels)
    assert (load_image(raw, S) == pixels).all()
    users, scores = tiny_rec.rank_users(path, k=5)
    from_pixels = tiny_rec.rank_users(pixels, k=5)  # the same preprocessing on the upload path
    assert users == from_pixels[0] and (scores == from_pixels[1]).all()
    np.testing.assert_array_equal(tiny_rec.cold_item(raw, name=case.name).pixels, pixels)
    ids, sims = tiny_rec.similar_items(image=path, k=5)
    assert len(ids) == 5 and np.all(np.diff(sims) <= 0)


# ------------------------------------------------------------------------------ the CLI
def _cli(capsys, *argv: object) -> tuple[int, str, list[str]]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    # progress bars may come first (cleared with \r); an error is one last line
    return code, out, [line for line in err.replace("\r", "\n").splitlines() if line.strip()]


def _refused_by_cli(code: int, lines: list[str], case: Case) -> None:
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and errors == lines[-1:], lines
    one_line_refusal(errors[0], case)
    assert not any("Traceback" in line for line in lines)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cli(case: Case, files: dict[str, Path], tiny_run: Path, tiny_rec: Recommender, capsys) -> None:
    path = files[case.name]
    code, out, lines = _cli(capsys, "rank-users", tiny_run, path, "-k", "5", "--json", "--device", "cpu")
    if case.refusal:
        _refused_by_cli(code, lines, case)
    else:
        assert code == 0, lines
        users, scores = tiny_rec.rank_users(path, k=5)
        got = json.loads(out)["users"]
        assert [u["user_id"] for u in got] == users
        np.testing.assert_allclose([u["score"] for u in got], scores, rtol=1e-6)
    code, out, lines = _cli(capsys, "similar", tiny_run, "--image", path, "-k", "5", "--json", "--device", "cpu")
    if case.refusal:
        _refused_by_cli(code, lines, case)
    else:
        assert code == 0, lines
        assert [i["item_id"] for i in json.loads(out)["items"]] == tiny_rec.similar_items(image=path, k=5)[0]


# Runs a command and prints, as JSON, its exit status, output, time and peak memory: RUSAGE_CHILDREN
# of this wrapper covers that command alone, not the other children of the test process. A
# command still running after 90 s (a hang) fails the wrapper, hence the test.
MEASURE = """
import json, resource, subprocess, sys, threading, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
out = {}
reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate(timeout=90))))
reader.start()
anon = 0  # RssAnon, sampled every 2 ms: the memory the process allocated (a decoded bomb would last far longer)
while reader.is_alive():
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            anon = max([anon] + [int(line.split()[1]) for line in fh if line.startswith("RssAnon:")])
    except OSError:
        pass
    time.sleep(0.002)
reader.join()
print(json.dumps({"code": proc.returncode, "stderr": out["stderr"], "seconds": time.perf_counter() - t0,
    "max_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "max_anon_kb": anon}))
"""


def measured(*argv: object) -> dict:
    """The real entry point (`python -m dvbpr ...`) in a subprocess, measured."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "dvbpr", *map(str, argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "argv",
    # the first is refused by PIL's own limit at open, the second by ours from the header: without
    # it, decoding would add 100 MB (1 byte a pixel) and 300 MB in RGB to the ~0.7 GB of the CLI
    [["rank-users", "RUN", "bomb.png"], ["similar", "RUN", "--image", "bomb-100mp.png"]],
    ids=["rank-users", "similar"],
)
def test_cli_refuses_bombs_in_bounded_memory(
    argv: list[str], files: dict[str, Path], tiny_run: Path, valid_image_peak_kb: int
) -> None:
    bomb = next(c for c in CASES if c.name == argv[-1])
    run = measured(*[{"RUN": tiny_run, bomb.name: files[bomb.name]}.get(a, a) for a in argv], "--device", "cpu")
    lines = [line for line in run["stderr"].replace("\r", "\n").splitlines() if line.strip()]
    _refused_by_cli(run["code"], lines, bomb)
    assert not any("Warning" in line for line in lines), lines  # PIL's DecompressionBombWarning
    # The process's own memory stays under 1 GiB. Its total peak RSS also counts torch's shared
    # library pages, 230 to 440 MB depending on the page cache (1.05 GB in a fresh venv), so that
    # is compared with a valid image's instead: the bomb adds nothing.
    assert 0 < run["max_anon_kb"] < GIB_KB, f"peak allocated memory {run['max_anon_kb'] / 1024:.0f} MiB"
    assert run["max_rss_kb"] < valid_image_peak_kb + 64 * 1024, (run["max_rss_kb"], valid_image_peak_kb)
    print(
        f"{argv[0]} {bomb.name}: {run['max_anon_kb'] / 1024:.0f} MiB allocated at most, "
        f"{run['max_rss_kb'] / 1024:.0f} MiB peak RSS (a valid image: {valid_image_peak_kb / 1024:.0f}), "
        f"{run['seconds']:.1f} s"
    )


@pytest.fixture(scope="module")
def valid_image_peak_kb(files: dict[str, Path], tiny_run: Path) -> int:
    """Peak RSS of the same command for a 1 x 1 PNG, in this environment."""
    run = measured("rank-users", tiny_run, files["dot.png"], "--device", "cpu")
    assert run["code"] == 0, run["stderr"]
    return run["max_rss_kb"]


# --------------------------------------------------------------------------- checkpoints
class RunsCode:
    """Pickled, it is a call of exec that writes `marker`: what a hostile checkpoint would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _write_with_code(path: Path, marker: Path, bare: bool) -> None:
    """The run's own checkpoint plus the code: as a bare pickle, or in torch.save's zip archive."""
    ckpt = load_checkpoint(path)
    ckpt["extra"] = RunsCode(marker)
    if bare:
        path.write_bytes(pickle.dumps(ckpt))
    else:
        torch.save(ckpt, path)


def _refused_everywhere(run: Path, data: Path, pattern: str, capsys, error: type = CheckpointError) -> str:
    """Refused by Recommender.from_run and by the CLI, in one line; the message."""
    with pytest.raises(error, match=pattern) as err:
        Recommender.from_run(run, data=data, device="cpu")
    message = str(err.value)
    code, _, lines = _cli(capsys, "recommend", run, "--data", data, "--user", "u0", "--device", "cpu")
    assert code == 2 and lines[-1:] == [f"error: {message}"] and "\n" not in message, lines
    return message


@pytest.mark.parametrize("bare", [True, False], ids=["bare-pickle", "torch-archive"])
def test_a_checkpoint_with_code_is_refused_and_never_run(
    bare: bool, tiny_run: Path, tiny_data: Path, tiny_copy, tmp_path: Path, capsys
) -> None:
    run = tiny_copy(tiny_run, "run")
    # the payload works: loaded without weights_only, it runs
    control, control_marker = tmp_path / "control.pt", tmp_path / "control-ran"
    control.write_bytes((run / "best.pt").read_bytes())
    _write_with_code(control, control_marker, bare)
    if bare:
        pickle.loads(control.read_bytes())
    else:
        torch.load(control, weights_only=False)
    assert control_marker.read_text() == "ran"

    marker = tmp_path / "ran"
    for name in ("best.pt", "last.pt"):
        if (run / name).exists():
            _write_with_code(run / name, marker, bare)
    pattern = "bare Python pickle" if bare else r"pickled Python objects \(exec\)"
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(run / "best.pt")
    message = _refused_everywhere(run, tiny_data, pattern, capsys)
    assert "best.pt" in message and "could run code" in message
    assert not marker.exists()


def test_a_truncated_checkpoint_is_refused(tiny_run: Path, tiny_data: Path, tiny_copy, capsys) -> None:
    run = tiny_copy(tiny_run, "run")
    for name in ("best.pt", "last.pt"):
        if (run / name).exists():
            whole = (run / name).read_bytes()
            (run / name).write_bytes(whole[: len(whole) // 2])
    message = _refused_everywhere(run, tiny_data, r"best\.pt: the file is truncated", capsys)
    assert message.startswith("cannot read checkpoint")


def test_a_checkpoint_of_another_dataset_is_refused(tiny_run: Path, tiny_make_dataset, tmp_path: Path, capsys) -> None:
    other = tiny_make_dataset(tmp_path / "other", n_users=30, n_items=40, seed=1)
    message = _refused_everywhere(
        run=tiny_run, data=other, pattern="users differ", capsys=capsys, error=DatasetChangedError
    )
    assert str(other) in message and "items differ" in message and "--init-from" in message


def test_a_checkpoint_of_a_dataset_with_no_id_in_common_says_so(tiny_run: Path, tiny_data: Path) -> None:
    from dvbpr.data import load_dataset
    from dvbpr.recommender import check_compatible

    ckpt = torch.load(tiny_run / "best.pt", weights_only=True)
    dataset = load_dataset(tiny_data)
    check_compatible(ckpt, dataset, tiny_run / "best.pt")  # its own dataset: no complaint
    renamed = dict(ckpt, user_ids=[f"x{u}" for u in ckpt["user_ids"]], item_ids=[f"y{i}" for i in ckpt["item_ids"]])
    with pytest.raises(DatasetChangedError, match="another dataset .* no user or item id in common") as info:
        check_compatible(renamed, dataset, tiny_run / "best.pt")
    assert "changed since" not in str(info.value) and str(tiny_data) in str(info.value)


def test_the_upload_pages_preview_decodes_a_large_jpeg_at_a_reduced_scale(monkeypatch) -> None:
    """A 30-megapixel JPEG is usable (load_image decodes it at 1/8 scale) and the Upload page shows
    it through `loaders.upload_preview`, at that scale too: st.image given the bytes would decode
    them in full (a 3 MB JPEG of 168 megapixels: 0.5 GB in the app's process)."""
    from ui import loaders

    big = _save(Image.new("L", (6000, 5000), 128), "JPEG")
    decoded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(im.size) or load(im))
    preview = loaders.upload_preview(big, "big.jpg")
    assert preview.shape == (320, 320, 3) and close(preview[160], (128,) * 3, 2)
    assert decoded and max(w * h for w, h in decoded) <= MAX_PIXELS < 6000 * 5000, decoded
