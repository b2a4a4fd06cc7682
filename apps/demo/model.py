"""The demo's model: trained for a wall-clock budget on the Trainer (a few timed steps choose
the number of iterations, so the demo fits its minutes whatever the CPU), or loaded from a
checkpoint; and whether it carries a story's sentiment at all."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from nanolens.corpora.sentiment import LEXICON
from nanolens.models import GPT
from nanolens.training import TokenData, Trainer, TrainConfig, model_and_data, model_dir

from .plan import DemoPlan


def _step_seconds(model: GPT, data: TokenData, plan: DemoPlan, device: str, steps: int = 8) -> float:
    """The median time of a training step of a copy of `model` (after one warm-up step)."""
    probe = copy.deepcopy(model).to(device).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 1):
        x, y = data.get_batch("train", plan.batch_size, plan.block_size, gen, device)
        t = time.perf_counter()
        _, loss = probe(x, targets=y, return_type="both")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def calibrate_iters(model: GPT, data: TokenData, plan: DemoPlan, seconds: float, device: str) -> tuple[int, float]:
    """Time a few training steps of a copy of `model`; the iterations that fit in `seconds`.

    On a CPU with several threads, one thread is timed too and kept if it is faster: when other
    processes share the cores, several threads spin-wait and can be many times slower."""
    step = _step_seconds(model, data, plan, device)
    threads = torch.get_num_threads()
    if device == "cpu" and threads > 1:
        torch.set_num_threads(1)
        single = _step_seconds(model, data, plan, device)
        if single < step:
            step = single  # keep one thread for the rest of the run
        else:
            torch.set_num_threads(threads)
    # evaluations (2 splits x eval_iters forward passes ~ 1/3 of a step each, 5 of them) and samples
    overhead = 5 * 2 * plan.eval_iters * step / 3 + 4.0
    iters = int(max(seconds - overhead, 0) / step)
    return max(plan.min_iters, min(plan.max_iters, iters)), step


def train_demo_model(text: str, plan: DemoPlan, out_dir: Path | None, device: str = "cpu", seed: int = 0,
                     iters: int | None = None, progress: bool = True, sample_prompt: str = "\n",
                     data_name: str = "sentiment") -> tuple[GPT, dict[str, Any]]:
    """Train the model of `plan` (its preset and sizes) on `text` with the Trainer; returns (model, info)."""
    model, data = model_and_data(text, data_name, preset=plan.preset, tokenizer=plan.tokenizer,
                                 vocab_size=plan.vocab_size if plan.tokenizer == "bpe" else None,
                                 overrides=dict(n_layer=plan.n_layer, n_embd=plan.n_embd, n_head=plan.n_head,
                                                block_size=plan.block_size), seed=seed)
    step_s = None
    if iters is None:
        if plan.train_seconds > 0:
            iters, step_s = calibrate_iters(model, data, plan, plan.train_seconds, device)
        else:
            iters = plan.max_iters
    eval_interval = max(1, iters // 4)
    cfg = TrainConfig(
        batch_size=plan.batch_size, max_iters=iters, learning_rate=plan.learning_rate, min_lr=plan.min_lr,
        warmup_iters=min(plan.warmup_iters, max(1, iters // 5)), eval_interval=eval_interval, eval_iters=plan.eval_iters,
        log_interval=max(1, min(10, iters // 10)), sample_interval=max(1, iters // 2), sample_tokens=160,
        sample_prompt=sample_prompt, seed=1337 + seed, device=device, progress=progress, verbose=progress,
        save_checkpoints=out_dir is not None, plot=out_dir is not None,
    )
    t = time.perf_counter()
    trainer = Trainer(model, data, cfg, out_dir)
    summary = trainer.train()
    if out_dir is not None and (Path(out_dir) / "best" / "config.json").is_file():
        model = GPT.load(Path(out_dir) / "best", device=device)  # what `--ckpt RUN` picks up later
    info = {"iters": iters, "seconds": time.perf_counter() - t, "step_seconds": step_s, "val_loss": summary.get("best_val_loss") or summary.get("val_loss"),
            "train_loss": summary.get("train_loss"), "params": model.num_params(), "tokens": iters * plan.batch_size * plan.block_size,
            "val_text": text[len(text) - int(round(len(text) * 0.1)):]}
    model.eval()
    return model, info


@torch.no_grad()
def sentiment_consistency(model: GPT, n_contexts: int = 4) -> dict[str, float]:
    """Does the model carry a story's sentiment forward? After "The sky was {sky} and he felt ",
    the probability that the mood word is a positive one (summed over the corpus' mood words,
    normalised over positive + negative), for positive and for negative sky words. A model that
    keeps the sentiment gives high / low values; one that does not gives about the same for both,
    and then no direction can steer what it does not represent."""
    def word_prob(ctx: str, word: str) -> float:
        n_ctx = model.to_tokens(ctx).shape[1]
        ids = model.to_tokens(ctx + word)
        lp = torch.log_softmax(model(ids)[0, :-1].float(), -1).gather(1, ids[0, 1:, None])[:, 0]
        return float(lp[n_ctx - 1 :].sum().exp())

    out = {}
    for label in ("positive", "negative"):
        values = []
        for sky in LEXICON["sky"][label][:n_contexts]:
            ctx = f"One morning, Tom walked to the park. The sky was {sky} and he felt"
            p = sum(word_prob(ctx, " " + w) for w in LEXICON["mood"]["positive"])
            n = sum(word_prob(ctx, " " + w) for w in LEXICON["mood"]["negative"])
            values.append(p / (p + n) if p + n > 0 else 0.5)
        out[f"p_positive_mood_after_{label}_sky"] = sum(values) / len(values)
    return out


def load_demo_model(ckpt: str | Path, text: str, device: str) -> tuple[GPT, dict[str, Any]]:
    """A trained checkpoint instead of training (`nanolens demo --ckpt`); its val loss on the
    corpus' last tenth."""
    path = model_dir(ckpt)
    model = GPT.load(path, device=device).eval()
    val_text = text[len(text) - int(round(len(text) * 0.1)):]
    ids = torch.tensor(model.tokenizer.encode(val_text[:200_000]), dtype=torch.long)
    block = model.config.block_size
    n = min(64, len(ids) // block)
    with torch.no_grad():
        loss = float(model(ids[: n * block].view(n, block).to(model.device), return_type="loss"))
    info = {"iters": 0, "seconds": 0.0, "step_seconds": None, "val_loss": loss, "train_loss": None,
            "params": model.num_params(), "tokens": 0, "val_text": val_text, "checkpoint": str(path)}
    return model, info
