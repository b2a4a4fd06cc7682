"""One run folder, one process: an OS file lock on `RUN/.lock`, held for the life of the run.

Two `nanolens train --out DIR` started at the same instant would otherwise both write
`metrics.jsonl`, `best/` and `last/`. The lock is `fcntl.flock` on a file inside the folder: the
operating system releases it when the holder exits, however it dies (a `kill -9` included),
so a stale lock never blocks the next run. The file records the holder's PID, host and start
time, which the refusal names. Locks are re-entrant within a process: the CLI takes the lock
before it writes anything, and the Trainer it starts finds it already held. Only rank 0 of a
data-parallel run takes it (the other ranks write nothing).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not locked there
    fcntl = None

LOCK_FILE = ".lock"


class RunLockedError(OSError):
    """Another live process holds the run folder; the message names it and the fix."""


class RunLock:
    """The lock of one run folder, held by this process until `release()` (or exit)."""

    _held: dict[Path, "RunLock"] = {}  # per process: folder -> its lock, for re-entrant acquire

    def __init__(self, folder: Path, handle: Any) -> None:
        self.folder = folder
        self._handle = handle
        self._count = 1

    @classmethod
    def acquire(cls, folder: str | Path) -> "RunLock":
        """Take the lock of `folder` (created if missing), or raise RunLockedError at once."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        key = folder.resolve()
        held = cls._held.get(key)
        if held is not None:
            held._count += 1
            return held
        handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(folder / LOCK_FILE)
                handle.close()
                raise RunLockedError(
                    f"{folder} is in use by another run (process {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}, started {holder.get('started', '?')}); wait for it to finish or "
                    "stop it, or give another --out"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        handle.flush()
        lock = cls(folder, handle)
        cls._held[key] = lock
        return lock

    def release(self) -> None:
        """Give the lock back once every acquire in this process has released it."""
        self._count -= 1
        if self._count > 0 or self._handle is None:
            return
        RunLock._held.pop(self.folder.resolve(), None)
        self._handle.close()  # closing the file drops the flock
        self._handle = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_holder(path: Path, wait: float = 1.0) -> dict[str, Any]:
    """The holder's note; it writes it just after taking the lock, so wait a moment for it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            holder = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            holder = {}
        if isinstance(holder, dict) and "pid" in holder or time.monotonic() > deadline:
            return holder if isinstance(holder, dict) else {}
        time.sleep(0.02)
