"""What the explorer's pages share: the cached models and the lock that guards their hooks.

A checkpoint is loaded once per process by `st.cache_resource` and the same `GPT` object serves
every browser session. Hooks are state on that object, so a hook attached for one session
(steering, say) would change what another session sees. Every use of a model that runs it goes
through `using(model)`: it holds one process-wide lock for the whole computation (the scoped
hooks of `run_with_cache`, `model.hooks` and `steer` are attached and removed inside it), and on
the way out it checks that no hook remains attached, removing any it finds.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import streamlit as st
import torch

from nanolens.models import GPT

log = logging.getLogger("nanolens.apps")

MODEL_LOCK = threading.RLock()
SMALL_MODEL = 20_000_000  # parameters; below this the app computes on one CPU thread
# Every model the cache has handed out (path -> model), so tests and the sidebar can check that
# no hook was left attached after a rerun.
_LOADED: dict[str, GPT] = {}


def checkpoint_key(path: str | Path) -> tuple[str, float]:
    """(resolved path, weights mtime): a checkpoint re-written by a running trainer loads anew."""
    path = Path(path).resolve()
    weights = path / "model.safetensors"
    return str(path), weights.stat().st_mtime if weights.is_file() else 0.0


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def _load(path: str, mtime: float) -> GPT:
    device = os.environ.get("NANOLENS_DEVICE", "cpu")
    model = GPT.load(path, device=device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if device == "cpu":
        # Small models run fastest on one intra-op thread; several spin-wait badly when other
        # processes share the cores (tens of times slower). NANOLENS_THREADS overrides.
        threads = os.environ.get("NANOLENS_THREADS") or (1 if model.num_params() < SMALL_MODEL else None)
        if threads:
            torch.set_num_threads(int(threads))
    _LOADED[f"{path}@{mtime}"] = model
    while len(_LOADED) > 16:  # as many as the cache keeps; older ones were evicted from it
        _LOADED.pop(next(iter(_LOADED)))
    return model


def load_model(path: str | Path) -> GPT:
    """The shared model of a checkpoint folder (loaded on first use, then cached)."""
    return _load(*checkpoint_key(path))


def loaded_models() -> dict[str, GPT]:
    return dict(_LOADED)


def attached_hooks() -> dict[str, dict[str, int]]:
    """{model key: its attached hooks} for every loaded model that holds any (should be empty)."""
    out = {}
    for key, model in _LOADED.items():
        hooks = model.attached_hooks()
        if hooks:
            out[key] = hooks
    return out


@contextmanager
def using(model: GPT) -> Iterator[GPT]:
    """Hold the model lock while running `model`; on exit no hook may remain attached."""
    with MODEL_LOCK:
        try:
            yield model
        finally:
            left = model.attached_hooks()
            if left:  # a bug somewhere; never let it leak into another session
                log.error("hooks left attached after a computation, removing them: %s", left)
                model.reset_hooks(including_permanent=False)


def cache_token(path: str | Path) -> str:
    """A string naming a checkpoint's current weights, for keying cached computations."""
    resolved, mtime = checkpoint_key(path)
    return f"{resolved}@{mtime}"
