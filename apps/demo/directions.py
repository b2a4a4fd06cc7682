"""The demo's directions: five methods at every layer, each vector given the same typical norm
so relative coefficients mean the same for all of them, and where the demo reads its pairs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nanolens.models import GPT
from nanolens.models.tokenizers import char_span_to_tokens
from nanolens.steering import (SteeringError, SteeringVector, contrast_pair, hook_name, mean_difference, measure_scales,
                               pca_direction, probe_direction, random_direction)

from .plan import METHODS


def find_directions(model: GPT, layers: list[int], pos: list[str], neg: list[str], contrast: tuple[str, str],
                    probes: dict[str, Any] | None, norm_texts: list[str], positions: Any = "last",
                    source: str = "") -> tuple[dict[str, dict[int, SteeringVector]], list[str]]:
    """({method: {layer: SteeringVector}}, notes) for the five methods at `layers` (resid_pre).

    Every vector at a layer gets the same typical norm (measured once on `norm_texts`), so
    relative coefficients mean the same for every method. A method that finds no direction at
    a layer (e.g. a probe on identical activations) is left out there, with a note."""
    hooks = [hook_name(model, layer) for layer in layers]
    scales = measure_scales(model, hooks, norm_texts)
    out: dict[str, dict[int, Any]] = {m: {} for m in METHODS}
    notes: list[str] = []
    for layer, hook in zip(layers, hooks):
        makers: dict[str, Callable[[], Any]] = {
            "contrast_pair": lambda: contrast_pair(model, contrast[0], contrast[1], layer, position="mean", norm_texts=norm_texts[:1]),
            "mean_difference": lambda: mean_difference(model, pos, neg, layer, position=positions, norm_texts=norm_texts[:1], source=source),
            "pca": lambda: pca_direction(model, pos, neg, layer, position=positions, norm_texts=norm_texts[:1], source=source),
        }
        if probes is not None and probes.get(hook) is not None:
            makers["probe"] = lambda: probe_direction(probes[hook], model, layer, source=source)
        for name, make in makers.items():
            try:
                v = make()
                if v.norm == 0:
                    raise SteeringError("the direction is zero")
            except (SteeringError, ValueError) as err:
                notes.append(f"{name} at layer {layer}: no direction ({err})")
                continue
            v.scales = {hook: scales[hook]}  # one typical norm per layer, for every method
            out[name][layer] = v
        like = out["mean_difference"].get(layer) or out["pca"].get(layer) or out["contrast_pair"].get(layer)
        if like is not None:
            out["random"][layer] = random_direction(like=like, seed=1000 + layer)
    return {m: v for m, v in out.items() if v}, notes


def reveal_spans(texts: list[str], tokenizer: Any = None) -> list[tuple[int, int]]:
    """The span of each text's last sentence (the reveal sentence of a `sentiment_pairs` text),
    for reading the mean activation over it: token positions under `tokenizer` (character
    positions when it is None, which is the same for the char tokenizer)."""
    spans = []
    for t in texts:
        start = t.rfind(". ", 0, len(t) - 1)
        span = (start + 2 if start >= 0 else 0, len(t))
        spans.append(span if tokenizer is None else char_span_to_tokens(tokenizer, t, *span))
    return spans


def middle_layers(n_layer: int) -> list[int]:
    """The layers the demo steers at: not the embedding (layer 0) nor the last block's input
    when there are three or more layers. Steering the last block's input raises the
    teacher-forced margin most (it pushes sentiment words straight into the logits), but
    sampled text does not keep that sentiment once it has drifted the other way; from the
    middle layers the model's own later blocks carry it (on the demo model, +0.4 x norm:
    81% positive continuations at layer 3 of 4, 92-94% at layers 1-2)."""
    return list(range(1, n_layer - 1)) if n_layer >= 3 else list(range(n_layer))
