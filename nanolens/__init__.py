"""nanolens: train a GPT yourself, then open it up with hooks, probes and steering vectors.

The packages are `nanolens.models`, `.corpora`, `.training`, `.probes`, `.steering`,
`.finetune` and `.apps`. The few names below are re-exported here lazily, so `import nanolens`
(and `nanolens --help`) stay fast: torch and transformer-lens load on first use of one of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from nanolens.models import GPT, LADDER, PRESETS, CharTokenizer, GPTConfig, load_model, preset_config

__all__ = ["GPT", "GPTConfig", "CharTokenizer", "LADDER", "PRESETS", "load_model", "preset_config", "__version__"]


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        return getattr(importlib.import_module("nanolens.models"), name)
    raise AttributeError(f"module 'nanolens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
