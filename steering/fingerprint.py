"""Model fingerprints: what identifies a model for steering (width, depth, a hash of its
architecture and of its weights), so a vector is never applied to other weights by accident."""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Mapping
from typing import Any

import torch

from nanolens.models import GPT

# Runtime switches and notes that do not change what the model computes.
_NOT_ARCHITECTURE = ("extra", "preset", "use_attn_result", "use_split_qkv_input", "use_attn_in",
                     "use_hook_mlp_in", "use_hook_unembed")
_WEIGHTS_CACHE: "weakref.WeakKeyDictionary[Any, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _config_hash(model: GPT) -> str:
    config = model.config.to_dict()
    arch = {k: v for k, v in config.items() if k not in _NOT_ARCHITECTURE}
    return hashlib.sha256(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:12]


def weights_hash(model: GPT) -> str:
    """A short SHA-256 of the model's weights (float32 bytes, in parameter order).

    Cached until a parameter changes (tracked by the tensors' version counters), so asking
    again at every `steer` call is free.
    """
    params = list(model.state_dict(keep_vars=True).items())
    key = tuple((name, id(p), p._version, p.data_ptr()) for name, p in params)
    cached = _WEIGHTS_CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    h = hashlib.sha256()
    seen: set[int] = set()
    for name, p in params:
        if p.data_ptr() in seen:  # tied weights count once
            continue
        seen.add(p.data_ptr())
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest = h.hexdigest()[:16]
    _WEIGHTS_CACHE[model] = (key, digest)
    return digest


def model_fingerprint(model: GPT) -> dict[str, Any]:
    """What identifies a model for steering: width, depth, architecture hash, weights hash."""
    return {
        "d_model": int(model.config.n_embd),
        "n_layer": int(model.config.n_layer),
        "preset": model.config.preset,
        "config_hash": _config_hash(model),
        "weights_hash": weights_hash(model),
    }


def describe_model(fp: Mapping[str, Any] | None) -> str:
    if not fp:
        return "no model (a model-free vector)"
    preset = f"{fp.get('preset')} " if fp.get("preset") else ""
    return (f"{preset}model with d_model={fp.get('d_model')}, {fp.get('n_layer')} layers, "
            f"config {fp.get('config_hash')}, weights {fp.get('weights_hash')}")


def same_model(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """True when either is model-free or both name the same architecture and weights."""
    if not a or not b:
        return True
    return a.get("config_hash") == b.get("config_hash") and a.get("weights_hash") == b.get("weights_hash")
