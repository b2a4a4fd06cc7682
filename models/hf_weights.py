"""The tensors of a Hugging Face checkpoint, read one at a time.

A checkpoint directory holds `model.safetensors`, or shards listed in
`model.safetensors.index.json`, or the older `pytorch_model.bin` (sharded:
`pytorch_model.bin.index.json`). Importing copies each tensor into the model as soon as it is
read, so at no moment are two full copies of the weights in memory: a safetensors file is
opened afresh for each tensor (a file kept open keeps every page it has mapped resident), and a
`.bin` is memory-mapped and read with `torch.load(weights_only=True)`, which refuses a pickle
that would need to run code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from safetensors import SafetensorError, safe_open
from torch import Tensor

from .checkpoint import CheckpointError, load_torch_file

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN, TORCH_BIN_INDEX)


class WeightSource(Protocol):
    """Named tensors, fetched one by one."""

    def names(self) -> set[str]: ...

    def get(self, name: str) -> Tensor: ...


class StateDict:
    """The tensors of an in-memory model (a `transformers.PreTrainedModel`'s state dict)."""

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        self._tensors = dict(tensors)

    def names(self) -> set[str]:
        return set(self._tensors)

    def get(self, name: str) -> Tensor:
        return self._tensors[name].detach()


class SafetensorsFiles:
    """One or more `.safetensors` files; each tensor is read from its own file when asked for."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._file_of = dict(files)  # tensor name -> file

    @classmethod
    def single(cls, path: Path) -> "SafetensorsFiles":
        try:
            with safe_open(str(path), framework="pt") as f:
                return cls({name: path for name in f.keys()})
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file ({err}); re-download it") from None

    def names(self) -> set[str]:
        return set(self._file_of)

    def get(self, name: str) -> Tensor:
        path = self._file_of[name]
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(name)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: cannot read tensor {name!r} ({err}); the file is damaged") from None


class TorchFiles:
    """One or more `pytorch_model.bin` files, memory-mapped and loaded with weights_only."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self._file_of = dict(files)
        self._loaded: dict[Path, dict[str, Tensor]] = {}

    @classmethod
    def single(cls, path: Path) -> "TorchFiles":
        source = cls({})
        source._file_of = {name: path for name in source._load(path)}
        return source

    def _load(self, path: Path) -> dict[str, Tensor]:
        if path not in self._loaded:
            state = load_torch_file(
                path,
                refused_fix="only tensors are read from a model file: get the model's model.safetensors, or "
                "convert this file to safetensors on a machine where you trust it",
                unreadable_fix="re-download it, or use the model's model.safetensors",
                mmap=True,
            )
            if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
                raise CheckpointError(f"{path} does not hold a state dict (a dict of tensors)")
            self._loaded[path] = state
        return self._loaded[path]

    def names(self) -> set[str]:
        return set(self._file_of)

    def get(self, name: str) -> Tensor:
        return self._load(self._file_of[name])[name]


def _read_index(index: Path) -> dict[str, Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = {name: index.parent / shard for name, shard in weight_map.items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{index} is not a shard index (expected a 'weight_map' object): {err}") from None
    missing = sorted({p.name for p in files.values() if not p.is_file()})
    if missing:
        raise CheckpointError(f"{index} lists shards that are not in {index.parent}: {', '.join(missing)}; "
                              "download the missing files")
    return files


def open_weights(directory: Path) -> WeightSource:
    """The weights of a checkpoint directory, preferring safetensors over pickled `.bin`."""
    if (directory / SAFETENSORS).is_file():
        return SafetensorsFiles.single(directory / SAFETENSORS)
    if (directory / SAFETENSORS_INDEX).is_file():
        return SafetensorsFiles(_read_index(directory / SAFETENSORS_INDEX))
    if (directory / TORCH_BIN).is_file():
        return TorchFiles.single(directory / TORCH_BIN)
    if (directory / TORCH_BIN_INDEX).is_file():
        return TorchFiles(_read_index(directory / TORCH_BIN_INDEX))
    raise CheckpointError(
        f"{directory} holds no weights: none of {', '.join(WEIGHT_FILES)} is there. Download the "
        "model's weight files into it (e.g. `hf download NAME --local-dir DIR`)"
    )
