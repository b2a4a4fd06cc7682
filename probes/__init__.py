"""nanolens.probes: activation datasets from hook points, linear probes, layer sweeps.

    from nanolens.probes import LabelledTexts, extract_activations, LinearProbe, probe_layers

Names are imported on first use, so `import nanolens.probes` stays light (no torch, pandas or
scikit-learn until a name that needs them is touched).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Activations": "activations", "extract_activations": "activations", "resolve_hooks": "activations",
    "LabelledTexts": "datasets", "split_indices": "datasets",
    "LinearProbe": "linear", "RidgeProbe": "linear", "cosine": "linear",
    "probe_layers": "sweep", "plot_probe_layers": "sweep", "probe_readout": "sweep",
    "layer_hooks": "sweep", "format_table": "sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
