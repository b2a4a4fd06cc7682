"""Pictures of a run: the loss curves drawn at the end of training (and by the explorer)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nanolens.files import save_png

from .metrics import read_metrics

LOSS_CURVE_FILE = "loss_curve.png"


def plot_losses(metrics: Sequence[dict[str, Any]] | str | Path, path: str | Path, title: str | None = None) -> Path | None:
    """Draw train and val loss against iteration into a PNG (matplotlib's Agg canvas, so no
    display and no change to pyplot's backend). Returns the path, or None with nothing to plot."""
    records = read_metrics(metrics) if isinstance(metrics, (str, Path)) else list(metrics)
    steps = [(r["iter"], r["train_loss"]) for r in records if r.get("kind") == "log" and r.get("train_loss") is not None]
    evals = [r for r in records if r.get("kind") == "eval" and r.get("val_loss") is not None]
    if not steps and not evals:
        return None
    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if steps:
        ax.plot(*zip(*steps), color="tab:blue", alpha=0.35, linewidth=1, label="train (per step)")
    if evals:
        ax.plot([r["iter"] for r in evals], [r["train_loss"] for r in evals], "o-", color="tab:blue", markersize=3, label="train (estimate)")
        ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange", markersize=3, label="val (estimate)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)
