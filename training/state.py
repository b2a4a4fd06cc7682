"""The trainer's state on disk: everything beside the model files that `--resume` needs.

A training checkpoint is a model directory (`config.json`, `model.safetensors`,
`tokenizer.json`) plus ``optimizer.safetensors`` (the optimizer's tensors), ``optimizer.json``
(everything else of its state dict), ``rng.safetensors`` (torch CPU/CUDA generator states as
uint8 tensors) and ``trainer_state.json`` (iteration, best val loss, elapsed time, the
`TrainConfig`, python and numpy RNG states, the fp16 grad scaler). Nothing is pickled.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nanolens.fields import INT, LIST, NUMBER, OBJECT, field, optional, read_json
from nanolens.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError

OPTIMIZER_TENSORS, OPTIMIZER_META = "optimizer.safetensors", "optimizer.json"
RNG_FILE, STATE_FILE = "rng.safetensors", "trainer_state.json"
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, OPTIMIZER_TENSORS, OPTIMIZER_META, RNG_FILE, STATE_FILE)
STATE_FORMAT, STATE_VERSION = "nanolens-trainer", 1
# The fields of trainer_state.json a resume reads, and what each must hold.
STATE_FIELDS = (
    ("iter", INT), ("best_val_loss", optional(NUMBER)), ("val_loss", optional(NUMBER)), ("train_loss", optional(NUMBER)),
    ("elapsed", NUMBER), ("world_size", INT), ("train_config", OBJECT), ("python_random", LIST), ("numpy_random", LIST),
)


def json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, tuple):
        return [json_value(v) for v in value]
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON")


def optimizer_state_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into tensors (for safetensors) and JSON-able rest."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = json_value(value)
    meta = {"param_groups": json_value(state_dict["param_groups"]), "state": scalars}
    return tensors, meta


def optimizer_state_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `optimizer_state_to_files`: a state dict for `load_state_dict`."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta.get("state", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def checkpoint_missing(directory: Path) -> list[str]:
    """The checkpoint files absent from `directory` (all of them when it does not exist)."""
    return [name for name in CHECKPOINT_FILES if not (directory / name).is_file()]


def trainer_state(trainer_fields: dict[str, Any], scaler: Any) -> dict[str, Any]:
    """The JSON of `trainer_state.json`: `trainer_fields` (iteration, losses, elapsed, config,
    world size) plus the python and numpy RNG states and the fp16 grad scaler."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        **trainer_fields,
        "python_random": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy_random": [np_state[0], np_state[1].tolist(), *[json_value(v) for v in np_state[2:]]],
        "grad_scaler": json_value(scaler.state_dict()) if scaler.is_enabled() else None,
    }


def write_trainer_files(directory: Path, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Write the optimizer, RNG and trainer-state files into `directory` (no atomicity of its own)."""
    tensors, meta = optimizer_state_to_files(optimizer)
    save_file(tensors, str(directory / OPTIMIZER_TENSORS), metadata={"format": STATE_FORMAT})
    (directory / OPTIMIZER_META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda.{i}"] = cuda_state
    save_file(rng, str(directory / RNG_FILE), metadata={"format": STATE_FORMAT})
    (directory / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")


def read_state_json(directory: Path) -> dict[str, Any] | None:
    """A checkpoint's `trainer_state.json`, or None when it is missing or unreadable."""
    try:
        state = json.loads((Path(directory) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("format") == STATE_FORMAT else None


def read_trainer_files(directory: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """(trainer state, optimizer state dict, RNG tensors) of a checkpoint, or a CheckpointError."""
    missing = checkpoint_missing(directory)
    if missing:
        raise CheckpointError(f"{directory} is missing {', '.join(missing)}; it cannot be resumed from")
    try:
        path = directory / STATE_FILE
        state = read_json(path)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: format: expected {STATE_FORMAT!r}, got {state.get('format')!r}")
        for name, kind in STATE_FIELDS:
            field(state, name, kind, path)
        opt_meta = read_json(directory / OPTIMIZER_META)
        field(opt_meta, "param_groups", LIST, directory / OPTIMIZER_META)
        field(opt_meta, "state", OBJECT, directory / OPTIMIZER_META, default={})
        opt_tensors = load_file(str(directory / OPTIMIZER_TENSORS))
        rng = load_file(str(directory / RNG_FILE))
    except (ValueError, OSError) as err:  # FileFormatError, safetensors' errors, a bad format
        raise CheckpointError(f"{directory} holds a corrupt trainer state ({err}); it cannot be resumed from") from None
    return state, optimizer_state_from_files(opt_tensors, opt_meta), rng


def restore_random_streams(state: dict[str, Any], rng: dict[str, torch.Tensor]) -> None:
    """Put torch's, python's and numpy's global RNGs back where the checkpoint left them."""
    torch.set_rng_state(rng["torch_cpu"])
    cuda_states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    version, internal, gauss = state["python_random"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy_random"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
