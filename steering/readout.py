"""Looking at directions: what they say through the unembedding, and how they relate.

- `top_tokens(model, v)`: the tokens (characters, for a char model) whose logits a direction
  raises and lowers most, read through the unembedding `W_U` (a logit lens for a direction),
  optionally through `ln_final` first.
- `cosine_table({...})`: pairwise cosine similarity of steering vectors, probe directions and
  plain tensors, as a pandas DataFrame.
- `direction_across_checkpoints(...)`: one recipe applied to several checkpoints of a run, the
  cosine of each result with a reference: when does a direction emerge, does it stay?
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from nanolens.models import GPT

from .vector import SteeringError, SteeringVector


def _as_direction(x: Any, hook: str | None = None) -> tuple[Tensor, str | None]:
    """A 1-D float tensor from a SteeringVector (one hook), a probe, a tensor or an array."""
    if isinstance(x, SteeringVector):
        h = hook if hook is not None and hook in x else x.hook if len(x) == 1 else hook
        if h is None:
            raise SteeringError(f"{x.label!r} has several hooks ({', '.join(x.hooks)}); pass hook=")
        t = x[h]
        return (t.mean(0) if t.dim() == 2 else t).float(), h
    if hasattr(x, "direction") and callable(x.direction):
        return torch.as_tensor(x.direction(), dtype=torch.float32).reshape(-1), None
    t = torch.as_tensor(x, dtype=torch.float32)
    if t.dim() != 1:
        raise SteeringError(f"a direction must be 1-D [d_model], got shape {tuple(t.shape)}")
    return t, None


@torch.no_grad()
def direction_logits(model: GPT, direction: Any, hook: str | None = None, ln_final: bool = False) -> Tensor:
    """The direction's effect on the logits, [d_vocab]: `W_U^T v` (through `ln_final` first if asked).

    Through ln_final means the direction as the final norm passes a *change* of the residual
    stream: centred (LayerNorm) and multiplied by the norm's gain; the norm's bias and its
    division by the stream's scale are the same for every direction, so they are left out.
    """
    v, _ = _as_direction(direction, hook)
    W_U = model.W_U.detach().float().cpu()
    if v.shape[0] != W_U.shape[0]:
        raise SteeringError(f"the direction has width {v.shape[0]} but the model's d_model is {W_U.shape[0]}")
    if ln_final:
        norm = model.ln_final
        if model.config.norm == "layernorm":
            v = v - v.mean()
        w = getattr(norm, "w", None)
        if isinstance(w, Tensor):
            v = v * w.detach().float().cpu()
    return v @ W_U


def top_tokens(model: GPT, direction: Any, k: int = 10, hook: str | None = None, ln_final: bool = False):
    """A DataFrame of the `k` tokens a direction promotes most (`top`, `top_logit`) and
    demotes most (`bottom`, `bottom_logit`), read through the unembedding."""
    logits = direction_logits(model, direction, hook, ln_final)
    k = max(1, min(int(k), logits.shape[0]))
    top = torch.topk(logits, k)
    bottom = torch.topk(-logits, k)
    name = model.to_str_tokens if model.tokenizer is not None else (lambda ids: [str(i) for i in ids])
    return pd.DataFrame({
        "rank": range(1, k + 1),
        "top": name(top.indices.tolist()), "top_logit": top.values.tolist(),
        "bottom": name(bottom.indices.tolist()), "bottom_logit": (-bottom.values).tolist(),
    })


def format_top_tokens(df: Any) -> str:
    """One line each for the promoted and the demoted tokens (repr'd, so spaces show)."""
    up = "  ".join(f"{t!r}({s:+.2f})" for t, s in zip(df["top"], df["top_logit"]))
    down = "  ".join(f"{t!r}({s:+.2f})" for t, s in zip(df["bottom"], df["bottom_logit"]))
    return f"promotes: {up}\ndemotes:  {down}"


def cosine_table(directions: Mapping[str, Any], hook: str | None = None):
    """Pairwise cosine similarity of named directions (SteeringVectors, fitted probes, tensors)
    as a square pandas DataFrame. Multi-hook vectors are read at `hook`."""
    names = list(directions)
    if not names:
        raise SteeringError("no directions to compare")
    vecs = [_as_direction(directions[n], hook)[0] for n in names]
    widths = {v.shape[0] for v in vecs}
    if len(widths) > 1:
        raise SteeringError(f"directions of different widths cannot be compared: {sorted(widths)}")
    M = torch.stack([v / v.norm().clamp_min(1e-12) for v in vecs])
    return pd.DataFrame((M @ M.T).numpy(), index=names, columns=names)


def direction_across_checkpoints(
    checkpoints: Sequence[Any],
    recipe: Callable[[Any], SteeringVector],
    reference: SteeringVector | None = None,
):
    """Apply `recipe(model) -> SteeringVector` to each checkpoint (a directory or a model) and
    report its norm and cosine with `reference` (default: the last checkpoint's vector).

    Returns a DataFrame (checkpoint, norm, cosine_to_reference) and the vectors."""
    vectors = []
    for ckpt in checkpoints:
        model = GPT.load(ckpt) if not hasattr(ckpt, "config") else ckpt
        vectors.append(recipe(model))
    ref = reference if reference is not None else vectors[-1]
    rows = [{"checkpoint": str(c if not hasattr(c, "config") else f"model {i}"), "norm": v.norm,
             "cosine_to_reference": v.cosine(ref)} for i, (c, v) in enumerate(zip(checkpoints, vectors))]
    return pd.DataFrame(rows), vectors
