"""What the three ladders share: a rung trained by the Trainer and scored on fixed windows, and
the plot of a ladder. `ladder.py` runs them: equal budget (default), `--lecture`, `--modern`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nanolens.files import save_png
from nanolens.models import GPT, GPTConfig
from nanolens.training import TokenData, Trainer, TrainConfig


@dataclass
class Rung:
    index: int
    name: str
    description: str
    params: int
    val_loss: float
    val_se: float
    train_loss: float
    seconds: float
    tokens_per_s: float
    val_losses: torch.Tensor = field(repr=False)
    sample: str = ""
    gain: float | None = None
    gain_se: float | None = None
    sentence: str = ""


@torch.no_grad()
def fixed_losses(model: GPT, data: TokenData, split: str, batches: int, batch_size: int, block_size: int, seed: int) -> torch.Tensor:
    """Mean loss of each of `batches` batches drawn from a generator seeded with `seed`: the same
    windows for every model."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    out = torch.zeros(batches)
    for k in range(batches):
        x, y = data.get_batch(split, batch_size, block_size, generator=generator)
        _, loss = model(x, targets=y, return_type="both")
        out[k] = loss.item()
    return out


def train_and_score(index: int, name: str, description: str, config: GPTConfig, train: TrainConfig, data: TokenData,
                    tokenizer, eval_batches: int, eval_batch: tuple[int, int], sample_tokens: int, seed: int,
                    init: Callable[[GPT], None] | None = None) -> Rung:
    """Train `config` with `train` from `seed` (re-initialised by `init` if given, else nanoGPT's
    initialisation), then score it on the same fixed windows as every other rung (`eval_batch` =
    (batch size, block size) of those windows)."""
    torch.manual_seed(seed)
    model = GPT(config, tokenizer=tokenizer)
    if init is not None:
        init(model)
    logs: list[dict] = []
    start = time.perf_counter()
    Trainer(model, data, train, out_dir=None, callbacks=[logs.append]).train()
    seconds = time.perf_counter() - start
    steps = [r for r in logs if r.get("kind") == "log" and r.get("tokens_per_s")]
    tokens_per_s = sum(r["tokens_per_s"] for r in steps) / len(steps) if steps else float("nan")
    val = fixed_losses(model, data, "val", eval_batches, *eval_batch, seed=2024)
    train_losses = fixed_losses(model, data, "train", eval_batches, *eval_batch, seed=2025)
    sample = ""
    if sample_tokens:
        sample = model.generate("\n", max_new_tokens=sample_tokens, temperature=0.8, seed=seed)
        sample = sample if isinstance(sample, str) else str(sample)
    return Rung(
        index=index, name=name, description=description, params=model.num_params(), val_loss=float(val.mean()),
        val_se=float(val.std() / len(val) ** 0.5), train_loss=float(train_losses.mean()), seconds=seconds,
        tokens_per_s=tokens_per_s, val_losses=val, sample=sample,
    )


def paired_gain(previous: Rung, rung: Rung) -> tuple[float, float]:
    """The previous rung's val loss minus this one's over the same windows, and its standard error."""
    diff = previous.val_losses - rung.val_losses
    return float(diff.mean()), float(diff.std() / len(diff) ** 0.5)


def plot(rungs: list[Rung], path: Path, title: str) -> Path:
    fig = Figure(figsize=(8, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(rungs)))
    ax.plot(xs, [r.val_loss for r in rungs], "o-", color="tab:orange", label="val loss")
    ax.errorbar(xs, [r.val_loss for r in rungs], yerr=[2 * r.val_se for r in rungs], fmt="none", ecolor="tab:orange", alpha=0.5)
    ax.plot(xs, [r.train_loss for r in rungs], "s--", color="tab:blue", alpha=0.6, markersize=4, label="train loss")
    for x, r in zip(xs, rungs):
        ax.annotate(f"{r.val_loss:.2f}", (x, r.val_loss), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels([r.name for r in rungs], rotation=30, ha="right")
    ax.set_ylabel("cross-entropy (nats / char)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)
