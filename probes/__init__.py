"""nanolens.probes: activation datasets from hook points, linear probes, layer sweeps.

    from nanolens.probes import LabelledTexts, extract_activations, LinearProbe, probe_layers

Names are imported on first use, so `import nanolens.probes` stays light (no torch, pandas or
scikit-learn until a name that needs them is touched).
"""

from __future__ import annotations

from nanolens._lazy import lazy_exports

_EXPORTS = {
    "Activations": "activations", "extract_activations": "activations", "resolve_hooks": "activations",
    "LabelledTexts": "datasets", "split_indices": "datasets",
    "LinearProbe": "linear", "RidgeProbe": "linear", "cosine": "linear",
    "probe_layers": "sweep", "plot_probe_layers": "sweep", "probe_readout": "sweep",
    "layer_hooks": "sweep", "format_table": "sweep",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
