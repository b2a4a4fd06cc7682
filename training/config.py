"""TrainConfig: every training hyperparameter as one plain dataclass, and config files.

A `nanolens train --config FILE` is TOML or JSON; its keys are TrainConfig fields plus the run
keys the CLI reads (`RUN_KEYS`). Python 3.10 reads TOML with `tomli`, 3.11+ with `tomllib`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanolens.models import ConfigError
from nanolens.models.config import check_field_types

from .guard import NAN_POLICIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DTYPE_NAMES = ("float32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}

# Keys of a TOML/JSON config file that belong to the run, not to TrainConfig (the CLI reads them).
RUN_KEYS = ("model", "data", "preset", "tokenizer", "vocab_size", "init_from", "out")


@dataclass
class TrainConfig:
    """Every training hyperparameter. The defaults are nanoGPT's CPU recipe for tiny Shakespeare
    (lr 1e-3 decaying to 1e-4 after 100 warmup iterations, beta2 0.99, batch 12)."""

    # batches
    batch_size: int = 12
    block_size: int | None = None  # None: the model's block_size
    grad_accum_steps: int = 1  # micro-batches per iteration (per process)
    val_fraction: float = 0.1  # the share of the corpus held out for val (used by `nanolens train`)
    # schedule
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: max_iters
    decay_lr: bool = True  # False: constant learning_rate
    # optimizer
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0: no clipping
    # evaluation, logging, samples
    eval_interval: int = 250  # 0: evaluate only at the end
    eval_iters: int = 200  # batches per split for each loss estimate
    log_interval: int = 10
    sample_interval: int = 500  # 0: no samples
    sample_tokens: int = 200
    sample_prompt: str = "\n"
    sample_temperature: float = 0.8
    sample_top_k: int | None = None
    # checkpoints and output
    save_checkpoints: bool = True  # write last/ (and best/) under out_dir at every evaluation
    save_best: bool = True
    plot: bool = True  # loss_curve.png at the end
    progress: bool = True  # the tqdm progress bar
    verbose: bool = True  # print samples and a summary
    # runtime
    seed: int = 1337
    device: str = "auto"  # auto (cuda, mps, cpu), cpu, cuda, cuda:N, mps
    dtype: str = "auto"  # auto (bfloat16 or float16 autocast on CUDA, float32 elsewhere), float32, bfloat16, float16
    compile: bool = False  # torch.compile the model
    on_nan: str = "stop"  # a non-finite loss or gradient: "stop" the run (default) or "skip" the step
    watch: bool = True  # at every evaluation, record head scores, the logit lens and residual norms (training/watch.py)

    def __post_init__(self) -> None:
        self.dtype = _DTYPE_ALIASES.get(str(self.dtype), str(self.dtype))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the problem and the fix."""
        check_field_types(self)
        at_least = {
            "batch_size": 1, "grad_accum_steps": 1, "max_iters": 0, "warmup_iters": 0, "eval_interval": 0,
            "eval_iters": 1, "log_interval": 1, "sample_interval": 0, "sample_tokens": 1,
        }
        for name, low in at_least.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("block_size", "lr_decay_iters", "sample_top_k"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1 (or None), got {value!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ConfigError(f"min_lr must lie in [0, learning_rate={self.learning_rate}], got {self.min_lr}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay and grad_clip must be >= 0 (grad_clip 0 turns clipping off)")
        if self.sample_temperature < 0:
            raise ConfigError(f"sample_temperature must be >= 0 (0 = greedy), got {self.sample_temperature}")
        if self.on_nan not in NAN_POLICIES:
            raise ConfigError(f"on_nan must be one of {', '.join(NAN_POLICIES)}, got {self.on_nan!r}")
        if self.dtype not in ("auto", *DTYPE_NAMES):
            raise ConfigError(f"unknown dtype {self.dtype!r}; use auto, float32, bfloat16 or float16")
        if not (self.device in ("auto", "cpu", "mps", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"unknown device {self.device!r}; use auto, cpu, cuda, cuda:N or mps")

    # ---- schedule --------------------------------------------------------------------------
    def lr_at(self, it: int) -> float:
        """nanoGPT's schedule: linear warmup for `warmup_iters`, cosine decay to `min_lr` at
        `lr_decay_iters` (default `max_iters`), then `min_lr`."""
        if not self.decay_lr:
            return self.learning_rate
        if it < self.warmup_iters:
            return self.learning_rate * (it + 1) / (self.warmup_iters + 1)
        decay_iters = self.lr_decay_iters if self.lr_decay_iters is not None else self.max_iters
        if it >= decay_iters:
            return self.min_lr
        ratio = (it - self.warmup_iters) / (decay_iters - self.warmup_iters)
        coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
        return self.min_lr + coeff * (self.learning_rate - self.min_lr)

    # ---- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], ignore: Iterable[str] = ()) -> "TrainConfig":
        """Build from a dict; keys in `ignore` are skipped, any other unknown key is an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k not in set(ignore)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; valid fields are: {', '.join(sorted(known))}")
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a `.json` or `.toml` file of TrainConfig fields. The run keys the CLI reads
        (`model` table, `data`, `preset`, `tokenizer`, `vocab_size`, `out`) are allowed and skipped."""
        return cls.from_dict(read_config_file(path), ignore=RUN_KEYS)



def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML or JSON config file as a dict, with a one-line error for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path} must end in .toml or .json")
    except (ValueError,) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{path} is not valid {suffix[1:].upper()}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a table/object of settings, not {type(data).__name__}")
    return data
