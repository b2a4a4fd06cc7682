"""Writing files so that a reader never sees half of one: the one atomic writer of nanolens.

Everything nanolens writes that another process may read while it is written (checkpoints,
token data, vectors, plots the explorer shows, the tiny Shakespeare cache) goes through here:
the content is written beside its destination under a temporary name, made durable, and
renamed into place, so a crash leaves the old file or the new one, never a mix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to fill a temporary file beside `path`, then rename it to `path`.

    On any exception the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextmanager
def atomic_directory(destination: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces `destination` whole.

    On an exception the temporary directory is removed and `destination` is untouched. Between
    the two renames that swap it in, the previous contents wait as `.NAME.old-PID` (a run
    killed exactly there is recovered by `nanolens.training.runs.find_checkpoint`).
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    try:
        yield tmp
        for file in tmp.iterdir():  # make the contents durable before they become visible
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        old = None
        if destination.exists():
            old = destination.parent / f".{destination.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(destination, old)
        try:
            os.replace(tmp, destination)
        except BaseException:
            if old is not None:  # put the old contents back where they were
                os.replace(old, destination)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_png(fig: Any, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG atomically, so a reader such as the explorer app never
    sees half a file."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def cache_dir() -> Path:
    """The user cache directory for nanolens: ``$XDG_CACHE_HOME/nanolens`` or ``~/.cache/nanolens``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "nanolens"
