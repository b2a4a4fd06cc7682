"""The trainer: nanoGPT's recipe, shown to the user while it learns, and safe to kill.

>>> data = TokenData.from_text(text, tokenizer)
>>> trainer = Trainer(model, data, TrainConfig(max_iters=2000), out_dir="runs/shakespeare")
>>> trainer.train()                     # progress bar, samples, metrics.jsonl, best/ and last/
>>> Trainer(model, data, config, "runs/shakespeare", resume=True).train()   # continues exactly

The recipe is nanoGPT's: AdamW with weight decay on the >= 2-D parameters only (fused on CUDA),
linear warmup then cosine decay to `min_lr`, gradient clipping, gradient accumulation, mixed
precision on GPU, and loss estimates on both splits under `torch.no_grad()`.

Run directory (`out_dir`)
-------------------------
``metrics.jsonl``  one JSON object per line, appended and flushed as training goes (see
                   `Trainer` for its keys); the explorer app reads it.
``loss_curve.png`` the train/val loss curves, drawn at the end.
``last/``          the latest checkpoint, written at every evaluation and at the end.
``best/``          the checkpoint with the lowest val loss so far.

Each checkpoint directory holds the model files (``config.json``, ``model.safetensors``,
``tokenizer.json``; `GPT.load` reads it) plus the trainer state: ``optimizer.safetensors`` (the
optimizer's tensors) and ``optimizer.json`` (everything else of its state dict),
``rng.safetensors`` (torch CPU/CUDA generator states as uint8 tensors) and
``trainer_state.json`` (iteration, best val loss, elapsed time, the `TrainConfig`, python and
numpy RNG states, the fp16 grad scaler). Nothing is pickled. Every checkpoint is written into a
temporary directory and swapped in by renames (`atomic_directory`), so a run killed at any
moment, even mid-write, leaves a complete previous checkpoint, and `resume=True` continues from
it with the same iteration counter, optimizer moments and random streams.

Batches are drawn from a generator re-seeded at every iteration from (seed, rank, iteration),
so the sequence of batches after a resume is the one the uninterrupted run would have drawn,
and every process of a data-parallel run reads different windows.

Data parallel: launched by ``torchrun --nproc_per_node N`` (the RANK/LOCAL_RANK/WORLD_SIZE
environment), the trainer joins the process group (nccl on CUDA, gloo on CPU), wraps the model
in DistributedDataParallel and lets only rank 0 evaluate, print and write files. Each rank runs
`grad_accum_steps` micro-batches per iteration, so one iteration sees
``batch_size * grad_accum_steps * world_size`` windows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .batches import DataError, TokenData
from .checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, atomic_directory, write_model_files
from .config import ConfigError

if TYPE_CHECKING:
    from .gpt import GPT

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
OPTIMIZER_TENSORS, OPTIMIZER_META = "optimizer.safetensors", "optimizer.json"
RNG_FILE, STATE_FILE = "rng.safetensors", "trainer_state.json"
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, OPTIMIZER_TENSORS, OPTIMIZER_META, RNG_FILE, STATE_FILE)
STATE_FORMAT, STATE_VERSION = "nanolens-trainer", 1

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}

# Keys of a TOML/JSON config file that belong to the run, not to TrainConfig (the CLI reads them).
RUN_KEYS = ("model", "data", "preset", "tokenizer", "vocab_size", "out")


class StopTraining(Exception):
    """Raise from a callback to end training cleanly: the trainer evaluates, writes its
    checkpoints and returns, and `resume=True` can continue later."""


def notify(callbacks, record: dict[str, Any]) -> bool:
    """Hand each callback its own copy of `record`; True when one asked to stop (StopTraining)."""
    stop = False
    for callback in callbacks:
        try:
            callback(dict(record))
        except StopTraining:
            stop = True
    return stop


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
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

    def __post_init__(self) -> None:
        self.dtype = _DTYPE_ALIASES.get(str(self.dtype), str(self.dtype))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the problem and the fix."""
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
        if self.dtype not in ("auto", *DTYPES):
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
            import tomllib

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


# ---------------------------------------------------------------------------------------------
# runtime helpers
# ---------------------------------------------------------------------------------------------
def resolve_device(name: str = "auto") -> str:
    """`auto` picks cuda, then mps, then cpu; any other name is used as given."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(name: str, device_type: str) -> torch.dtype:
    """The autocast dtype: `auto` is bfloat16 (or float16 without bf16 support) on CUDA and
    float32 elsewhere. float16 needs CUDA; on CPU only bfloat16 autocast is offered."""
    if name == "auto":
        if device_type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtype = DTYPES[name]
    if dtype == torch.float16 and device_type != "cuda":
        raise ConfigError("float16 mixed precision needs a CUDA GPU; use bfloat16 or float32 here")
    if dtype != torch.float32 and device_type == "mps":
        raise ConfigError("mixed precision is not supported on mps; use dtype float32")
    return dtype


def stream_seed(*parts: Any) -> int:
    """A 63-bit seed derived from `parts` (e.g. seed, stream name, rank, iteration)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _json_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON")


def optimizer_state_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into tensors (for safetensors) and JSON-able rest."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = _json_value(value)
    meta = {"param_groups": _json_value(state_dict["param_groups"]), "state": scalars}
    return tensors, meta


def optimizer_state_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `optimizer_state_to_files`: a state dict for `load_state_dict`."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta.get("state", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def checkpoint_missing(directory: Path) -> list[str]:
    """The checkpoint files absent from `directory` (all of them when it does not exist)."""
    return [name for name in CHECKPOINT_FILES if not (directory / name).is_file()]


def find_checkpoint(out_dir: str | Path, name: str = "last") -> Path:
    """The complete checkpoint `out_dir/name` to resume from.

    A run killed between the two renames that swap a new checkpoint in leaves the previous one
    as `.NAME.old-PID`; it is complete, so it is moved back into place and used.
    """
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
    if dest.is_dir():
        raise CheckpointError(
            f"{dest} is missing {', '.join(checkpoint_missing(dest))}; it is not a complete training "
            "checkpoint, so the run cannot be resumed (start a new run, or restore the files)"
        )
    raise CheckpointError(
        f"{out_dir} holds no '{name}' checkpoint to resume from; start a new run without --resume, "
        "or point --out at the directory of the run to continue"
    )


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a torn last line, from a killed run, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def plot_losses(metrics: Sequence[dict[str, Any]] | str | Path, path: str | Path, title: str | None = None) -> Path | None:
    """Draw train and val loss against iteration into a PNG (matplotlib's Agg canvas, so no
    display and no change to pyplot's backend). Returns the path, or None with nothing to plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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


def save_png(fig: Any, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG atomically (beside it, then renamed), so a reader such
    as the explorer app never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def _distributed_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) without it."""
    if int(os.environ.get("RANK", "-1")) < 0:
        return 0, 0, 1
    return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def configure_optimizer(model: torch.nn.Module, config: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """nanoGPT's AdamW: weight decay on parameters of >= 2 dimensions (matrices, embeddings),
    none on biases and norm gains; the fused kernel on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if device_type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2), **extra)


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
Callback = Callable[[dict[str, Any]], Any]


class Trainer:
    """Train `model` on `data` with `config`, writing the run into `out_dir`.

    `callbacks`: plain callables, each called with one metrics dict (a copy) at every log step
    and every evaluation, on rank 0 only. A callback may raise `StopTraining` to end the run
    cleanly. The same dicts are the lines of `metrics.jsonl`. Keys:

    - ``kind``: ``"log"`` (every `log_interval` iterations), ``"eval"`` (every `eval_interval`
      and at the end) or ``"sample"`` (a sample taken between evaluations)
    - ``iter``: iterations completed (optimizer steps taken)
    - ``train_loss``: at log steps the mean loss of that iteration's micro-batches; at
      evaluations the estimate over `eval_iters` batches (None in sample records)
    - ``val_loss``: the val estimate at evaluations, else None
    - ``best_val_loss``: the lowest val estimate so far (None before the first)
    - ``lr``: the learning rate of the last (or next, at evaluations) step
    - ``tokens_per_s``: training throughput over the last log window (None at evaluations)
    - ``elapsed``: seconds of training so far, summed over resumed runs
    - ``sample``: the generated text, present only when a sample was taken

    Any other exception from a callback ends the run (the last checkpoint stays resumable).

    A fresh run seeds torch's global RNG with `seed + rank` (it drives dropout; build the model
    under your own seed before). `resume=True` loads `out_dir/last` (or recovers it, see
    `find_checkpoint`): model weights, optimizer, RNG states, iteration, best val loss; then
    continues where it stopped. `config` may differ from the saved one (e.g. a larger
    `max_iters`); the model must have the checkpoint's architecture (`GPT.load(out_dir/'last')`
    builds one).
    """

    # Test hook: called as hook(checkpoint_name, temp_dir) inside every checkpoint write, after
    # the model files are written and before the trainer state is (so tests can kill the run there).
    _checkpoint_hook: Callable[[str, Path], None] | None = None

    def __init__(
        self,
        model: "GPT",
        data: TokenData,
        config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        callbacks: Iterable[Callback] = (),
        resume: bool = False,
    ) -> None:
        self.config = cfg = config if config is not None else TrainConfig()
        self.data = data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = list(callbacks)
        self.raw_model = model
        if resume and self.out_dir is None:
            raise ValueError("resume=True needs the out_dir of the run to continue")
        if cfg.save_checkpoints and self.out_dir is None:
            cfg = self.config = cfg.replace(save_checkpoints=False)

        # processes and device
        self.rank, self.local_rank, self.world_size = _distributed_env()
        self.ddp = self.world_size > 1
        self.master = self.rank == 0
        self._owns_process_group = False
        device = resolve_device(cfg.device)
        if self.ddp and device.startswith("cuda"):
            device = f"cuda:{self.local_rank}"
            torch.cuda.set_device(device)
        self.device = device
        self.device_type = torch.device(device).type
        self.ptdtype = resolve_dtype(cfg.dtype, self.device_type)
        if self.ddp:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device_type == "cuda" else "gloo")
                self._owns_process_group = True

        # shapes
        self.block_size = cfg.block_size or model.config.block_size
        if self.block_size > model.config.block_size:
            raise ConfigError(
                f"block_size {self.block_size} is larger than the model's context ({model.config.block_size}); "
                "lower block_size or build the model with a larger block_size"
            )
        if data.vocab_size > model.config.vocab_size:
            raise DataError(
                f"the data's vocabulary ({data.vocab_size} tokens) is larger than the model's "
                f"vocab_size ({model.config.vocab_size}); build the model with vocab_size={data.vocab_size}"
            )
        data.check_block_size(self.block_size)
        self.tokens_per_iter = cfg.batch_size * self.block_size * cfg.grad_accum_steps * self.world_size

        # model, optimizer, precision
        model.to(self.device)
        self.optimizer = configure_optimizer(model, cfg, self.device_type)
        self.scaler = torch.amp.GradScaler(self.device_type if self.device_type == "cuda" else "cpu",
                                           enabled=self.ptdtype == torch.float16)
        if self.ptdtype == torch.float32:
            self.autocast = nullcontext()
        else:
            self.autocast = torch.autocast(device_type=self.device_type, dtype=self.ptdtype)

        # state
        self.iter_num = 0
        self.best_val_loss: float | None = None
        self.last_val_loss: float | None = None
        self.last_train_loss: float | None = None
        self.elapsed_before = 0.0
        self.resumed_from: Path | None = None
        if resume:
            self.resumed_from = find_checkpoint(self.out_dir, "last")
            self.load_checkpoint(self.resumed_from)
        else:
            torch.manual_seed(cfg.seed + self.rank)  # dropout's stream; batches have their own

        self.model: torch.nn.Module = model
        if cfg.compile:
            self.model = torch.compile(model)
        self.eval_model = self.model
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.model, device_ids=[self.local_rank] if self.device_type == "cuda" else None)
        self._batch_generator = torch.Generator()
        self._stop = False
        self._prompt_ids = self._sample_prompt_ids() if cfg.sample_interval else None
        self._metrics_file = None

    # ---- properties ------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path | None:
        return self.out_dir / METRICS_FILE if self.out_dir is not None else None

    def lr_at(self, it: int) -> float:
        return self.config.lr_at(it)

    def _sample_prompt_ids(self) -> list[int] | None:
        tokenizer = self.raw_model.tokenizer
        if tokenizer is None:
            return None
        prompt = self.config.sample_prompt
        try:
            ids = tokenizer.encode(prompt) if prompt else []
        except ValueError as err:
            if prompt != TrainConfig.sample_prompt:
                raise ValueError(f"sample_prompt {prompt!r} cannot be encoded: {err}") from None
            ids = []
        if not ids:  # the default newline is not in this corpus: start from its first token
            ids = [int(self.data.train[0])]
        return ids[-self.block_size:]

    # ---- batches and evaluation ------------------------------------------------------------
    def get_batch(self, split: str, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.get_batch(split, self.config.batch_size, self.block_size, generator, self.device)

    @torch.no_grad()
    def estimate_loss(self, eval_iters: int | None = None) -> dict[str, float]:
        """Mean loss over `eval_iters` random batches of each split, in eval mode under
        `torch.no_grad()` (as nanoGPT's estimate_loss). Its batches come from a generator seeded
        by (seed, iteration), so they never disturb the training stream."""
        eval_iters = eval_iters or self.config.eval_iters
        generator = torch.Generator().manual_seed(stream_seed(self.config.seed, "eval", self.iter_num))
        model = self.eval_model
        was_training = model.training
        model.eval()
        out = {}
        try:
            for split in ("train", "val"):
                losses = torch.zeros(eval_iters)
                for k in range(eval_iters):
                    x, y = self.get_batch(split, generator)
                    with self.autocast:
                        _, loss = model(x, targets=y, return_type="both")
                    losses[k] = loss.item()
                out[split] = float(losses.mean())
        finally:
            model.train(was_training)
        return out

    def sample(self, max_new_tokens: int | None = None, seed: int | None = None) -> str | None:
        """A short sample from the prompt (None when the model has no tokenizer)."""
        if self._prompt_ids is None:
            self._prompt_ids = self._sample_prompt_ids()
        if self._prompt_ids is None:
            return None
        cfg = self.config
        tokens = torch.tensor([self._prompt_ids], dtype=torch.long, device=self.device)
        out = self.raw_model.generate(
            tokens, max_new_tokens=max_new_tokens or cfg.sample_tokens, temperature=cfg.sample_temperature,
            top_k=cfg.sample_top_k, seed=cfg.seed + self.iter_num if seed is None else seed,
        )
        return self.raw_model.tokenizer.decode(out[0].tolist())

    # ---- checkpoints -----------------------------------------------------------------------
    def state_dict_json(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        py_state = random.getstate()
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "iter": self.iter_num,
            "best_val_loss": self.best_val_loss,
            "val_loss": self.last_val_loss,
            "train_loss": self.last_train_loss,
            "elapsed": self.elapsed,
            "world_size": self.world_size,
            "train_config": self.config.to_dict(),
            "python_random": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy_random": [np_state[0], np_state[1].tolist(), *[_json_value(v) for v in np_state[2:]]],
            "grad_scaler": _json_value(self.scaler.state_dict()) if self.scaler.is_enabled() else None,
        }

    def save_checkpoint(self, name: str = "last") -> Path:
        """Write `out_dir/name` atomically: model files + optimizer + RNG + trainer state."""
        if self.out_dir is None:
            raise ValueError("this trainer has no out_dir to write checkpoints into")
        dest = self.out_dir / name
        with atomic_directory(dest) as tmp:
            write_model_files(self.raw_model, tmp)
            if Trainer._checkpoint_hook is not None:
                Trainer._checkpoint_hook(name, tmp)
            tensors, meta = optimizer_state_to_files(self.optimizer)
            save_file(tensors, str(tmp / OPTIMIZER_TENSORS), metadata={"format": STATE_FORMAT})
            (tmp / OPTIMIZER_META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
            rng = {"torch_cpu": torch.get_rng_state()}
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                for i, state in enumerate(torch.cuda.get_rng_state_all()):
                    rng[f"torch_cuda.{i}"] = state
            save_file(rng, str(tmp / RNG_FILE), metadata={"format": STATE_FORMAT})
            (tmp / STATE_FILE).write_text(json.dumps(self.state_dict_json(), indent=1) + "\n", encoding="utf-8")
        return dest

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore weights, optimizer, RNG states, iteration and best val loss from a checkpoint."""
        from safetensors.torch import load_model as load_safetensors_model

        directory = Path(directory)
        missing = checkpoint_missing(directory)
        if missing:
            raise CheckpointError(f"{directory} is missing {', '.join(missing)}; it cannot be resumed from")
        try:
            state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"format {state.get('format')!r}")
            opt_meta = json.loads((directory / OPTIMIZER_META).read_text(encoding="utf-8"))
            opt_tensors = load_file(str(directory / OPTIMIZER_TENSORS))
            rng = load_file(str(directory / RNG_FILE))
        except (json.JSONDecodeError, ValueError, OSError) as err:
            raise CheckpointError(f"{directory} holds a corrupt trainer state ({err}); it cannot be resumed from") from None
        try:
            load_safetensors_model(self.raw_model, str(directory / WEIGHTS_FILE), strict=True, device=str(self.device))
        except RuntimeError as err:
            raise CheckpointError(
                f"{directory / WEIGHTS_FILE} does not fit this model ({str(err).splitlines()[0]}); resume "
                "with the model config saved in the checkpoint (GPT.load(dir))"
            ) from None
        try:
            self.optimizer.load_state_dict(optimizer_state_from_files(opt_tensors, opt_meta))
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{directory}: the optimizer state does not fit this model ({err})") from None
        self.iter_num = int(state["iter"])
        self.best_val_loss = state.get("best_val_loss")
        self.last_val_loss = state.get("val_loss")
        self.last_train_loss = state.get("train_loss")
        self.elapsed_before = float(state.get("elapsed", 0.0))
        if state.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["grad_scaler"])
        if self.master and state.get("world_size", 1) == self.world_size:
            torch.set_rng_state(rng["torch_cpu"])
            cuda_states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda.")]
            if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
            version, internal, gauss = state["python_random"]
            random.setstate((version, tuple(internal), gauss))
            name, keys, pos, has_gauss, cached = state["numpy_random"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        else:  # other ranks (whose streams were not saved) get fresh, distinct ones
            torch.manual_seed(stream_seed(self.config.seed, "resume", self.rank, self.iter_num))

    # ---- metrics ---------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        start = getattr(self, "_run_start", None)
        return self.elapsed_before + (time.perf_counter() - start if start is not None else 0.0)

    def _open_metrics(self) -> None:
        if not self.master or self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.metrics_path
        if self.resumed_from is not None:
            # drop what was logged after the checkpoint we resume from (and a torn last line)
            keep = [r for r in read_metrics(path) if r.get("iter", 0) <= self.iter_num]
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
            os.replace(tmp, path)
            self._metrics_file = open(path, "a", encoding="utf-8")
        else:
            self._metrics_file = open(path, "w", encoding="utf-8")

    def _emit(self, record: dict[str, Any]) -> None:
        """Write one metrics record and hand it to the callbacks (rank 0 only)."""
        if not self.master:
            return
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(record) + "\n")
            self._metrics_file.flush()
        self._stop |= notify(self.callbacks, record)

    def _clean_stale(self) -> None:
        """Remove temporary directories left by a run killed mid-write."""
        if not self.master or self.out_dir is None or not self.out_dir.is_dir():
            return
        for name in ("last", "best"):
            for stale in list(self.out_dir.glob(f".{name}.tmp-*")) + list(self.out_dir.glob(f".{name}.old-*")):
                if (self.out_dir / name).is_dir():
                    shutil.rmtree(stale, ignore_errors=True)

    # ---- the loop --------------------------------------------------------------------------
    def _evaluate(self, it: int, do_eval: bool, do_sample: bool, pbar) -> None:
        """Evaluation, sample and checkpoints for the state after `it` iterations (rank 0)."""
        cfg = self.config
        record: dict[str, Any] = {"kind": "eval" if do_eval else "sample", "iter": it, "train_loss": None, "val_loss": None}
        improved = False
        if do_eval:
            losses = self.estimate_loss()
            record["train_loss"], record["val_loss"] = losses["train"], losses["val"]
            self.last_train_loss, self.last_val_loss = losses["train"], losses["val"]
            if self.best_val_loss is None or losses["val"] < self.best_val_loss:
                self.best_val_loss, improved = losses["val"], True
        record.update(best_val_loss=self.best_val_loss, lr=cfg.lr_at(it), tokens_per_s=None,
                      elapsed=round(self.elapsed, 3))
        if do_sample:
            text = self.sample()
            if text is not None:
                record["sample"] = text
                if cfg.verbose:
                    pbar.write(f"--- sample at iter {it} ---\n{text}\n---")
        if do_eval:
            pbar.set_postfix_str(self._postfix(), refresh=False)
            if cfg.save_checkpoints:
                self.save_checkpoint("last")
                if improved and cfg.save_best:
                    self.save_checkpoint("best")
        self._emit(record)

    def _postfix(self, tokens_per_s: float | None = None) -> str:
        parts = []
        if self.last_train_loss is not None:
            parts.append(f"loss {self.last_train_loss:.4f}")
        if self.last_val_loss is not None:
            parts.append(f"val {self.last_val_loss:.4f}")
        if tokens_per_s is not None:
            parts.append(f"{tokens_per_s:,.0f} tok/s")
        return ", ".join(parts)

    def _sync_stop(self) -> None:
        if self.ddp:
            import torch.distributed as dist

            flag = torch.tensor([1 if self._stop else 0], device=self.device if self.device_type == "cuda" else "cpu")
            dist.broadcast(flag, src=0)
            self._stop = bool(flag.item())

    def train(self) -> dict[str, Any]:
        """Run until `max_iters` (or a callback's StopTraining); returns a summary dict
        (iter, train_loss, val_loss, best_val_loss, elapsed, out_dir)."""
        from tqdm.auto import tqdm

        cfg = self.config
        model, raw = self.model, self.raw_model
        self._clean_stale()
        self._open_metrics()
        self._run_start = time.perf_counter()
        it = self.iter_num
        skip_first = self.resumed_from is not None  # its evaluation was done before the checkpoint
        show = self.master and cfg.progress
        pbar = tqdm(total=cfg.max_iters, initial=min(it, cfg.max_iters), desc="training", unit="it",
                    disable=not show, dynamic_ncols=True, file=sys.stderr)
        if self.master and cfg.verbose:
            note = f", resuming at iter {it} from {self.resumed_from}" if self.resumed_from else ""
            pbar.write(
                f"training {raw.num_params():,} parameters on {self.device} ({str(self.ptdtype).replace('torch.', '')})"
                f"{'' if self.world_size == 1 else f' x {self.world_size} processes'}: {self.data.n_train:,} train / "
                f"{self.data.n_val:,} val tokens, {self.tokens_per_iter:,} tokens per iteration{note}"
            )
        model.train()
        window_start, window_iters = time.perf_counter(), 0
        loss_sum = torch.zeros((), device=self.device)
        try:
            while True:
                at_end = it >= cfg.max_iters or self._stop
                do_eval = at_end or (cfg.eval_interval > 0 and it % cfg.eval_interval == 0)
                do_sample = cfg.sample_interval > 0 and (at_end or it % cfg.sample_interval == 0)
                if (do_eval or do_sample) and not skip_first:
                    if self.master:
                        self._evaluate(it, do_eval, do_sample, pbar)
                    self._sync_stop()
                    window_start, window_iters = time.perf_counter(), 0
                skip_first = False
                if at_end or self._stop:
                    break

                lr = cfg.lr_at(it)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self._batch_generator.manual_seed(stream_seed(cfg.seed, "train", self.rank, it))
                loss_sum.zero_()
                for micro in range(cfg.grad_accum_steps):
                    x, y = self.get_batch("train", self._batch_generator)
                    if self.ddp:  # all-reduce gradients only on the last micro-batch
                        model.require_backward_grad_sync = micro == cfg.grad_accum_steps - 1
                    with self.autocast:
                        _, loss = model(x, targets=y, return_type="both")
                        loss = loss / cfg.grad_accum_steps
                    loss_sum += loss.detach()
                    self.scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                it += 1
                self.iter_num = it
                window_iters += 1
                pbar.update(1)

                if it % cfg.log_interval == 0:
                    if self.master:
                        now = time.perf_counter()
                        tokens_per_s = window_iters * self.tokens_per_iter / max(now - window_start, 1e-9)
                        window_start, window_iters = now, 0
                        train_loss = float(loss_sum.item())
                        self.last_train_loss = train_loss
                        pbar.set_postfix_str(self._postfix(tokens_per_s), refresh=False)
                        self._emit({
                            "kind": "log", "iter": it, "train_loss": train_loss, "val_loss": None,
                            "best_val_loss": self.best_val_loss, "lr": lr, "tokens_per_s": round(tokens_per_s, 1),
                            "elapsed": round(self.elapsed, 3),
                        })
                    self._sync_stop()
        finally:
            pbar.close()
            self.elapsed_before = self.elapsed
            self._run_start = None
            if self._metrics_file is not None:
                self._metrics_file.close()
                self._metrics_file = None

        if self.master and cfg.plot and self.out_dir is not None:
            plot_losses(self.metrics_path, self.out_dir / LOSS_CURVE_FILE,
                        title=f"{raw.config.preset or 'model'}: {raw.num_params():,} parameters")
        summary = {
            "iter": self.iter_num, "train_loss": self.last_train_loss, "val_loss": self.last_val_loss,
            "best_val_loss": self.best_val_loss, "elapsed": round(self.elapsed_before, 3),
            "out_dir": str(self.out_dir) if self.out_dir is not None else None,
        }
        if self.master and cfg.verbose and self.last_val_loss is not None:
            where = f"; checkpoints in {self.out_dir}/last and /best" if cfg.save_checkpoints else ""
            print(f"done: iter {self.iter_num}, val loss {self.last_val_loss:.4f} (best {self.best_val_loss:.4f}), "
                  f"{self.elapsed_before:.1f} s{where}")
        self.close()
        return summary

    def close(self) -> None:
        """Leave the process group if this trainer joined it."""
        if self._owns_process_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()
            self._owns_process_group = False
