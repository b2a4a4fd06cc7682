"""What the trainer watches inside the model while it learns, and the signs of an unstable run.

At every evaluation (`TrainConfig.watch`, on by default) a few cheap measurements go into the
eval row of `metrics.jsonl` under `watch`, on fixed inputs so that rows compare across training:

- per head: `previous_token`, `first_token` and `induction` scores and the attention entropy
  (the first three on the run's first val windows and on random tokens repeated twice);
- `lens_loss`: the logit lens's next-token loss after each block (the residual stream read out
  through `ln_final` and the unembedding): where in depth the prediction forms;
- `resid_norm`: the RMS norm of the residual stream after each block.

`Instability` reads the log and eval rows as they come and names what looks wrong: a loss
spike, a gradient-norm blow-up, or the attention entropy collapsing across the model.
"""

from __future__ import annotations

import time
from statistics import median
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nanolens.models import GPT

HEAD_SCORES = ("previous_token", "first_token", "induction")


def pattern_hooks(model: GPT) -> list[tuple[int, str]]:
    """(layer, hook name) of every block whose attention has a `hook_pattern`."""
    return [(i, f"blocks.{i}.attn.hook_pattern") for i in range(model.config.n_layer)
            if f"blocks.{i}.attn.hook_pattern" in model.hook_dict]


def repeated_tokens(model: GPT, length: int, batch: int = 8, seed: int = 0) -> Tensor:
    """Random tokens repeated twice [batch, 2 * length]: what an induction head copies from."""
    first = torch.randint(0, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))
    return torch.cat([first, first], dim=1).to(model.device)


@torch.no_grad()
def attention_scores(model: GPT, windows: Tensor, repeated: Tensor) -> dict[str, np.ndarray]:
    """Per head, as arrays [layers with attention, heads] (layer order of `pattern_hooks`):

    - `previous_token`: mean attention from each position to the one before it, on `windows`;
    - `first_token`: mean attention to the window's first position (a sink), after the first;
    - `induction`: on `repeated` (random tokens, twice), mean attention from each token of the
      second copy to the token after its earlier occurrence ("A B ... A -> look at B");
    - `entropy`: the mean entropy (nats) of each query's attention on `windows`.
    """
    hooks = pattern_hooks(model)
    if not hooks:
        return {name: np.zeros((0, 0)) for name in (*HEAD_SCORES, "entropy")}
    names, stop = [name for _, name in hooks], hooks[-1][0] + 1
    _, corpus = model.run_with_cache(windows, names_filter=names, return_cache_object=False, stop_at_layer=stop)
    _, rep = model.run_with_cache(repeated, names_filter=names, return_cache_object=False, stop_at_layer=stop)
    half = repeated.shape[1] // 2
    out: dict[str, list[np.ndarray]] = {name: [] for name in (*HEAD_SCORES, "entropy")}
    for _, name in hooks:
        pat = corpus[name].float()  # [batch, head, query, key]
        q = torch.arange(1, pat.shape[-1], device=pat.device)
        zeros = torch.zeros(pat.shape[1])
        out["previous_token"].append((pat[:, :, q, q - 1].mean(dim=(0, 2)) if len(q) else zeros).cpu().numpy())
        out["first_token"].append((pat[:, :, q, 0].mean(dim=(0, 2)) if len(q) else zeros).cpu().numpy())
        qi = torch.arange(half, 2 * half, device=pat.device)
        out["induction"].append(rep[name].float()[:, :, qi, qi - half + 1].mean(dim=(0, 2)).cpu().numpy())
        entropy = -(pat * torch.log(pat.clamp_min(1e-12))).sum(-1)  # [batch, head, query]
        out["entropy"].append(entropy.mean(dim=(0, 2)).cpu().numpy())
    return {name: np.stack(rows) for name, rows in out.items()}


@torch.no_grad()
def stream_measures(model: GPT, windows: Tensor) -> dict[str, list[float]]:
    """After each block: the logit lens's next-token loss (`lens_loss`) and the residual
    stream's RMS norm (`resid_norm`)."""
    names = [f"blocks.{i}.hook_resid_post" for i in range(model.config.n_layer)]
    if not names or windows.shape[1] < 2:
        return {"lens_loss": [], "resid_norm": []}
    _, cache = model.run_with_cache(windows, names_filter=names, return_cache_object=False, return_type=None)
    targets = windows[:, 1:].reshape(-1)
    lens, norms = [], []
    for name in names:
        resid = cache[name]
        logits = model.unembed(model.ln_final(resid[:, :-1]))
        lens.append(float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets)))
        norms.append(float(resid.float().pow(2).mean(-1).sqrt().mean()))
    return {"lens_loss": lens, "resid_norm": norms}


class Watch:
    """The fixed inputs of a run's measurements, and the measuring: `measure(model)` gives the
    `watch` object of an eval row (plain lists, JSON-ready)."""

    def __init__(self, model: GPT, val_ids: np.ndarray, n_windows: int = 4, seed: int = 0) -> None:
        length = min(model.config.block_size, 64, max(len(val_ids) // n_windows, 2))
        ids = np.asarray(val_ids[: n_windows * length], dtype=np.int64)
        self.windows = torch.as_tensor(ids[: (len(ids) // length) * length].reshape(-1, length), device=model.device)
        self.repeated = repeated_tokens(model, max(2, min(32, model.config.block_size // 2)), seed=seed)

    def measure(self, model: GPT) -> dict[str, Any]:
        """The measurements, and the seconds they took (`seconds`: what watching costs the run)."""
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            heads = attention_scores(model, self.windows, self.repeated)
            stream = stream_measures(model, self.windows)
        finally:
            model.train(was_training)
        layers = [layer for layer, _ in pattern_hooks(model)]
        rounded = {name: np.round(values.astype(float), 5).tolist() for name, values in heads.items()}
        return {"layers": layers, **rounded, **{k: [round(v, 5) for v in vs] for k, vs in stream.items()},
                "seconds": round(time.perf_counter() - start, 4)}


class Instability:
    """Signs that a run is going wrong, from its rows as they come: `step(loss, grad_norm)` at
    each log row, `evaluation(watch)` at each eval row; each returns the flags it raises."""

    def __init__(self, window: int = 20, spike: float = 1.5, blow_up: float = 10.0, collapse: float = 0.2) -> None:
        self.window, self.spike, self.blow_up, self.collapse = window, spike, blow_up, collapse
        self.losses: list[float] = []
        self.grad_norms: list[float] = []
        self.first_entropy: float | None = None

    def step(self, loss: float, grad_norm: float | None) -> list[str]:
        flags = []
        if len(self.losses) >= 5 and loss > self.spike * median(self.losses[-self.window:]):
            flags.append(f"loss spike: {loss:.3f} against a recent median of {median(self.losses[-self.window:]):.3f}")
        if grad_norm is not None and len(self.grad_norms) >= 5 and grad_norm > self.blow_up * median(self.grad_norms[-self.window:]):
            flags.append(f"gradient-norm blow-up: {grad_norm:.3g} against a recent median of "
                         f"{median(self.grad_norms[-self.window:]):.3g}")
        self.losses.append(loss)
        if grad_norm is not None:
            self.grad_norms.append(grad_norm)
        return flags

    def evaluation(self, watch: dict[str, Any]) -> list[str]:
        entropies = [h for layer in watch.get("entropy", []) for h in layer]
        if not entropies:
            return []
        mean = sum(entropies) / len(entropies)
        if self.first_entropy is None:
            self.first_entropy = mean
            return []
        if self.first_entropy > 0 and mean < self.collapse * self.first_entropy:
            return [f"attention entropy collapse: the heads' mean entropy fell to {mean:.3f} nats from {self.first_entropy:.3f}"]
        return []
