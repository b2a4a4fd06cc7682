"""Run directories and checkpoints: the one resolver of "is this a run or a checkpoint".

A **checkpoint** is a model directory (`config.json` + `model.safetensors`, `GPT.load` reads it),
possibly with the trainer's state beside (`nanolens.training.state`). A **run** is what
`nanolens train --out DIR` writes: `metrics.jsonl`, `best/` and `last/` checkpoints, `data/`,
and any others (e.g. `checkpoints/iter_000500/`). A model trained elsewhere is named
`hf:SOURCE` (a Hugging Face checkpoint directory or hub name). Every `--ckpt`, `--init-from`,
the explorer's folder and `--resume` are resolved here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanolens.models import GPT
from nanolens.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError

from .metrics import METRICS_FILE
from .state import STATE_FILE, checkpoint_missing

RUN_CHECKPOINTS = ("best", "last")  # what a run's --ckpt means, in order of preference
HF_PREFIX = "hf:"  # `--ckpt hf:DIR`: a Hugging Face checkpoint, opened with GPT.from_hf


def hf_source(spec: str | Path) -> str | None:
    """The Hugging Face source `spec` names (`hf:DIR` or `hf:org/name` -> what follows), else None."""
    text = str(spec)
    return text[len(HF_PREFIX):] if text.startswith(HF_PREFIX) else None


def open_model(spec: str | Path, device: str = "cpu") -> GPT:
    """The model a `--ckpt` or `--init-from` names, in eval mode: `hf:SOURCE` opens a Hugging
    Face checkpoint (GPT.from_hf: a directory, or a hub name from the local cache or the
    network); anything else is a nanolens checkpoint or run directory (`model_dir`)."""
    source = hf_source(spec)
    if source is not None:
        if not source:
            raise ValueError(f"{spec!r}: give the checkpoint after hf:, e.g. hf:path/to/gpt2 or hf:openai-community/gpt2")
        return GPT.from_hf(source, device=device)
    return GPT.load(model_dir(spec), device=device).eval()


def is_checkpoint(path: str | Path) -> bool:
    """A folder holding a model: `config.json` and `model.safetensors`."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def is_run(path: str | Path) -> bool:
    """A folder a training run wrote: `metrics.jsonl`, or a `best/` or `last/` checkpoint."""
    path = Path(path)
    return path.is_dir() and ((path / METRICS_FILE).is_file() or any(is_checkpoint(path / n) for n in RUN_CHECKPOINTS))


def model_dir(path: str | Path) -> Path:
    """A model directory: `path` itself when it holds a config, else a run directory's best/
    (then last/). What every command's `--ckpt` accepts (with `hf:SOURCE`, via `open_model`)."""
    if hf_source(path) is not None:
        raise ValueError(f"{path} is a Hugging Face checkpoint: open it with open_model, or import it once with "
                         f"`nanolens import --hf {hf_source(path)} --out runs/NAME`")
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        return path
    for name in RUN_CHECKPOINTS:
        if (path / name / CONFIG_FILE).is_file():
            return path / name
    raise FileNotFoundError(f"{path}: no {CONFIG_FILE} there (nor in best/ or last/); give a checkpoint or run directory")


def run_of(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (None for a lone checkpoint)."""
    checkpoint = Path(checkpoint)
    for parent in (checkpoint.parent, checkpoint.parent.parent):
        if is_run(parent):
            return parent
    return None


def output_dir(checkpoint: str | Path, name: str) -> Path:
    """Where a command writes its results for a checkpoint: `RUN/name`, or `CHECKPOINT/name`
    for a checkpoint that belongs to no run; for `hf:DIR`, `DIR/name`, and for a hub name
    (whose files live in the download cache) `runs/ORG_NAME/name`."""
    source = hf_source(checkpoint)
    if source is not None:
        return Path(source) / name if Path(source).is_dir() else Path("runs") / source.replace("/", "_") / name
    checkpoint = Path(checkpoint)
    return (run_of(checkpoint) or checkpoint) / name


def find_runs(root: str | Path) -> list[Path]:
    """Run folders directly inside `root` (or `root` itself when it is one)."""
    root = Path(root)
    if is_run(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_run(p)),
                  key=lambda p: p.name)


@dataclass
class Checkpoint:
    """A checkpoint of a run, with what its trainer state says of it."""

    name: str
    path: Path
    iter: int | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None

    @property
    def label(self) -> str:
        it = f"iter {self.iter}" if self.iter is not None else "iter ?"
        return f"{self.name} ({it})"


def read_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    state: dict[str, Any] = {}
    if (path / STATE_FILE).is_file():
        try:
            state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
    return Checkpoint(path.name, path, state.get("iter"), state.get("val_loss"), state.get("best_val_loss"))


def find_checkpoints(run_dir: str | Path, depth: int = 2) -> list[Checkpoint]:
    """Every checkpoint folder inside a run (`best/`, `last/`, and any others, e.g.
    `checkpoints/iter_000500/`, up to `depth` levels down), ordered by iteration."""
    run_dir = Path(run_dir)
    found: list[Path] = []

    def walk(folder: Path, level: int) -> None:
        if level > depth:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            if is_checkpoint(child):
                found.append(child)
            elif child.name != "data":
                walk(child, level + 1)

    walk(run_dir, 1)
    checkpoints = [read_checkpoint(p) for p in found]
    for c in checkpoints:
        c.name = str(c.path.relative_to(run_dir))
    order = {"best": 1, "last": 2}
    checkpoints.sort(key=lambda c: (c.iter if c.iter is not None else -1, order.get(c.name, 0), c.name))
    return checkpoints


def distinct_checkpoints(checkpoints: Sequence[Checkpoint]) -> list[Checkpoint]:
    """One checkpoint per iteration (best/ and last/ are often the same state), oldest first."""
    seen: dict[Any, Checkpoint] = {}
    for c in checkpoints:
        key = c.iter if c.iter is not None else c.name
        if key not in seen:
            seen[key] = c
    return list(seen.values())


def recover_checkpoint(out_dir: str | Path, name: str) -> Path | None:
    """`out_dir/name` if it is a complete checkpoint, else None; a run killed between the two
    renames that swap a new checkpoint in leaves the previous one as `.NAME.old-PID`: complete,
    so it is moved back into place and used."""
    out_dir = Path(out_dir)
    dest = out_dir / name
    if dest.is_dir() and not checkpoint_missing(dest):
        return dest
    if not dest.exists():
        olds = sorted(out_dir.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in olds:
            if old.is_dir() and not checkpoint_missing(old):
                os.replace(old, dest)
                return dest
    return None


def find_checkpoint(out_dir: str | Path, name: str = "last") -> Path:
    """The complete checkpoint `out_dir/name` to resume from (recovered as `recover_checkpoint`
    says), or a CheckpointError that says what to do."""
    out_dir = Path(out_dir)
    found = recover_checkpoint(out_dir, name)
    if found is not None:
        return found
    dest = out_dir / name
    if dest.is_dir():
        raise CheckpointError(
            f"{dest} is missing {', '.join(checkpoint_missing(dest))}; it is not a complete training "
            "checkpoint, so the run cannot be resumed (start a new run, or restore the files)"
        )
    raise CheckpointError(
        f"{out_dir} holds no '{name}' checkpoint to resume from; start a new run without --resume, "
        "or point --out at the directory of the run to continue"
    )
