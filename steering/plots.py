"""Pictures of a sweep: the positive fraction (and the fluency cost) against the coefficient,
and a layer x coefficient heat map."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nanolens.files import save_png

from .selection import best_layers, with_baseline
from .vector import SteeringError


def plot_sentiment_vs_coeff(df: Any, path: str | Path, metric: str = "frac_positive", layers: Mapping[str, Any] | None = None,
                            title: str | None = None) -> Path:
    """`metric` (and the perplexity) against the coefficient, one line per method at its best
    layer (or at `layers[method]`). Writes a PNG."""
    layers = dict(layers) if layers is not None else best_layers(df)
    fig = Figure(figsize=(11, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for method, layer in layers.items():
        t = with_baseline(df, method, layer)
        style = dict(ls="--", color="grey") if method.startswith("random") else {}
        ax.plot(t.coeff, t[metric], marker="o", label=f"{method} (layer {layer})", **style)
        ax2.plot(t.coeff, t.perplexity, marker="o", label=f"{method} (layer {layer})", **style)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("coefficient" + (" (x typical residual norm)" if df.attrs.get("relative") else ""))
    ax.set_ylabel(metric.replace("_", " "))
    if metric.startswith("frac"):
        ax.set_ylim(-0.03, 1.03)
        ax.axhline(0.9, color="g", lw=0.5, ls=":")
        ax.axhline(0.1, color="r", lw=0.5, ls=":")
    ax.legend(fontsize=8)
    ax.set_title(title or f"{metric.replace('_', ' ')} vs coefficient ({df.attrs.get('scorer', '')} scorer)")
    ax2.set_xlabel("coefficient")
    ax2.set_ylabel("perplexity under the unsteered model")
    ax2.set_yscale("log")
    ax2.set_title("fluency cost")
    fig.tight_layout()
    return save_png(fig, path)


def plot_layer_heatmap(df: Any, path: str | Path, method: str, metric: str = "mean_sentiment", title: str | None = None) -> Path:
    """A layer x coefficient heat map of `metric` for one method (coefficient 0 = unsteered)."""
    rows = df[df.method == method]
    if rows.empty:
        raise SteeringError(f"the sweep has no rows for method {method!r}; methods: {sorted(set(df.method) - {'unsteered'})}")
    layers = list(dict.fromkeys(rows.layer))
    base = df[df.method == "unsteered"]
    frames = [rows] + [base.assign(method=method, layer=layer) for layer in layers]
    grid = pd.concat(frames).pivot_table(index="layer", columns="coeff", values=metric, aggfunc="mean")
    fig = Figure(figsize=(2.5 + 0.8 * grid.shape[1], 1.6 + 0.55 * grid.shape[0]), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    diverging = "sentiment" in metric or metric.startswith(("frac_pos", "margin"))
    lim = 1.0 if metric == "mean_sentiment" else (float(np.nanmax(np.abs(grid.values))) or 1.0) if metric.startswith("margin") else None
    im = ax.imshow(grid.values, cmap="RdYlGn" if diverging else "viridis", aspect="auto",
                   vmin=-lim if lim else None, vmax=lim)
    ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(layer) for layer in grid.index])
    ax.set_xlabel("coefficient")
    ax.set_ylabel("layer")
    for (r, c), v in np.ndenumerate(grid.values):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label=metric.replace("_", " "))
    ax.set_title(title or f"{method}: {metric.replace('_', ' ')} by layer and coefficient")
    fig.tight_layout()
    return save_png(fig, path)
