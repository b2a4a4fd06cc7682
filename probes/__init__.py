"""nanolens.probes: activation datasets from hook points, linear probes, layer sweeps.

    from nanolens.probes import LabelledTexts, extract_activations, LinearProbe, probe_layers
    df = probe_layers(model, LabelledTexts.from_sentiment(400), "resid_post")   # a probe per layer + a control
"""

from nanolens.models.hook_names import resolve_hooks

from .activations import Activations, extract_activations
from .datasets import LabelledTexts, split_indices
from .linear import LinearProbe, RidgeProbe, cosine
from .sweep import layer_hooks, plot_probe_layers, probe_layers, probe_readout, probe_table

__all__ = [
    "Activations", "LabelledTexts", "LinearProbe", "RidgeProbe", "cosine", "extract_activations", "layer_hooks",
    "plot_probe_layers", "probe_layers", "probe_readout", "probe_table", "resolve_hooks", "split_indices",
]
