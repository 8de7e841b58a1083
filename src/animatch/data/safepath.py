"""Paths that come from data, kept inside their root: the one check before such a file is opened.

A record's `file_name` (raw metadata, a prepared split, an index's records.jsonl) or a relative `image` of
a pairs file is untrusted text. `name_problem` rejects, without touching the disk, names holding control
characters (NUL included), absolute names, drive letters and `..` parts. `path_inside(root, name)` also
resolves the path, symlinks followed, and rejects one that ends outside the root or at anything but a
regular file: a device, FIFO, socket or directory is never opened. `read_bounded` reads a checked file
with a size cap and re-checks the type on the open descriptor (opened non-blocking, so a FIFO swapped in
after the check cannot hang the reader). Rejections raise `UnsafePath`, an `ImageLoadError`, so every
image reader counts them under their reason like any other unusable image.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from animatch.data.images import ImageLoadError

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
MAX_FILE_BYTES = 256 * 2**20  # far above any real dataset image; a bound on one read, not a quality check


class UnsafePath(ImageLoadError):
    """A data path that may not be opened; `.reason` starts with "unsafe file_name", "unsafe path" or
    "not a regular file"."""


def name_problem(name: str) -> str | None:
    """Why `name` (relative to a root) is unsafe as written, or None; looks at the text only."""
    if CONTROL_CHARACTERS.search(name):
        return "unsafe file_name: holds a control character"
    posix = name.replace("\\", "/")
    parts = PurePosixPath(posix).parts
    if not parts:
        return "unsafe file_name: empty"
    if posix.startswith("/") or ":" in parts[0]:
        return "unsafe file_name: absolute path"
    if ".." in parts:
        return "unsafe file_name: '..' leaves the root"
    return None


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
             (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))
    return next((name for test, name in kinds if test(mode)), "special file")


def path_inside(root: str | os.PathLike, name: str) -> Path:
    """`root / name` once it is known to stay inside `root` (symlinks followed) and to be a regular file or
    missing (the image loader reports a missing file); UnsafePath otherwise."""
    problem = name_problem(name)
    if problem is not None:
        raise UnsafePath(name, problem)
    base = Path(root).resolve()
    try:
        real = (base / name).resolve()
    except (OSError, RuntimeError):
        raise UnsafePath(name, "unsafe path: a symlink loop") from None
    if not real.is_relative_to(base):
        raise UnsafePath(name, "unsafe path: a symlink leaving the root")
    try:
        mode = real.stat().st_mode
    except FileNotFoundError:
        return Path(root) / name
    except OSError as e:
        raise UnsafePath(name, f"unsafe path: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise UnsafePath(name, f"not a regular file: a {_kind(mode)}")
    return Path(root) / name


def path_problem(root: str | os.PathLike, name: str) -> str | None:
    """Why `path_inside(root, name)` refuses `name`, or None when it may be opened."""
    try:
        path_inside(root, name)
    except UnsafePath as e:
        return e.reason
    return None


def paths_inside(root: str | os.PathLike, names: Sequence[str]) -> tuple[list[tuple[int, Path]], list[tuple[str, str]]]:
    """(position, path) of each of `names` that `path_inside` keeps, and (root / name, reason) of the others,
    which are never opened: the split every job that opens a dataset's images makes first."""
    inside, unsafe = [], []
    for n, name in enumerate(names):
        try:
            inside.append((n, path_inside(root, str(name))))
        except UnsafePath as e:
            unsafe.append((str(Path(root) / str(name)), e.reason))
    return inside, unsafe


def read_bounded(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them; UnsafePath or OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafePath(path, f"not a regular file: a {_kind(mode)}")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafePath(path, f"file too large: more than {limit} bytes")
    return data
