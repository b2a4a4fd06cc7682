"""What steering costs: the perplexity of steered text under the unsteered model, and the rise
of the next-token loss on held-out corpus text while a vector is applied."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from nanolens.models import GPT

from .apply import RowSteering, Steering, steer
from .vector import SteeringError


@torch.no_grad()
def continuation_nll(model: GPT, tokens: torch.Tensor, prompt_len: int, lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: summed NLL of its continuation tokens `tokens[:, prompt_len : prompt_len + length]`
    under `model` as it is (call it outside any steering), and the token count."""
    block = model.config.block_size
    total = tokens.shape[1]
    nll = np.zeros(tokens.shape[0])
    count = np.asarray(lengths, dtype=np.int64)
    if total <= block:
        logits = model(tokens)
        per = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), tokens[:, 1:], reduction="none")
        for i, n in enumerate(lengths):
            nll[i] = float(per[i, prompt_len - 1 : prompt_len - 1 + n].sum())
        return nll, count
    # longer than the context: score each continuation token with its last `block` tokens of context
    for j in range(prompt_len, total):
        start = max(0, j - block)
        logits = model(tokens[:, start:j])[:, -1]
        lp = torch.log_softmax(logits.float(), -1).gather(1, tokens[:, j : j + 1]).squeeze(1)
        for i, n in enumerate(lengths):
            if j - prompt_len < n:
                nll[i] -= float(lp[i])
    return nll, count


def continuation_perplexity(model: GPT, prompt: str, continuations: Sequence[str]) -> list[float]:
    """Perplexity of each continuation of `prompt` under `model` (as it is: unsteered outside
    a steering context). Continuations of unequal length are scored one by one."""
    out = []
    was_training = model.training
    model.eval()
    try:
        for c in continuations:
            if not c:
                out.append(float("nan"))
                continue
            ids = model.to_tokens(prompt + c)
            nll, n = continuation_nll(model, ids, model.to_tokens(prompt).shape[1], [len(model.tokenizer.encode(c))])
            out.append(math.exp(nll[0] / max(n[0], 1)))
    finally:
        model.train(was_training)
    return out


def _val_windows(model: GPT, val_text: str | torch.Tensor, n_windows: int) -> torch.Tensor:
    block = model.config.block_size
    ids = val_text if isinstance(val_text, torch.Tensor) else torch.tensor(model.tokenizer.encode(val_text), dtype=torch.long)
    ids = ids.reshape(-1)
    if len(ids) < 2:
        raise SteeringError("val_text is too short to measure a loss on (needs at least 2 tokens)")
    width = min(block, len(ids))
    starts = np.linspace(0, len(ids) - width, num=max(1, n_windows)).astype(int)
    return torch.stack([ids[s : s + width] for s in np.unique(starts)]).to(model.device)


@torch.no_grad()
def val_loss_rise(model: GPT, steerings: Sequence[Steering | None], val_text: str | torch.Tensor,
                  n_windows: int = 8, max_rows: int = 512) -> tuple[float, list[float]]:
    """Next-token loss on windows of held-out text, unsteered and under each steering (applied
    at every position as its mode says; None = unsteered). Returns (unsteered loss, losses)."""
    windows = _val_windows(model, val_text, n_windows)
    W = windows.shape[0]
    was_training = model.training
    model.eval()
    try:
        base = float(model(windows, return_type="loss"))
        losses: list[float] = [base if s is None else float("nan") for s in steerings]
        todo = [i for i, s in enumerate(steerings) if s is not None]
        per_batch = max(1, max_rows // W)
        for k in range(0, len(todo), per_batch):
            chunk = todo[k : k + per_batch]
            rows = [steerings[i] for i in chunk for _ in range(W)]
            tokens = windows.repeat(len(chunk), 1)
            with steer(model, RowSteering(rows)):
                per = model(tokens, return_type="loss", loss_per_token=True)  # [rows, width - 1]
            per = per.float().mean(1).view(len(chunk), W).mean(1)
            for j, i in enumerate(chunk):
                losses[i] = float(per[j])
    finally:
        model.train(was_training)
    return base, losses
