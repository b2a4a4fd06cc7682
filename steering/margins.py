"""Teacher-forced steering: a cheap, low-noise measure for choosing layers and coefficients.

Instead of sampling, score matched continuations: how much a setting raises log P(positive
continuation) over log P(negative continuation) after the same prefix, and what it costs in
per-token NLL. Deterministic, and two forward passes per prefix for all settings together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from nanolens.models import GPT

from .apply import RowSteering, Steering, check_positions, finite_coeffs, steer
from .sweep import by_layer
from .vector import SteeringError, SteeringVector


@torch.no_grad()
def margin_sweep(
    model: GPT,
    prefixes: Sequence[str],
    positive: Sequence[str],
    negative: Sequence[str],
    vectors: Mapping[str, SteeringVector | Mapping[Any, SteeringVector]],
    coeffs: Sequence[float],
    layers: Sequence[Any] | None = None,
    *,
    positions: Any = "all",
    relative: bool = True,
    check_model: bool = True,
    max_rows: int = 512,
    progress: bool = True,
):
    """How much each setting favours a positive over a negative continuation, without sampling.

    For each prefix i (e.g. a neutral story opening) and its matched continuations
    `positive[i]` / `negative[i]`, the **margin** is log P(positive | prefix) - log P(negative |
    prefix) in nats (summed over the continuation's tokens). Its change from the unsteered model
    (`margin_shift`) says how far a setting pushes towards positive text, deterministically and
    at the cost of two forward passes per prefix for all settings together; `nll_shift` is the
    change of the continuations' mean per-token NLL (the fluency cost). One row per setting,
    like `sweep` (coefficient 0 = the unsteered row)."""
    if not (len(prefixes) == len(positive) == len(negative)) or not prefixes:
        raise SteeringError("margin_sweep needs one positive and one negative continuation per prefix (and at least one prefix)")
    coeffs = finite_coeffs(coeffs)
    positions = check_positions(positions)
    settings: list[tuple[str, Any, float, Steering | None]] = [("unsteered", "-", 0.0, None)]
    for method, spec in vectors.items():
        table = by_layer(method, spec)
        for layer in [layer for layer in table if layers is None or layer in layers]:
            for c in coeffs:
                if c != 0:
                    s = Steering(table[layer], coeff=c, positions=positions, relative=relative, check_model=check_model)
                    s.validate(model)
                    settings.append((method, layer, c, s))
    S = len(settings)
    block = model.config.block_size
    totals = np.zeros((S, 2))  # summed log-probs: positive, negative
    counts = np.zeros(2)
    model.eval()
    for prefix, pos, neg in tqdm(list(zip(prefixes, positive, negative)), desc=f"margins ({S} settings)", leave=False,
                                 disable=not progress):
        P = model.to_tokens(prefix).shape[1]  # with the BOS token where the model has one
        for j, cont in enumerate((pos, neg)):
            full = model.to_tokens(prefix + cont)
            ids = full[:, -block:]
            start = max(P - (full.shape[1] - ids.shape[1]), 1)
            for k in range(0, S, max_rows):
                chunk = list(range(k, min(S, k + max_rows)))
                with steer(model, RowSteering([settings[i][3] for i in chunk])):
                    logits = model(ids.repeat(len(chunk), 1))
                lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(2, ids[:, 1:].repeat(len(chunk), 1)[..., None])[..., 0]
                totals[chunk, j] += lp[:, start - 1 :].sum(1).cpu().numpy()
            counts[j] += ids.shape[1] - start
    n = len(prefixes)
    margin = (totals[:, 0] - totals[:, 1]) / n
    nll = -(totals[:, 0] + totals[:, 1]) / counts.sum()
    rows = [{"method": m, "layer": layer, "coeff": c, "margin": float(margin[i]), "margin_shift": float(margin[i] - margin[0]),
             "nll": float(nll[i]), "nll_shift": float(nll[i] - nll[0])} for i, (m, layer, c, _) in enumerate(settings)]
    df = pd.DataFrame(rows)
    df["layer"] = pd.Series([r["layer"] for r in rows], dtype=object)
    df.attrs.update({"relative": relative, "positions": positions, "n_prefixes": n})
    return df


def best_margin_layers(df: Any, max_nll_shift: float = 0.5, layers: Sequence[Any] | None = None) -> dict[str, Any]:
    """Each method's layer with the widest margin swing (value at the largest coefficient minus
    at the most negative one), among settings whose NLL rose by at most `max_nll_shift` nats
    per token (all coefficients if fewer than two qualify). `layers`: the candidates (default
    every layer of the sweep)."""
    out = {}
    for method in [m for m in df.method.unique() if m != "unsteered"]:
        rows = df[df.method == method]
        best, best_swing = None, None
        candidates = [layer for layer in rows.layer.unique() if layers is None or str(layer) in {str(x) for x in layers}]
        for layer in candidates or rows.layer.unique():
            t = rows[rows.layer.astype(str) == str(layer)].sort_values("coeff")
            ok = t[t.nll_shift <= max_nll_shift]
            t = ok if len(ok) >= 2 else t
            swing = float(t.margin.iloc[-1] - t.margin.iloc[0])
            if best_swing is None or swing > best_swing:
                best, best_swing = layer, swing
        out[method] = best
    return out
