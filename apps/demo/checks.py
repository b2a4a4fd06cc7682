"""The demo's steering checks beyond the sweep: the chosen setting confirmed on fresh openings
beside random directions of equal norm, two directions steered at once (vector arithmetic),
and how its layer and coefficient range are read off the teacher-forced margins."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nanolens.corpora import gender_pairs
from nanolens.corpora.sentiment import pronoun_gender
from nanolens.models import GPT
from nanolens.steering import (Steering, SteeringVector, evaluate_settings, grid_settings, mean_difference, random_direction,
                               setting_name)


def confirm_with_control(model: GPT, prompts: list[str], vector: SteeringVector, neg: float, pos: float, draws: int,
                         samples: int, control_samples: int, scorer: str, **sampling: Any) -> tuple[Any, float]:
    """The best method at its two chosen coefficients beside `draws` random directions of equal
    norm at the same coefficients, on fresh prompts: the check that the effect belongs to the
    direction and not to the size of the push. Returns the table (one row per setting, the
    random draws also pooled into a ``random (mean of k)`` row) and how far that pooled control
    moves the positive fraction at either coefficient. Each random direction gets
    `control_samples` per prompt (many draws with few samples each: what varies most between
    draws is their chance projection on the sentiment), and the unsteered row as many samples as
    the pooled control, so their difference is not mostly sampling noise."""
    score = {"sentiment": scorer}
    baseline = evaluate_settings(model, prompts, {"unsteered": None}, score,
                                 samples_per_prompt=control_samples * max(1, draws), **sampling)
    best = {f"{vector.label} {c:+g}": Steering(vector, coeff=c, relative=True) for c in (neg, pos)}
    steered = evaluate_settings(model, prompts, best, score, samples_per_prompt=samples, **sampling)
    randoms = [random_direction(like=vector, seed=7919 * k + 1, label=f"random_{k}") for k in range(1, draws + 1)]
    controls = {f"{r.label} {c:+g}": Steering(r, coeff=c, relative=True) for r in randoms for c in (neg, pos)}
    control = evaluate_settings(model, prompts, controls, score, samples_per_prompt=control_samples, **sampling)
    df = pd.concat([baseline, steered, control], ignore_index=True)
    df.insert(1, "coeff", [0.0, neg, pos] + [neg, pos] * draws)
    is_random = df.setting.str.startswith("random_")
    pooled = df[is_random].groupby("coeff", as_index=False).mean(numeric_only=True)
    pooled["n"] = df[is_random].groupby("coeff")["n"].sum().values
    pooled.insert(0, "setting", f"random (mean of {draws})")
    df = pd.concat([df, pooled[df.columns]], ignore_index=True)
    base = df.sentiment_frac_positive.iloc[0]
    move = float((pooled.sentiment_frac_positive - base).abs().max()) if len(pooled) else float("nan")
    return df, move


def two_directions(model: GPT, prompts: list[str], sentiment: SteeringVector, sentiment_there: SteeringVector, layer: int, neg: float,
                   pos: float, pairs: int, samples: int, scorer: str, **sampling: Any) -> tuple[Any, dict[str, float]]:
    """Vector arithmetic on the embedded corpus: the sentiment direction plus a second,
    independent one, every combination of signs, each continuation scored for both properties.

    The second direction is the hero's gender (mean difference over `gender_pairs`, read over
    whole stories, cropped to the context) at `layer`, minus its component along
    `sentiment_there` (the sentiment direction at that layer), so it carries no sentiment of its
    own. The sentiment goes in at `neg` / `pos`, the gender at +-g, g the mean of their sizes.
    Returns the table and the gender direction's cosine with the sentiment before and after."""
    women, men = gender_pairs(pairs)
    raw = mean_difference(model, women, men, layer, position="mean", label="gender")
    gender = raw.without(sentiment_there)
    gender.label = "gender"
    g = round((abs(neg) + abs(pos)) / 2, 6)
    info = {"layer": layer, "coeff": g, "cos_before": raw.cosine(sentiment_there), "cos_after": gender.cosine(sentiment_there)}
    settings = grid_settings({"sentiment": sentiment, "gender": gender}, {"sentiment": [neg, 0.0, pos], "gender": [-g, 0.0, g]})
    df = evaluate_settings(model, prompts, settings, {"positive": scorer, "female": pronoun_gender},
                           samples_per_prompt=samples, **sampling)
    frac = df.set_index("setting")

    def at(cs: float, cg: float, column: str) -> float:
        return float(frac.loc[setting_name({"sentiment": cs, "gender": cg}), column])

    # each direction's own effect with the other held at each of its values
    info["swings"] = [{"held": f"sentiment {cs:+g}", "moved": f"gender {-g:+g} -> {g:+g}", "property": "female fraction",
                       "change": at(cs, g, "female_frac_positive") - at(cs, -g, "female_frac_positive")}
                      for cs in (neg, 0.0, pos)]
    info["swings"] += [{"held": f"gender {cg:+g}", "moved": f"sentiment {neg:+g} -> {pos:+g}", "property": "positive fraction",
                        "change": at(pos, cg, "positive_frac_positive") - at(neg, cg, "positive_frac_positive")}
                       for cg in (-g, 0.0, g)]
    return df, info


def margin_swing(margins: Any, method: str, layer: Any, max_nll_shift: float) -> float:
    t = margins[(margins.method == method) & (margins.layer.astype(str) == str(layer))].sort_values("coeff")
    ok = t[t.nll_shift <= max_nll_shift]
    t = ok if len(ok) >= 2 else t
    return float(t.margin.iloc[-1] - t.margin.iloc[0]) if len(t) else 0.0


def coefficient_range(margins: Any, chosen: dict, coeffs: tuple, max_nll_shift: float) -> float:
    """The largest coefficient whose NLL rise (the median over the methods at their chosen
    layers, the worse of the two signs) stays within `max_nll_shift`."""
    best = min(coeffs)
    for c in sorted(coeffs):
        rises = []
        for method, layer in chosen.items():
            rows = margins[(margins.method == method) & (margins.layer.astype(str) == str(layer)) & (margins.coeff.abs() == c)]
            if len(rows):
                rises.append(float(rows.nll_shift.max()))
        if rises and float(np.median(rises)) <= max_nll_shift:
            best = c
    return best
