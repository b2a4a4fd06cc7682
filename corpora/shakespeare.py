"""Tiny Shakespeare (1,115,394 characters): found locally, or downloaded once into the user cache.

Looked for at an explicit path, then `$NANOLENS_DATA`, then the cache; downloaded (checked by
sha256) only when none of them holds it, and offline the error says how to supply the file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from nanolens.files import atomic_write_bytes, cache_dir

from .corpus import CorpusError

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_CHARS = 1_115_394
SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_NAMES = (SHAKESPEARE_FILE, "input.txt")  # accepted file names inside a directory
DATA_ENV = "NANOLENS_DATA"
DOWNLOAD_TIMEOUT_S = 15.0



def _find_in(path: Path) -> Path | None:
    if path.is_file():
        return path
    if path.is_dir():
        for name in SHAKESPEARE_NAMES:
            if (path / name).is_file():
                return path / name
    return None


def _download(url: str, timeout: float) -> bytes:
    """Fetch `url` (the seam tests replace to simulate being offline)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _how_to_supply(target: Path) -> str:
    return (
        "Supply the file (tiny Shakespeare, the char-rnn `data/tinyshakespeare/input.txt`) in any one of these ways: "
        f"(1) pass its path, e.g. `load_corpus('/path/to/tinyshakespeare.txt')` or `--data /path/to/tinyshakespeare.txt`; "
        f"(2) set the environment variable {DATA_ENV} to the file or to a folder holding "
        f"{' or '.join(SHAKESPEARE_NAMES)}; "
        f"(3) copy it to {target} (the cache; download it on a machine with internet from {SHAKESPEARE_URL})."
    )


def shakespeare_path(path: str | Path | None = None, *, download: bool = True) -> Path:
    """Where tiny Shakespeare is, fetching it once if need be.

    Looks, in order, at: the explicit `path` (a file, or a folder holding ``tinyshakespeare.txt``
    or ``input.txt``); the environment variable ``NANOLENS_DATA`` (same forms); the user cache
    (``$XDG_CACHE_HOME/nanolens`` or ``~/.cache/nanolens``); and otherwise downloads it from the
    char-rnn repository (short timeout) into the cache, checking its sha256 and writing it
    atomically. Local copies are used as they are (not checksummed). Offline, or on a checksum
    mismatch, a `CorpusError` says exactly how to supply the file.
    """
    if path is not None:
        found = _find_in(Path(path).expanduser())
        if found is None:
            raise CorpusError(
                f"no tiny Shakespeare at {path}: give the text file itself, or a folder holding "
                f"{' or '.join(SHAKESPEARE_NAMES)}"
            )
        return found
    env = os.environ.get(DATA_ENV)
    env_note = ""
    if env:
        found = _find_in(Path(env).expanduser())
        if found is not None:
            return found
        env_note = f" ({DATA_ENV}={env} holds neither {' nor '.join(SHAKESPEARE_NAMES)}.)"
    target = cache_dir() / SHAKESPEARE_FILE
    if target.is_file():
        return target
    if not download:
        raise CorpusError(f"tiny Shakespeare is not on this machine.{env_note} " + _how_to_supply(target))
    try:
        data = _download(SHAKESPEARE_URL, DOWNLOAD_TIMEOUT_S)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise CorpusError(
            f"could not download tiny Shakespeare from {SHAKESPEARE_URL} ({reason}); are you offline?"
            f"{env_note} " + _how_to_supply(target)
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise CorpusError(
            f"the file downloaded from {SHAKESPEARE_URL} has sha256 {digest}, not the expected "
            f"{SHAKESPEARE_SHA256} ({len(data):,} bytes received; a proxy or a changed file?). "
            "Nothing was saved. " + _how_to_supply(target)
        )
    try:
        atomic_write_bytes(target, data)
    except OSError as err:
        raise CorpusError(
            f"downloaded tiny Shakespeare but cannot write the cache file {target} ({err.strerror or err}); "
            f"set XDG_CACHE_HOME to a writable folder, or save the file yourself and set {DATA_ENV}"
        ) from None
    return target
