"""Atomic file writes and validation of names that become paths.

Writers go to a temporary file in the destination folder and `os.replace` it into place, so a
crash or SIGKILL leaves either the old file or the new one, never half of one. A write that finds
the disk full removes its temporary file and raises `DiskFullError`, naming the file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import DiskFullError, DVBPRError

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # fullmatch: "$" lets "name\n" through


def safe_name(name: str, what: str = "name") -> str:
    """Return `name` if it is safe as a single path component, else raise DVBPRError."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name in {".", ".."}:
        raise DVBPRError(
            f"invalid {what} {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _no_space(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT error behind `exc`, if any: torch.save reports a failed write as a
    RuntimeError raised while handling the OSError, so the chain is walked."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _raise_if_disk_full(path: Path, exc: BaseException) -> None:
    """DiskFullError naming `path` when `exc` comes from a full disk; nothing otherwise."""
    cause = _no_space(exc)
    if cause is not None:
        raise _disk_full(path, cause) from exc


def _disk_full(path: Path, cause: OSError) -> DiskFullError:
    try:
        st = os.statvfs(path.parent)
        free = f"{st.f_bavail * st.f_frsize / 2**20:.1f} MB free there"
    except OSError:
        free = "free space unknown"
    reason = cause.strerror or "no space left on device"
    return DiskFullError(f"the disk is full ({reason}) writing {path} ({free}); free some space and try again")


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write `path` atomically through `write(file_object)` (e.g. `lambda fh: torch.save(obj, fh)`).
    DiskFullError when the disk is full: the old file is kept and the partial new one removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary shared files
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)  # first: the space it took is what the caller may need next
        except FileNotFoundError:
            pass
        _raise_if_disk_full(path, exc)
        raise
    return path


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a log file; a write cut short (a full disk) is undone, so the file
    never holds half a line that the next one would run into. DiskFullError as atomic_write."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            os.ftruncate(fd, end)
            _raise_if_disk_full(path, exc)
            raise
    finally:
        os.close(fd)


def rewrite_json_in_place(path: str | os.PathLike, obj: Any) -> None:
    """Overwrite an existing small JSON file in place, padded with spaces (valid JSON) to its old
    length: the last resort when the disk is too full for an atomic write's temporary file. It
    needs no new space when the JSON fits the blocks the file already has (not so on a
    copy-on-write file system: DiskFullError, as for a file too small); it is one small write
    into blocks the file already has, so the file holds the old bytes or the new ones."""
    path = Path(path)
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    st = os.stat(path)
    if len(data) > max(st.st_size, st.st_blocks * 512) or len(data) > 4096:
        raise _disk_full(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    data = data.ljust(st.st_size)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    except OSError as exc:
        _raise_if_disk_full(path, exc)
        raise
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), "w")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of a file, for caches keyed by its exact bytes (a checkpoint's)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """Read a JSON file; `default` when it does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def is_file_locked(path: str | os.PathLike) -> bool:
    """True while another process holds an exclusive flock on `path` (dropped by the kernel when
    that process dies, even by SIGKILL)."""
    if not os.path.exists(path):
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False
