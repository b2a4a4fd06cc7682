"""The loop the reward model and DPO share, and the run log every fine-tuning stage keeps:
metrics.jsonl, a progress bar, callbacks, curves and `summary.json` (the compute spent)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from nanolens.files import atomic_write_text, save_png
from nanolens.training import TrainConfig
from nanolens.training.metrics import METRICS_FILE, notify
from nanolens.training.runtime import resolve_device, stream_seed
from nanolens.training.trainer import configure_optimizer

SUMMARY_FILE = "summary.json"

class RunLog:
    """A run's metrics.jsonl, progress bar and callbacks, as the Trainer keeps them: each
    record is written (flushed) and handed to the callbacks; a callback may raise StopTraining."""

    def __init__(self, out_dir: str | Path | None, total: int, desc: str, progress: bool = True,
                 callbacks: Iterable[Callable[[dict[str, Any]], Any]] = ()) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.records: list[dict[str, Any]] = []
        self.callbacks = list(callbacks)
        self.stop = False
        self.start = time.perf_counter()
        self._file = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.out_dir / METRICS_FILE, "w", encoding="utf-8")
        self.bar = tqdm(total=total, desc=desc, unit="it", disable=not progress, dynamic_ncols=True, file=sys.stderr)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def emit(self, record: dict[str, Any], postfix: Sequence[str] = ()) -> None:
        record = {**record, "elapsed": round(self.elapsed, 3)}
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        shown = [f"{k} {record[k]:.3f}" for k in postfix if isinstance(record.get(k), (int, float))]
        if shown:
            self.bar.set_postfix_str(", ".join(shown), refresh=False)
        self.stop |= notify(self.callbacks, record)

    def close(self) -> None:
        self.bar.close()
        if self._file is not None:
            self._file.close()
            self._file = None


def plot_curves(records: Sequence[dict[str, Any]], panels: Sequence[tuple[str, Sequence[str]]], path: str | Path,
                title: str, x: str = "iter") -> Path | None:
    """One panel per (y label, metric keys) against `x`, from metrics records; a PNG (Agg canvas,
    so no display is needed). Returns None when there is nothing to draw."""
    panels = [(label, [k for k in keys if any(r.get(k) is not None for r in records)]) for label, keys in panels]
    panels = [(label, keys) for label, keys in panels if keys]
    if not panels:
        return None
    fig = Figure(figsize=(5.2 * len(panels), 3.8), dpi=110)
    FigureCanvasAgg(fig)
    for i, (label, keys) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        for key in keys:
            points = [(r[x], r[key]) for r in records if r.get(key) is not None and r.get(x) is not None]
            ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=key.replace("_", " "))
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def write_summary(out_dir: str | Path | None, summary: dict[str, Any]) -> dict[str, Any]:
    """Write `summary.json` (the method, its compute in seconds and tokens, its results)."""
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / SUMMARY_FILE, json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def fit(module: nn.Module, batch_loss: Callable[[list[int]], tuple[Tensor, dict[str, float]]], n_train: int,
        config: TrainConfig, log: RunLog, evaluate: Callable[[], dict[str, float]] | None = None,
        postfix: Sequence[str] = ("loss",), stream: str = "fit") -> None:
    """Minimise `batch_loss(indices)` over random batches of `config.batch_size` training items:
    AdamW (weight decay on matrices), warmup + cosine decay, gradient clipping; a "log" record
    every `log_interval` iterations and an "eval" record of `evaluate()` every `eval_interval`
    and at the end. Batches come from a generator seeded by (seed, stream, iteration)."""
    device_type = torch.device(resolve_device(config.device)).type
    optimizer = configure_optimizer(module, config, device_type)
    params = [p for p in module.parameters() if p.requires_grad]
    generator = torch.Generator()

    def run_eval(it: int) -> None:
        if evaluate is not None:
            module.eval()
            with torch.no_grad():
                log.emit({"kind": "eval", "iter": it, **evaluate()}, postfix)
            module.train()

    module.train()
    done = 0
    for it in range(config.max_iters):
        if log.stop:
            break
        lr = config.lr_at(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator.manual_seed(stream_seed(config.seed, stream, it))
        indices = torch.randint(n_train, (config.batch_size,), generator=generator).tolist()
        loss, stats = batch_loss(indices)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.bar.update(1)
        done = it + 1
        if done % config.log_interval == 0:
            log.emit({"kind": "log", "iter": done, "loss": loss.item(), "lr": lr, **stats}, postfix)
        if config.eval_interval and done % config.eval_interval == 0 and done < config.max_iters:
            run_eval(done)
    run_eval(done)
    module.eval()
