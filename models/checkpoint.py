"""Model directories: `config.json` + `model.safetensors` (+ `tokenizer.json`), written atomically.

A directory is written beside its destination under a temporary name and swapped in with
renames (`nanolens.files.atomic_directory`), so a crash mid-write leaves either the old
checkpoint or the new one, never a mix. No pickle is ever read. `GPT.load` reads what
`save_model` writes; which folder a `--ckpt` means is `nanolens.training.runs.model_dir`.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model

from nanolens.fields import FileFormatError
from nanolens.files import atomic_directory

from .config import ConfigError, ConfigTypeError, GPTConfig
from .tokenizers import load_tokenizer

if TYPE_CHECKING:
    from .gpt import GPT

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be loaded; the message says what to do."""


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


def read_model_dir(directory: str | Path) -> tuple[GPTConfig, Any]:
    """The config and tokenizer (None when the directory has none) of a checkpoint directory,
    checked: every problem is a `CheckpointError` that names the file and the fix."""
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
    except ConfigTypeError as err:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ConfigError) as err:
        raise CheckpointError(f"{directory / CONFIG_FILE} is not a valid model config: {err}") from None
    tokenizer = None
    if (directory / TOKENIZER_FILE).is_file():
        try:
            tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
        except FileFormatError as err:  # names the file and the field already
            raise CheckpointError(f"{err}; re-save the tokenizer, or delete the file to load the model without one") from None
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
    return config, tokenizer


def load_weights(model: "GPT", directory: str | Path) -> None:
    """Fill `model` (built from the directory's config) with its `model.safetensors`, strictly."""
    path = Path(directory) / WEIGHTS_FILE
    try:
        load_safetensors_model(model, str(path), strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise CheckpointError(f"{path} does not match {CONFIG_FILE} or is corrupt: {err}") from None


def load_torch_file(path: str | Path, refused_fix: str, unreadable_fix: str | None = None, mmap: bool = False) -> Any:
    """A `torch.save` file read with `weights_only=True`: tensors and plain values only. A file
    whose unpickling would run code (a class, or a call such as `os.system`) is refused, and the
    message says so and what to give instead (`refused_fix`); any other failure says the file
    is unreadable (`unreadable_fix`, default the same). `mmap` maps the file instead of reading
    it whole, where its format allows."""
    path = Path(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if mmap and "mmap" in str(err):  # the legacy (pre-zip) format cannot be mapped
                return torch.load(path, map_location="cpu", weights_only=True)
            raise
    except Exception as err:  # a foreign or damaged file fails in many ways (KeyError, IndexError, ...)
        refused = re.search(r"unsupported global:?\s*(?:GLOBAL\s+)?([\w.]+)", str(err), flags=re.IGNORECASE)
        if isinstance(err, pickle.UnpicklingError) and refused:
            raise CheckpointError(
                f"refused to load {path}: unpickling it would run arbitrary code ({refused.group(1)}), which could do "
                f"anything to this machine, so none of it was run; {refused_fix}"
            ) from None
        first = "not a torch pickle" if isinstance(err, pickle.UnpicklingError) else str(err).strip()[:200]
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint ({type(err).__name__}: {first}); {unreadable_fix or refused_fix}"
        ) from None
