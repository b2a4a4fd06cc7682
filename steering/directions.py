"""Ways to find a steering direction; each returns a `SteeringVector` at one hook.

- `contrast_pair`: ActAdd (Turner et al., 2023). Run two prompts ("Love" / "Hate"), padded to
  equal length, and take the difference of their activations position by position. Keep the
  aligned difference (`position="aligned"`, added at the first positions of the text, as ActAdd
  does) or reduce it to one direction (`"mean"` over each prompt's own tokens, `"last"` token,
  or one aligned index).
- `mean_difference`: CAA / difference in means (Rimsky et al., 2023; Marks & Tegmark, 2023).
  Mean activation of the positive texts minus that of the negative ones, read with
  `nanolens.probes.extract_activations` at the chosen position.
- `pca_direction`: representation engineering / repeng (Zou et al., 2023). The first principal
  component of the *paired* differences act(pos_i) - act(neg_i).
- `probe_direction`: the weight vector of a trained linear probe (`nanolens.probes.LinearProbe`).
- `random_direction`: a random direction of a chosen norm, the control every evaluation needs.

Every vector records its provenance (method, hook, read position, centring, sources) and the
layer's typical residual norm (measured on the texts it read, or on `norm_texts`), so
`relative=True` coefficients compare across layers and methods.

`layer` is a block index (negative counts from the end) and `hook` the kind of hook in that
block (default ``"resid_pre"``: the residual stream entering block `layer`); a full hook name
may be given as `layer` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nanolens.models import GPT
from nanolens.models.hook_names import residual_hook
from nanolens.probes import extract_activations

from .fingerprint import model_fingerprint
from .vector import SteeringError, SteeringVector, _describe_texts, measure_scales

DEFAULT_PAD = " "


# ---------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------
def hook_name(model: GPT, layer: int | str, hook: str = "resid_pre") -> str:
    """`blocks.{layer}.hook_{hook}`, checked: a clear error for a layer out of range."""
    if isinstance(layer, str):
        model.check_hook_name(layer)
        return layer
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise SteeringError(f"layer must be a block index (int) or a full hook name, got {layer!r}")
    try:
        return residual_hook(model, int(layer), hook)
    except ValueError as err:
        if type(err) is not ValueError:  # a HookNameError says it best
            raise
        raise SteeringError(str(err).replace("(or give a full hook name)", "(or give a full hook name as layer)")) from None


def check_texts(texts: Any, what: str) -> list[str]:
    if isinstance(texts, str):
        raise SteeringError(f"{what} must be a list of strings, not one string; wrap it: [text]")
    texts = list(texts) if texts is not None else []
    if not texts:
        raise SteeringError(f"{what} is empty: give at least one text")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise SteeringError(f"{what}[{i}] is a {type(t).__name__}, not a string")
        if not t:
            raise SteeringError(f"{what}[{i}] is an empty string: every text needs at least one token")
    return texts


def _encode(model: GPT, text: str, what: str) -> list[int]:
    if not isinstance(text, str) or not text:
        raise SteeringError(f"the {what} prompt is empty: give at least one token of text")
    ids = model._require_tokenizer().encode(text)
    if not ids:
        raise SteeringError(f"the {what} prompt {text!r} encodes to no tokens")
    if len(ids) > model.config.block_size:
        raise SteeringError(f"the {what} prompt is {len(ids)} tokens, longer than the context ({model.config.block_size})")
    return ids


def _scales(model: GPT, hook: str, texts: Sequence[str], norm_texts: Sequence[str] | None) -> dict[str, float]:
    return measure_scales(model, [hook], check_texts(norm_texts, "norm_texts") if norm_texts is not None else texts)


def _read(model: GPT, texts: list[str], hook: str, position: Any, batch_size: int, progress: bool) -> torch.Tensor:
    """Activations [n_texts, d] at `hook` and `position` via the probes' extraction."""
    acts = extract_activations(model, texts, hooks=[hook], positions=position, batch_size=batch_size,
                               progress=progress, truncate=True)
    if len(acts) != len(texts):
        raise SteeringError(f"position={position!r} gives {len(acts)} rows for {len(texts)} texts; read one position per text "
                            "('last', 'mean', an int, or one entry per text)")
    return torch.as_tensor(np.asarray(acts[hook]), dtype=torch.float32)


def _split_positions(position: Any, n_pos: int, n_neg: int) -> tuple[Any, Any, Any]:
    """A position for both sets, or one entry per text split into the positive then negative ones."""
    if isinstance(position, (str, int)) or position is None:
        return position, position, position
    position = list(position)
    if len(position) != n_pos + n_neg:
        raise SteeringError(f"give one position per text: {n_pos} positive + {n_neg} negative, got {len(position)}")
    return position[:n_pos], position[n_pos:], "per-text"


def _position_name(position: Any) -> Any:
    if isinstance(position, (str, int)) or position is None:
        return position
    return "per-text"


# ---------------------------------------------------------------------------------------------
# the methods
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def contrast_pair(
    model: GPT,
    positive: str,
    negative: str,
    layer: int | str,
    *,
    hook: str = "resid_pre",
    position: str | int = "aligned",
    pad: str = DEFAULT_PAD,
    norm_texts: Sequence[str] | None = None,
    label: str | None = None,
) -> SteeringVector:
    """ActAdd: act(positive) - act(negative) at `hook`, the shorter prompt right-padded with
    `pad` tokens to equal length (as ActAdd pads), so position i of one faces position i of
    the other.

    `position`: ``"aligned"`` keeps the per-position difference [n_pos, d] (added at prompt
    positions 0..n_pos-1, ActAdd's alignment; with a BOS token, row 0 is its position, where
    the two prompts do not differ); ``"mean"`` averages each prompt over its own
    tokens before subtracting; ``"last"`` takes each prompt's own last token; an int takes one
    aligned position. The typical norm is measured on both prompts (or `norm_texts`).
    """
    name = hook_name(model, layer, hook)
    ids_p, ids_n = _encode(model, positive, "positive"), _encode(model, negative, "negative")
    pad_ids = model._require_tokenizer().encode(pad) if pad else []
    if len(pad_ids) != 1:
        raise SteeringError(f"pad={pad!r} must be exactly one token")
    bos = model.bos_tokens()  # as generation's prompt has it, so aligned row i meets prompt position i
    b, n = len(bos), len(bos) + max(len(ids_p), len(ids_n))
    rows = [bos + ids_p + pad_ids * (n - b - len(ids_p)), bos + ids_n + pad_ids * (n - b - len(ids_n))]
    tokens = torch.tensor(rows, dtype=torch.long, device=model.device)
    layer_index = int(name.split(".")[1])
    stop = layer_index + 1 if layer_index + 1 < model.config.n_layer else None
    was_training = model.training
    model.eval()
    try:
        _, cache = model.run_with_cache(tokens, names_filter=[name], stop_at_layer=stop, return_type=None,
                                        return_cache_object=False)
    finally:
        model.train(was_training)
    act = cache[name].float().cpu()  # [2, n, d]
    if position == "aligned":
        direction = act[0] - act[1]
    elif position == "mean":
        direction = act[0, b : b + len(ids_p)].mean(0) - act[1, b : b + len(ids_n)].mean(0)
    elif position == "last":
        direction = act[0, b + len(ids_p) - 1] - act[1, b + len(ids_n) - 1]
    elif isinstance(position, int) and not isinstance(position, bool):
        if not -n <= position < n:
            raise SteeringError(f"position {position} is outside the {n} aligned positions of the pair")
        direction = act[0, position] - act[1, position]
    else:
        raise SteeringError(f"position={position!r}: use 'aligned', 'mean', 'last' or an int")
    if float(direction.norm()) == 0:
        raise SteeringError(f"the two prompts give identical activations at {name}; choose prompts that differ before that layer")
    scales = measure_scales(model, [name], check_texts(norm_texts, "norm_texts") if norm_texts is not None else [positive, negative])
    prov = {
        "method": "contrast_pair", "hook": name, "position": position, "centring": "none (one pair)",
        "positive": positive, "negative": negative, "pad": pad, "padded_length": n,
    }
    return SteeringVector({name: direction}, model=model_fingerprint(model), scales=scales, provenance=prov,
                          label=label or "contrast_pair")


def mean_difference(
    model: GPT,
    positive_texts: Sequence[str],
    negative_texts: Sequence[str],
    layer: int | str,
    *,
    hook: str = "resid_pre",
    position: Any = "last",
    batch_size: int = 64,
    progress: bool = False,
    norm_texts: Sequence[str] | None = None,
    source: str | None = None,
    label: str | None = None,
) -> SteeringVector:
    """CAA / diff-in-means: mean act(positive texts) - mean act(negative texts) at `hook`.

    `position`: where each text is read, as in `extract_activations`: ``"last"`` (default),
    ``"mean"`` over the text, an int, or one entry per text (an int or a (start, end) span) -
    a list covering the positive texts then the negative ones. The typical norm is measured
    over every position of all the texts (or `norm_texts`).
    """
    name = hook_name(model, layer, hook)
    pos = check_texts(positive_texts, "positive_texts")
    neg = check_texts(negative_texts, "negative_texts")
    pos_position, neg_position, position = _split_positions(position, len(pos), len(neg))
    a = _read(model, pos, name, pos_position, batch_size, progress)
    b = _read(model, neg, name, neg_position, batch_size, progress)
    direction = a.mean(0) - b.mean(0)
    prov = {
        "method": "mean_difference", "hook": name, "position": _position_name(position),
        "centring": "none needed (a difference of class means)", "n_positive": len(pos), "n_negative": len(neg),
        "source": source or {"positive": _describe_texts(pos), "negative": _describe_texts(neg)},
    }
    return SteeringVector({name: direction}, model=model_fingerprint(model), scales=_scales(model, name, pos + neg, norm_texts),
                          provenance=prov, label=label or "mean_difference")


def pca_direction(
    model: GPT,
    positive_texts: Sequence[str],
    negative_texts: Sequence[str],
    layer: int | str,
    *,
    hook: str = "resid_pre",
    position: Any = "last",
    center: bool = False,
    batch_size: int = 64,
    progress: bool = False,
    norm_texts: Sequence[str] | None = None,
    source: str | None = None,
    label: str | None = None,
) -> SteeringVector:
    """RepE / repeng: the first principal component of paired differences
    d_i = act(positive_i) - act(negative_i) (pairs by index, so give matched pairs: the same
    text with the property flipped).

    Centring, stated: by default (`center=False`) the differences are **not** centred, i.e. the
    component is the top right-singular vector of the raw difference matrix. The mean
    difference is the signal the pairs share; removing it first (what scikit-learn's PCA does,
    and so repeng's ``pca_diff``) leaves only how the differences vary around it, which for
    consistent pairs is noise, magnitude or a nuisance factor rather than the concept. Not
    centring is equivalent to RepE's random sign flips of the pairs (which zero the mean
    without discarding the shared direction). `center=True` reproduces repeng's ``pca_diff``.

    The sign is chosen so the direction points from negative to positive (positive mean
    projection of the differences), and its length is the mean projection of the differences
    on it, so absolute coefficients are comparable with `mean_difference`.
    """
    name = hook_name(model, layer, hook)
    pos = check_texts(positive_texts, "positive_texts")
    neg = check_texts(negative_texts, "negative_texts")
    if len(pos) != len(neg):
        raise SteeringError(f"PCA of paired differences needs matched pairs: {len(pos)} positive vs {len(neg)} negative texts")
    if len(pos) < 2:
        raise SteeringError("PCA needs at least two pairs")
    pos_position, neg_position, position = _split_positions(position, len(pos), len(neg))
    a = _read(model, pos, name, pos_position, batch_size, progress)
    b = _read(model, neg, name, neg_position, batch_size, progress)
    diffs = (a - b).double()
    X = diffs - diffs.mean(0, keepdim=True) if center else diffs
    _, S, Vt = torch.linalg.svd(X, full_matrices=False)
    u = Vt[0]
    proj = diffs @ u
    if float(proj.mean()) < 0:
        u, proj = -u, -proj
    magnitude = float(proj.mean())
    if magnitude <= 0:  # centred PCA can come out orthogonal to the mean difference
        magnitude = float(proj.abs().mean())
    explained = float(S[0] ** 2 / (S**2).sum()) if float((S**2).sum()) > 0 else 0.0
    prov = {
        "method": "pca", "hook": name, "position": _position_name(position),
        "centring": "mean difference removed before PCA (repeng pca_diff)" if center
        else "none: PCA of the raw paired differences (uncentred, = RepE random sign flips)",
        "explained_variance": explained, "n_pairs": len(pos),
        "source": source or {"positive": _describe_texts(pos), "negative": _describe_texts(neg)},
    }
    return SteeringVector({name: (magnitude * u).float()}, model=model_fingerprint(model),
                          scales=_scales(model, name, pos + neg, norm_texts), provenance=prov, label=label or "pca")


def probe_direction(
    probe: Any,
    model: GPT,
    layer: int | str,
    *,
    hook: str = "resid_pre",
    cls: Any = None,
    norm_texts: Sequence[str] | None = None,
    source: str | None = None,
    label: str | None = None,
) -> SteeringVector:
    """A trained probe's weight vector (`probe.direction(cls)`, unit length, in raw activation
    space) as a steering vector at the hook the probe was trained on. For a binary probe it
    points toward `classes_[1]` (e.g. "positive" of negative/positive) unless `cls` names the
    class to point toward.

    The typical norm comes from `norm_texts` if given, else from the probe's own scaler (the
    RMS norm of the activations it was fitted on), else it stays unknown (then use absolute
    coefficients, or `vector.with_scales(model, texts)`).
    """
    name = hook_name(model, layer, hook)
    if not hasattr(probe, "direction"):
        raise SteeringError(f"{type(probe).__name__} has no direction(); pass a fitted nanolens.probes.LinearProbe")
    direction = probe.direction(cls) if cls is not None else probe.direction()
    direction = torch.as_tensor(direction, dtype=torch.float32).reshape(-1)
    if direction.shape[0] != model.config.n_embd:
        raise SteeringError(
            f"the probe has {direction.shape[0]} weights but {name} has width {model.config.n_embd}; "
            "fit the probe on this model's activations at this hook"
        )
    scales: dict[str, float] = {}
    if norm_texts is not None:
        scales = measure_scales(model, [name], check_texts(norm_texts, "norm_texts"))
    else:
        scaler = getattr(probe, "scaler_", None)
        if scaler is not None:
            rms = float(np.sqrt(np.sum(np.asarray(scaler.mean_) ** 2) + np.sum(np.asarray(scaler.scale_) ** 2)))
            if rms > 0:
                scales = {name: rms}
    classes = [str(c) for c in getattr(probe, "classes_", [])]
    toward = str(cls) if cls is not None else (classes[1] if len(classes) == 2 else None)
    prov = {
        "method": "probe", "hook": name, "position": "the probe's training positions",
        "centring": "none (logistic-regression weights, standardisation undone)", "classes": classes,
        "toward": toward, "C": getattr(probe, "C_", None), "source": source,
    }
    return SteeringVector({name: direction}, model=model_fingerprint(model), scales=scales, provenance=prov,
                          label=label or "probe")


def random_direction(
    d_model: int | None = None,
    norm: float | None = None,
    seed: int = 0,
    *,
    layer: int | str | None = None,
    model: GPT = None,
    hook: str = "resid_pre",
    like: SteeringVector | None = None,
    label: str | None = None,
) -> SteeringVector:
    """A direction drawn uniformly on the sphere (Gaussian, normalised) times `norm`: the control.

    `like=v` makes the matched control: the same hooks, the same norm per hook (unless `norm`
    is given), the same typical norms and model as `v`, so a random vector of equal norm can be
    compared with `v` at equal coefficients. Otherwise give `d_model` and where it goes:
    `layer` (with `model`, checked) or a full hook name as `layer`.
    """
    gen = torch.Generator().manual_seed(int(seed))
    if like is not None:
        if d_model is not None and d_model != like.d_model:
            raise SteeringError(f"d_model={d_model} differs from the width of like= ({like.d_model})")
        out = {}
        for h, t in like.directions.items():
            r = torch.randn(t.shape, generator=gen)
            out[h] = r / r.norm() * (float(t.norm()) if norm is None else float(norm))
        prov = {"method": "random", "seed": seed, "hook": like.hooks, "matched_to": like.label,
                "norm": "equal to the matched vector's" if norm is None else norm, "centring": "none"}
        return SteeringVector(out, model=like.model, scales=like.scales, provenance=prov, label=label or "random")
    if d_model is None:
        if model is None:
            raise SteeringError("give d_model (or model=, or like= a vector to match)")
        d_model = int(model.config.n_embd)
    if isinstance(d_model, bool) or not isinstance(d_model, (int, np.integer)) or d_model < 1:
        raise SteeringError(f"d_model must be a positive int, got {d_model!r}")
    if model is not None and d_model != model.config.n_embd:
        raise SteeringError(f"d_model={d_model} but the model's width is {model.config.n_embd}")
    if layer is None:
        raise SteeringError("say where the random direction goes: layer=2 (with model=) or layer='blocks.2.hook_resid_pre'")
    if model is not None:
        name = hook_name(model, layer, hook)
    elif isinstance(layer, str):
        name = layer
    else:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0:
            raise SteeringError(f"without a model, layer must be a non-negative block index or a full hook name, got {layer!r}")
        name = f"blocks.{int(layer)}.hook_{hook[5:] if hook.startswith('hook_') else hook}"
    r = torch.randn(int(d_model), generator=gen)
    value = 1.0 if norm is None else float(norm)
    if not np.isfinite(value) or value <= 0:
        raise SteeringError(f"norm must be a positive finite number, got {norm}")
    prov = {"method": "random", "seed": seed, "hook": name, "norm": value, "centring": "none"}
    return SteeringVector({name: r / r.norm() * value}, model=model_fingerprint(model) if model is not None else None,
                          provenance=prov, label=label or "random")
