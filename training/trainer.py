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
``tokenizer.json``; `GPT.load` reads it) plus the trainer state (`nanolens.training.state`).
Nothing is pickled. Every checkpoint is written into a
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

import json
import math
import sys
import time
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from nanolens.files import atomic_write_text
from nanolens.models import GPT, ConfigError
from nanolens.models.costs import train_flops_per_token

from .batches import DataError, TokenData
from .checkpoints import CheckpointCommit
from .config import TrainConfig
from .guard import (MAX_CONSECUTIVE_SKIPS, TrainingDiverged, divergence_message, gradient_norm, non_finite,
                    weights_are_finite)
from .lock import RunLock
from .metrics import METRICS_FILE, Callback, finite_json, notify, read_metrics
from .peak import mfu, peak_flops
from .plots import LOSS_CURVE_FILE, plot_losses
from .runs import find_checkpoint
from .runtime import distributed_env, resolve_device, resolve_dtype, stream_seed
from .watch import Instability, Watch


def configure_optimizer(model: torch.nn.Module, config: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """nanoGPT's AdamW: weight decay on parameters of >= 2 dimensions (matrices, embeddings),
    none on biases and norm gains; the fused kernel on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if device_type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2), **extra)


class Trainer(CheckpointCommit):
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
        self.rank, self.local_rank, self.world_size = distributed_env()
        self.ddp = self.world_size > 1
        self.master = self.rank == 0
        self._owns_process_group = False
        device = resolve_device(cfg.device)
        if self.ddp and device.startswith("cuda"):
            device = f"cuda:{self.local_rank}"
            torch.cuda.set_device(device)
        self.device = device
        self.device_type = torch.device(device).type
        self.ptdtype, self.dtype_reason = resolve_dtype(cfg.dtype, self.device_type, model.config.n_embd)
        if self.ddp:
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
        # MFU: the model's FLOPs per token against this machine's measured peak (training/peak.py)
        self.flops_per_token = train_flops_per_token(model.config, self.block_size)
        self.peak = (peak_flops(str(self.ptdtype).removeprefix("torch."), self.device_type)
                     if self.master and self.device_type in ("cpu", "cuda") else float("nan"))

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
        self.notes: list[str] = []  # what a resume found and repaired, printed when the run starts
        self.checkpoint_iter: int | None = None  # the iteration last/ holds
        self._lock = RunLock.acquire(self.out_dir) if self.out_dir is not None and self.master else None
        if resume:
            self.resumed_from = find_checkpoint(self.out_dir, "last")
            self.load_checkpoint(self.resumed_from)
            self._check_best()
        else:
            torch.manual_seed(cfg.seed + self.rank)  # dropout's stream; batches have their own

        self.model: torch.nn.Module = model
        if cfg.compile:
            self.model = torch.compile(model)
        self.eval_model = self.model
        if self.ddp:
            self.model = DistributedDataParallel(self.model, device_ids=[self.local_rank] if self.device_type == "cuda" else None)
        self._batch_generator = torch.Generator()
        self._stop = False
        self._prompt_ids = self._sample_prompt_ids() if cfg.sample_interval else None
        self._metrics_file = None
        watched = cfg.watch and self.master and model.config.n_layer > 0 and data.n_val + data.n_train > 2
        self._watch = Watch(model, data.split("val") if data.n_val > 2 else data.split("train"), seed=cfg.seed) if watched else None
        self.instability = Instability()
        self.flags: list[dict[str, Any]] = []  # every instability flag raised: {"iter", "flag"}

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
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
            self._metrics_file = open(path, "a", encoding="utf-8")
        else:
            self._metrics_file = open(path, "w", encoding="utf-8")

    def _emit(self, record: dict[str, Any]) -> None:
        """Write one metrics record and hand it to the callbacks (rank 0 only)."""
        if not self.master:
            return
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(finite_json(record), allow_nan=False) + "\n")
            self._metrics_file.flush()
        self._stop |= notify(self.callbacks, record)

    # ---- the loop --------------------------------------------------------------------------
    def _evaluate(self, it: int, do_eval: bool, do_sample: bool, pbar) -> None:
        """Evaluation, sample and checkpoints for the state after `it` iterations (rank 0).

        The commit order cannot lie whenever the process dies: the eval row first (a resume
        drops rows after the checkpoint it starts from, so a row is never orphaned or lost),
        then `best/` (when improved), then `last/`, whose trainer state is what a resume reads."""
        cfg = self.config
        if not weights_are_finite(self.raw_model.parameters()):
            self._diverge(it, "the weights hold inf or NaN after the last update", cfg.lr_at(max(it - 1, 0)))
        record: dict[str, Any] = {"kind": "eval" if do_eval else "sample", "iter": it, "train_loss": None, "val_loss": None}
        improved = False
        if do_eval:
            losses = self.estimate_loss()
            bad = [f"the {split} loss estimate is {value}" for split, value in losses.items() if not math.isfinite(value)]
            if bad:
                self._diverge(it, bad[0], cfg.lr_at(max(it - 1, 0)))
            record["train_loss"], record["val_loss"] = losses["train"], losses["val"]
            self.last_train_loss, self.last_val_loss = losses["train"], losses["val"]
            if self.best_val_loss is None or losses["val"] < self.best_val_loss:
                self.best_val_loss, improved = losses["val"], True
            if self._watch is not None:
                record["watch"] = self._watch.measure(self.raw_model)
                self._flag(record, self.instability.evaluation(record["watch"]), pbar)
        record.update(best_val_loss=self.best_val_loss, lr=cfg.lr_at(it), tokens_per_s=None,
                      elapsed=round(self.elapsed, 3))
        if do_sample:
            text = self.sample()
            if text is not None:
                record["sample"] = text
                if cfg.verbose:
                    pbar.write(f"--- sample at iter {it} ---\n{text}\n---")
        self._emit(record)
        if do_eval:
            pbar.set_postfix_str(self._postfix(), refresh=False)
            if cfg.save_checkpoints:
                if improved and cfg.save_best:
                    self.save_checkpoint("best")
                self.save_checkpoint("last")

    def _diverge(self, it: int, what: str, lr: float) -> None:
        """Record why the run stops (a `stop` row) and raise TrainingDiverged; nothing is saved."""
        cfg = self.config
        message = divergence_message(it, what, lr, cfg.learning_rate, cfg.grad_clip, self.checkpoint_iter)
        self._emit({"kind": "stop", "iter": it, "reason": message, "train_loss": None, "val_loss": None,
                    "best_val_loss": self.best_val_loss, "lr": lr, "elapsed": round(self.elapsed, 3)})
        raise TrainingDiverged(message)

    def _flag(self, record: dict[str, Any], flags: list[str], pbar) -> None:
        """Note instability flags in the row, the run's list and (once each) the progress bar."""
        if flags:
            record["flags"] = flags
            self.flags += [{"iter": record["iter"], "flag": flag} for flag in flags]
            for flag in flags:
                pbar.write(f"warning at iter {record['iter']}: {flag}")

    def _postfix(self, tokens_per_s: float | None = None) -> str:
        parts = []
        if self.last_train_loss is not None:
            parts.append(f"loss {self.last_train_loss:.4f}")
        if self.last_val_loss is not None:
            parts.append(f"val {self.last_val_loss:.4f}")
        if tokens_per_s is not None:
            parts.append(f"{tokens_per_s:,.0f} tok/s")
            if math.isfinite(self.peak):
                parts.append(f"MFU {mfu(tokens_per_s, self.flops_per_token, self.peak):.1%}")
        if self.flags:
            parts.append(f"{len(self.flags)} warning{'s' * (len(self.flags) > 1)}")
        return ", ".join(parts)

    def _sync_stop(self) -> None:
        if self.ddp:
            flag = torch.tensor([1 if self._stop else 0], device=self.device if self.device_type == "cuda" else "cpu")
            dist.broadcast(flag, src=0)
            self._stop = bool(flag.item())

    def train(self) -> dict[str, Any]:
        """Run until `max_iters` (or a callback's StopTraining); returns a summary dict
        (iter, train_loss, val_loss, best_val_loss, elapsed, out_dir)."""
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
            peak = f", measured peak {self.peak / 1e9:,.0f} GFLOP/s" if math.isfinite(self.peak) else ""
            pbar.write(
                f"training {raw.num_params():,} parameters on {self.device} ({self.dtype_reason}{peak})"
                f"{'' if self.world_size == 1 else f' x {self.world_size} processes'}: {self.data.n_train:,} train / "
                f"{self.data.n_val:,} val tokens, {self.tokens_per_iter:,} tokens per iteration{note}"
            )
            for line in self.notes:
                pbar.write(f"note: {line}")
        model.train()
        window_start, window_iters = time.perf_counter(), 0
        loss_sum = torch.zeros((), device=self.device)
        skips = 0  # consecutive steps skipped for a non-finite loss or gradient (on_nan="skip")
        window_norms: list[float] = []  # gradient norms since the last log row
        window_clips = 0  # steps whose gradients were clipped since the last log row
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
                grad_norm = None
                if cfg.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
                elif not self.scaler.is_enabled():  # fp16's scaler skips overflowing steps itself
                    grad_norm = gradient_norm(raw.parameters())
                bad = non_finite(loss_sum, grad_norm)
                if grad_norm is not None and bad is None:
                    norm = float(grad_norm)
                    window_norms.append(norm)
                    window_clips += int(cfg.grad_clip > 0 and norm > cfg.grad_clip)
                if bad is None:
                    skips = 0
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                elif cfg.on_nan == "skip" and skips < MAX_CONSECUTIVE_SKIPS:
                    skips += 1
                    self._emit({"kind": "skip", "iter": it + 1, "reason": f"{bad}; the update was skipped", "lr": lr,
                                "train_loss": None, "val_loss": None, "elapsed": round(self.elapsed, 3)})
                else:
                    if skips:
                        bad += f" ({skips} steps in a row)"
                    self.optimizer.zero_grad(set_to_none=True)
                    self._diverge(it, bad, lr)
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
                        row = {
                            "kind": "log", "iter": it, "train_loss": train_loss, "val_loss": None,
                            "best_val_loss": self.best_val_loss, "lr": lr, "tokens_per_s": round(tokens_per_s, 1),
                            "mfu": round(mfu(tokens_per_s, self.flops_per_token, self.peak), 5),
                            "grad_norm": round(window_norms[-1], 5) if window_norms else None,
                            "grad_norm_max": round(max(window_norms), 5) if window_norms else None,
                            "clipped": window_clips, "elapsed": round(self.elapsed, 3),
                        }
                        self._flag(row, self.instability.step(train_loss, window_norms[-1] if window_norms else None), pbar)
                        pbar.set_postfix_str(self._postfix(tokens_per_s), refresh=False)
                        self._emit(row)
                        window_norms, window_clips = [], 0
                    self._sync_stop()
        finally:
            self._release_lock()
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

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self) -> None:
        """Give the run folder's lock back, and leave the process group if this trainer joined it."""
        self._release_lock()
        if self._owns_process_group:
            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()
            self._owns_process_group = False
