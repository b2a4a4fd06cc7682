"""Model directories: `config.json` + `model.safetensors` (+ `tokenizer.json`), written atomically.

A directory is written beside its destination under a temporary name and swapped in with
renames, so a crash mid-write leaves either the old checkpoint or the new one, never a mix.
No pickle is ever read.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model

from .config import ConfigError, GPTConfig
from .tokenizers import load_tokenizer

if TYPE_CHECKING:
    from .gpt import GPT

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be loaded; the message says what to do."""


def load_torch_file(path: Path, refused_fix: str, unreadable_fix: str, mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain values only, so a pickle that
    would run code is refused with a CheckpointError saying so (and `refused_fix`); any other
    failure says the file is unreadable (and `unreadable_fix`). `mmap` maps the file instead of
    reading it whole, where its format allows."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if mmap and "mmap" in str(err):  # the legacy (pre-zip) format cannot be mapped
                return torch.load(path, map_location="cpu", weights_only=True)
            raise
    except Exception as err:  # a foreign or damaged file fails in many ways (KeyError, IndexError, ...)
        refused = [line for line in str(err).splitlines() if "Unsupported global" in line]
        if isinstance(err, pickle.UnpicklingError) and refused:
            detail = refused[0].split("error: ")[-1].split(". Please use")[0]
            raise CheckpointError(
                f"refusing to load {path}: it holds objects that would need arbitrary code to unpickle "
                f"({detail}). {refused_fix}"
            ) from None
        first = "not a torch pickle" if isinstance(err, pickle.UnpicklingError) else str(err).strip()[:200]
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint ({type(err).__name__}: {first}); {unreadable_fix}"
        ) from None


def model_dir(path: str | Path) -> Path:
    """A model directory: `path` itself when it holds a config, else a run directory's best/
    (then last/). What every command's `--ckpt` accepts."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path
    for name in ("best", "last"):
        if (path / name / CONFIG_FILE).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: no {CONFIG_FILE} there (nor in best/ or last/); give a checkpoint or run directory")


@contextmanager
def atomic_directory(destination: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces `destination` whole.

    On an exception the temporary directory is removed and `destination` is untouched.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    try:
        yield tmp
        for file in tmp.iterdir():  # make the contents durable before they become visible
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
            if old is not None:  # put the old checkpoint back where it was
                os.replace(old, destination)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_model_files(model: "GPT", directory: Path) -> None:
    """Write the model's files into an existing directory (no atomicity of its own)."""
    model.config.save(directory / CONFIG_FILE)
    save_safetensors_model(model, str(directory / WEIGHTS_FILE), metadata={"format": "nanolens"})
    if model.tokenizer is not None:
        model.tokenizer.save(directory / TOKENIZER_FILE)


def save_model(model: "GPT", directory: str | Path) -> Path:
    """Save `model` as a checkpoint directory, atomically."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        write_model_files(model, tmp)
    return directory


def load_model(directory: str | Path, device: str | torch.device | None = None) -> "GPT":
    """Load a checkpoint directory written by `save_model` (or the trainer)."""
    from .gpt import GPT

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory; give the path of a saved model or run")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{directory} is missing {', '.join(missing)}; it is not a complete nanolens checkpoint "
            "(was it written by GPT.save or the trainer?)"
        )
    try:
        config = GPTConfig.load(directory / CONFIG_FILE)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ConfigError) as err:
        raise CheckpointError(f"{directory / CONFIG_FILE} is not a valid model config: {err}") from None
    tokenizer = None
    if (directory / TOKENIZER_FILE).is_file():
        try:
            tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
        except Exception as err:  # each tokenizer kind fails in its own way
            raise CheckpointError(
                f"{directory / TOKENIZER_FILE} is not a valid tokenizer file ({type(err).__name__}: {err}); "
                "re-save the tokenizer, or delete the file to load the model without one"
            ) from None
        if tokenizer.vocab_size > config.vocab_size:
            raise CheckpointError(
                f"{directory / TOKENIZER_FILE} has {tokenizer.vocab_size} tokens but {CONFIG_FILE} says "
                f"vocab_size {config.vocab_size}: the tokenizer belongs to another model"
            )
    model = GPT(config, tokenizer=tokenizer)
    try:
        load_safetensors_model(model, str(directory / WEIGHTS_FILE), strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise CheckpointError(
            f"{directory / WEIGHTS_FILE} does not match {CONFIG_FILE} or is corrupt: {err}"
        ) from None
    model.eval()
    return model.to(device) if device is not None else model
