"""nanolens: train a GPT yourself, then open it up with hooks, probes and steering vectors.

The public API is re-exported here lazily, so `import nanolens` (and `nanolens --help`) stay
fast; torch and transformer-lens load on first use of a name that needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GPT": "nanolens.models",
    "GPTConfig": "nanolens.models",
    "preset_config": "nanolens.models",
    "PRESETS": "nanolens.models",
    "LADDER": "nanolens.models",
    "CharTokenizer": "nanolens.models",
    "load_model": "nanolens.models",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nanolens' has no attribute {name!r}")
