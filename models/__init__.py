"""nanolens.models: the architecture. Config, registry and components, the hooked GPT, presets,
tokenizers, generation, checkpoints and nanoGPT interop; nothing of training, probing or steering.

    from nanolens.models import GPT, CharTokenizer, preset_config
    model = GPT(preset_config("gpt2", vocab_size=65, n_layer=2))
    logits, cache = model.run_with_cache(tokens)

Importing the package is light: `config` and `presets` (what `nanolens presets` and config
validation need) never import torch, so the names below load from their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what IDEs and type checkers see; `_HOMES` says the same for the interpreter
    from .attention import KVCache
    from .checkpoint import CheckpointError, save_model
    from .config import VARIANTS, ConfigError, GPTConfig
    from .gpt import GPT, load_model
    from .hf_tokenizer import HFTokenizer
    from .hook_names import HookNameError
    from .presets import LADDER, PRESETS, preset_config
    from .tokenizers import BPETokenizer, CharTokenizer, UnknownCharactersError, build_tokenizer, load_tokenizer

_HOMES = {
    "KVCache": "attention", "CheckpointError": "checkpoint", "save_model": "checkpoint", "VARIANTS": "config",
    "ConfigError": "config", "GPTConfig": "config", "GPT": "gpt", "load_model": "gpt", "HookNameError": "hook_names",
    "LADDER": "presets", "PRESETS": "presets", "preset_config": "presets", "BPETokenizer": "tokenizers",
    "CharTokenizer": "tokenizers", "UnknownCharactersError": "tokenizers", "build_tokenizer": "tokenizers",
    "load_tokenizer": "tokenizers", "HFTokenizer": "hf_tokenizer",
}
__all__ = [
    "BPETokenizer", "CharTokenizer", "CheckpointError", "ConfigError", "GPT", "GPTConfig", "HFTokenizer", "HookNameError", "KVCache",
    "LADDER", "PRESETS", "UnknownCharactersError", "VARIANTS", "build_tokenizer", "load_model", "load_tokenizer",
    "preset_config", "save_model",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
