"""Token data for training: a corpus' token ids stored once, split into train/val, cut into batches.

`TokenData` holds the ids as one compact numpy array per split (uint16 when the vocabulary fits,
int32 otherwise), as nanoGPT's `train.bin`/`val.bin` do, and draws batches of random
`block_size` windows from them:

>>> data = TokenData.from_text("hello world, " * 50, tokenizer)
>>> x, y = data.get_batch("train", batch_size=4, block_size=16)   # y is x shifted by one
>>> data.save("runs/hello/data"); TokenData.load("runs/hello/data")  # memory-mapped
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nanolens.fields import INT, OBJECT, STR, FileFormatError, field, optional, read_json
from nanolens.files import atomic_directory

SPLITS = ("train", "val")
META_FILE = "meta.json"
FORMAT = "nanolens-tokens"
FORMAT_VERSION = 1


class DataError(ValueError):
    """Text or token data that cannot be trained on; the message names the fix."""


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype that holds every id: uint16 for up to 65,536 tokens, else int32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


class TokenData:
    """A corpus' token ids, split once into a train and a val array.

    `train` and `val` are 1-D integer numpy arrays (possibly memory-mapped); `vocab_size` bounds
    the ids; `meta` holds free-form notes saved with the data (e.g. the corpus and tokenizer).
    """

    def __init__(self, train: np.ndarray, val: np.ndarray, vocab_size: int, meta: dict[str, Any] | None = None) -> None:
        if vocab_size < 1:
            raise DataError(f"vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = int(vocab_size)
        self.dtype = token_dtype(self.vocab_size)
        self.train = self._as_array(train, "train")
        self.val = self._as_array(val, "val")
        if len(self.train) + len(self.val) == 0:
            raise DataError("the token data is empty; give a non-empty text to train on")
        self.meta: dict[str, Any] = dict(meta or {})

    def _as_array(self, ids: Any, name: str) -> np.ndarray:
        if isinstance(ids, np.memmap) and ids.dtype == self.dtype:
            return ids
        array = np.asarray(ids)
        if array.ndim != 1:
            raise DataError(f"the {name} split must be a 1-D sequence of token ids, got shape {array.shape}")
        if array.size and (int(array.min()) < 0 or int(array.max()) >= self.vocab_size):
            raise DataError(
                f"the {name} split holds ids outside [0, {self.vocab_size}); "
                "was it encoded with a different tokenizer?"
            )
        return array.astype(self.dtype, copy=False)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_ids(
        cls, ids: Sequence[int] | np.ndarray, vocab_size: int, val_fraction: float = 0.1, meta: dict[str, Any] | None = None
    ) -> "TokenData":
        """Split one sequence of ids: the first `1 - val_fraction` for training, the rest for val
        (a contiguous tail, as nanoGPT splits, so val text is text the model never saw)."""
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        ids = np.asarray(ids)
        if ids.size == 0:
            raise DataError("the text is empty: there is nothing to train on; give a file with some text in it")
        n_val = int(round(len(ids) * val_fraction))
        n_train = len(ids) - n_val
        meta = {**(meta or {}), "val_fraction": val_fraction}
        return cls(ids[:n_train], ids[n_train:], vocab_size, meta)

    @classmethod
    def from_text(
        cls, text: str, tokenizer: Any, val_fraction: float = 0.1, meta: dict[str, Any] | None = None
    ) -> "TokenData":
        """Encode `text` with `tokenizer` (anything with `encode` and `vocab_size`) and split it."""
        if not text:
            raise DataError("the text is empty: there is nothing to train on; give a file with some text in it")
        ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
        meta = {"tokenizer": getattr(tokenizer, "kind", type(tokenizer).__name__), **(meta or {})}
        return cls.from_ids(ids, tokenizer.vocab_size, val_fraction=val_fraction, meta=meta)

    # ---- facts -----------------------------------------------------------------------------
    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use 'train' or 'val'")
        return self.train if name == "train" else self.val

    def __len__(self) -> int:
        return len(self.train) + len(self.val)

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)

    def __repr__(self) -> str:
        return f"TokenData(train={self.n_train:,} tokens, val={self.n_val:,} tokens, vocab_size={self.vocab_size}, dtype={self.dtype})"

    def check_block_size(self, block_size: int) -> None:
        """Raise DataError unless both splits hold at least one window of `block_size` + 1 ids."""
        if block_size < 1:
            raise DataError(f"block_size must be >= 1, got {block_size}")
        for name in ("val", "train"):
            n = len(self.split(name))
            if n < block_size + 1:
                hint = "lower block_size or val_fraction, or give more text" if name == "val" else "lower block_size, or give more text"
                raise DataError(
                    f"block_size {block_size} is larger than the {name} split of {n} tokens "
                    f"(a window needs block_size + 1 = {block_size + 1}); {hint}"
                )

    # ---- batches ---------------------------------------------------------------------------
    def get_batch(
        self,
        split: str,
        batch_size: int,
        block_size: int,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> tuple[Tensor, Tensor]:
        """`batch_size` random windows of `block_size` ids from `split`: x [batch, block] and the
        targets y, the same windows shifted one token on (int64 tensors on `device`)."""
        data = self.split(split)
        if len(data) < block_size + 1:
            self.check_block_size(block_size)
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).numpy()
        windows = np.asarray(data)[starts[:, None] + np.arange(block_size + 1)]
        batch = torch.from_numpy(windows.astype(np.int64))
        x, y = batch[:, :-1], batch[:, 1:]
        device = torch.device(device)
        if device.type == "cuda":  # pinned memory lets the copy overlap with compute
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.contiguous().to(device), y.contiguous().to(device)

    # ---- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write `train.bin`, `val.bin` (raw ids, readable with np.memmap) and `meta.json`,
        atomically (the directory is replaced whole)."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            for name in SPLITS:
                np.ascontiguousarray(self.split(name), dtype=self.dtype).tofile(tmp / f"{name}.bin")
            meta = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "dtype": self.dtype.name,
                "vocab_size": self.vocab_size,
                "n_train": self.n_train,
                "n_val": self.n_val,
                "meta": self.meta,
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> "TokenData":
        """Read data written by `save`; with `mmap` the ids stay on disk until used."""
        directory = Path(directory)
        missing = [n for n in (META_FILE, "train.bin", "val.bin") if not (directory / n).is_file()]
        if missing:
            raise DataError(f"{directory} is missing {', '.join(missing)}; it is not a token data directory written by TokenData.save")
        path = directory / META_FILE
        try:
            meta = read_json(path)
            dtype = _dtype(field(meta, "dtype", STR, path), path)
            vocab_size = field(meta, "vocab_size", INT, path)
            sizes = {"train": field(meta, "n_train", INT, path), "val": field(meta, "n_val", INT, path)}
            field(meta, "meta", optional(OBJECT), path, default=None)
        except FileFormatError as err:
            raise DataError(f"{err}; it is not valid token data metadata (re-create it with TokenData.save)") from None
        arrays = {}
        for name in SPLITS:
            path = directory / f"{name}.bin"
            if path.stat().st_size != sizes[name] * dtype.itemsize:
                raise DataError(f"{path} holds {path.stat().st_size} bytes, not the {sizes[name]} ids its metadata promises; it is truncated or corrupt")
            if sizes[name] == 0:
                arrays[name] = np.zeros(0, dtype=dtype)
            elif mmap:
                arrays[name] = np.memmap(path, dtype=dtype, mode="r")
            else:
                arrays[name] = np.fromfile(path, dtype=dtype)
        data = cls.__new__(cls)
        data.vocab_size, data.dtype = vocab_size, dtype
        data.train, data.val = arrays["train"], arrays["val"]
        data.meta = dict(meta.get("meta") or {})
        return data


def _dtype(name: str, where: Path) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        raise FileFormatError(f"{where}: dtype: expected a numpy dtype name such as 'uint16', got {name!r}") from None
