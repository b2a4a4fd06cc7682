"""Reading a sweep: each method's best layer, and the coefficients that reach a target."""

from __future__ import annotations

from typing import Any

import pandas as pd


def with_baseline(df: Any, method: str, layer: Any) -> Any:
    """One method's rows at one layer, plus the shared coefficient-0 row."""
    rows = df[(df.method == method) & (df.layer.astype(str) == str(layer))]
    base = df[df.method == "unsteered"].assign(method=method, layer=layer)
    return pd.concat([rows, base]).sort_values("coeff").reset_index(drop=True)


def best_layers(df: Any, metric: str = "frac_positive") -> dict[str, Any]:
    """Each method's layer with the widest swing of `metric` (largest-coefficient value minus
    most-negative-coefficient value; lower perplexity breaks ties)."""
    out = {}
    for method in [m for m in df.method.unique() if m != "unsteered"]:
        best, best_key = None, None
        for layer in df[df.method == method].layer.unique():
            t = with_baseline(df, method, layer)
            swing = float(t[metric].iloc[-1] - t[metric].iloc[0])
            key = (round(swing, 6), -float(t.perplexity.mean()))
            if best_key is None or key > best_key:
                best, best_key = layer, key
        out[method] = best
    return out


def summarize_sweep(df: Any, target_high: float = 0.9, target_low: float = 0.1, max_ppl_ratio: float | None = None) -> Any:
    """One row per method at its best layer: the positive fraction unsteered, at the chosen
    negative and positive coefficients (the smallest magnitude reaching <= `target_low` /
    >= `target_high`, else the most extreme), the perplexity and val-loss rise there, and the
    largest move of the positive fraction over all coefficients (what the random control must
    keep small). `max_ppl_ratio`: choose only among coefficients whose perplexity stays within
    that many times the unsteered one (when a side has any), so broken text is never chosen."""
    rows = []
    base = df[df.method == "unsteered"].iloc[0]
    for method, layer in best_layers(df).items():
        t = with_baseline(df, method, layer)
        pos, neg = t[t.coeff > 0], t[t.coeff < 0]
        if max_ppl_ratio is not None:
            fluent_pos, fluent_neg = (side[side.perplexity <= max_ppl_ratio * base.perplexity] for side in (pos, neg))
            pos = fluent_pos if len(fluent_pos) else pos
            neg = fluent_neg if len(fluent_neg) else neg

        def pick(side, ok):
            hit = side[ok(side.frac_positive)]
            if len(hit):  # the smallest coefficient that reaches the target
                return hit.loc[hit.coeff.abs().idxmin()]
            # none does: the best value, and among equals the largest coefficient
            sign = 1.0 if (side.coeff > 0).all() else -1.0
            order = side.assign(_v=sign * side.frac_positive, _c=side.coeff.abs()).sort_values(["_v", "_c"])
            return order.iloc[-1]

        p = pick(pos, lambda f: f >= target_high) if len(pos) else None
        n = pick(neg, lambda f: f <= target_low) if len(neg) else None
        rows.append({
            "method": method, "layer": layer,
            "neg_coeff": n.coeff if n is not None else float("nan"),
            "frac_pos_at_neg": n.frac_positive if n is not None else float("nan"),
            "frac_pos_unsteered": base.frac_positive,
            "pos_coeff": p.coeff if p is not None else float("nan"),
            "frac_pos_at_pos": p.frac_positive if p is not None else float("nan"),
            "ppl_at_neg": n.perplexity if n is not None else float("nan"),
            "ppl_unsteered": base.perplexity,
            "ppl_at_pos": p.perplexity if p is not None else float("nan"),
            "val_rise_at_neg": n.val_loss_rise if n is not None else float("nan"),
            "val_rise_at_pos": p.val_loss_rise if p is not None else float("nan"),
            "wrong_way_at_pos": p.wrong_way if p is not None else float("nan"),
            "max_move": float((t.frac_positive - base.frac_positive).abs().max()),
        })
    return pd.DataFrame(rows)
