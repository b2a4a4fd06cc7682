"""`SteeringVector`: directions in a model's residual stream, with their provenance.

A steering vector holds one direction per hook point (usually one `blocks.{L}.hook_resid_pre`),
as float32 tensors of shape `[d_model]`, or `[n_pos, d_model]` for a position-aligned
(ActAdd-style) vector whose row i is added at text position i. Beside the directions it keeps:

- `model`: the fingerprint of the model it was read from (width, layer count, a hash of the
  architecture config and a hash of the weights), so vectors of different models are never
  mixed by accident. Vectors built without a model (a random control) have none.
- `scales`: the layer's *typical residual-stream norm* per hook (the root-mean-square norm of
  the residual stream over all positions of some text). With `relative=True`, a coefficient of
  1.0 adds a vector as long as that typical norm, so "coeff 1.0" means the same at every layer
  and for every method.
- `provenance`: how it was made (method, hook, read position, centring, source prompts or data
  set, arithmetic that combined it), saved with it.

Arithmetic is real vector arithmetic, hook by hook: `a - b`, `a + b`, `2.5 * a`, `-a`, `a / k`;
hooks present in only one operand are kept as they are (the other counts as zero there).
Combining vectors of different widths or different models raises `SteeringError`.

    v = mean_difference(model, happy, sad, layer=2)
    (2 * v).norm, v.cosine(w), v.normalize()
    v.save("runs/demo/happy")            # happy.safetensors + happy.json
    SteeringVector.load("runs/demo/happy")
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from nanolens.fields import INT, LIST_OF_STR, NUMBERS_BY_NAME, OBJECT, STR, FileFormatError, field, optional, read_json
from nanolens.files import atomic_write
from nanolens.models import GPT
from nanolens.models.hook_names import layer_of, stop_layer

from .fingerprint import describe_model, model_fingerprint, same_model

FORMAT = "nanolens-steering-vector"
VERSION = 1


class SteeringError(ValueError):
    """A steering request that cannot work; the message names the problem and the fix."""


# ---------------------------------------------------------------------------------------------
# typical norms
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def measure_scales(model: GPT, hooks: Sequence[str], texts: Sequence[str] | Tensor, max_texts: int = 256) -> dict[str, float]:
    """The typical residual norm at each hook: sqrt(mean ||x||^2) over every position of `texts`.

    `texts`: strings (run one at a time, so lengths may differ; at most `max_texts`), or a
    token tensor [batch, pos]. Strings get the model's BOS token where it has one, and the BOS
    position is left out: its norm (an attention sink's, often many times the others) is not
    what a steering coefficient should be measured against.
    """
    hooks = list(hooks)
    for h in hooks:
        model.check_hook_name(h)
    sums = {h: 0.0 for h in hooks}
    count = 0
    stop = stop_layer(hooks)
    skip = 0
    was_training = model.training
    model.eval()
    try:
        if isinstance(texts, Tensor):
            batches = [texts.to(model.device)]
        else:
            texts = [t for t in list(texts)[:max_texts] if t]
            if not texts:
                raise SteeringError("no text to measure the typical residual norm on; give at least one non-empty text")
            bos = model.bos_tokens()
            skip, block = len(bos), model.config.block_size - len(bos)
            by_len: dict[int, list[list[int]]] = {}
            for t in texts:
                ids = bos + model.tokenizer.encode(t)[-block:]
                by_len.setdefault(len(ids), []).append(ids)
            batches = [torch.tensor(group, dtype=torch.long, device=model.device) for group in by_len.values()]
        for tokens in batches:
            _, cache = model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop, return_type=None,
                                            return_cache_object=False)
            for h in hooks:
                sums[h] += float(cache[h][:, skip:].float().pow(2).sum())
            count += tokens.shape[0] * (tokens.shape[1] - skip)
    finally:
        model.train(was_training)
    return {h: math.sqrt(sums[h] / max(count, 1)) for h in hooks}


# ---------------------------------------------------------------------------------------------
# the vector
# ---------------------------------------------------------------------------------------------
def _scalar(k: Any, what: str) -> float:
    if isinstance(k, Tensor):
        if k.numel() != 1:
            raise SteeringError(f"{what} must be a single number, got a tensor of shape {tuple(k.shape)}")
        k = k.item()
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise SteeringError(f"{what} must be a real number, got {type(k).__name__} {k!r}")
    k = float(k)
    if not math.isfinite(k):
        raise SteeringError(f"{what} must be finite, got {k}")
    return k


def _pad_rows(a: Tensor, n: int) -> Tensor:
    return a if a.shape[0] == n else torch.cat([a, a.new_zeros(n - a.shape[0], a.shape[1])])


class SteeringVector:
    """Directions at one or more hook points, plus the model they belong to and their provenance.

    `directions`: hook name -> tensor `[d_model]` (a direction) or `[n_pos, d_model]` (a
    position-aligned ActAdd vector: row i is added at text position i). `model`: the
    fingerprint of the model (see `model_fingerprint`) or None. `scales`: hook -> typical
    residual norm of that layer (needed for relative coefficients). `provenance`: free JSON.
    `label`: a short name used in tables and in the provenance of combinations.
    """

    __array_priority__ = 1000  # numpy scalars defer to our __rmul__

    def __init__(
        self,
        directions: Mapping[str, Tensor | Sequence[float]],
        *,
        model: Mapping[str, Any] | None = None,
        scales: Mapping[str, float] | None = None,
        provenance: Mapping[str, Any] | None = None,
        label: str | None = None,
    ) -> None:
        if not directions:
            raise SteeringError("a steering vector needs at least one hook point with a direction")
        dirs: dict[str, Tensor] = {}
        width = None
        for hook, value in directions.items():
            if not isinstance(hook, str) or not hook:
                raise SteeringError(f"hook names must be non-empty strings, got {hook!r}")
            t = torch.as_tensor(value).detach().to("cpu", torch.float32).clone()
            if t.dim() not in (1, 2) or t.shape[-1] == 0 or t.numel() == 0:
                raise SteeringError(f"the direction at {hook} must have shape [d_model] or [n_pos, d_model], got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise SteeringError(f"the direction at {hook} holds NaN or infinite values")
            if width is not None and t.shape[-1] != width:
                raise SteeringError(f"all directions must have one width; {hook} has {t.shape[-1]}, others {width}")
            width = t.shape[-1]
            dirs[hook] = t
        self.directions = dirs
        self.model = dict(model) if model else None
        if self.model and self.model.get("d_model") not in (None, width):
            raise SteeringError(f"the directions have width {width} but the model's d_model is {self.model['d_model']}")
        self.scales = {h: float(s) for h, s in (scales or {}).items() if h in dirs}
        for h, s in self.scales.items():
            if not (math.isfinite(s) and s > 0):
                raise SteeringError(f"the typical norm at {h} must be a positive number, got {s}")
        self.provenance = dict(provenance or {})
        self.label = label or self.provenance.get("method") or "vector"

    # ---- facts ---------------------------------------------------------------------------------
    @property
    def hooks(self) -> list[str]:
        return list(self.directions)

    @property
    def hook(self) -> str:
        """The one hook of a single-hook vector (raises for several)."""
        if len(self.directions) != 1:
            raise SteeringError(f"this vector has {len(self.directions)} hooks ({', '.join(self.hooks)}); name one")
        return self.hooks[0]

    @property
    def layers(self) -> list[int | None]:
        return [layer_of(h) for h in self.directions]

    @property
    def d_model(self) -> int:
        return next(iter(self.directions.values())).shape[-1]

    @property
    def aligned(self) -> bool:
        """Whether any hook holds a position-aligned [n_pos, d_model] vector."""
        return any(t.dim() == 2 for t in self.directions.values())

    @property
    def norm(self) -> float:
        """The Euclidean norm over all hooks (and positions) together."""
        return math.sqrt(sum(float(t.pow(2).sum()) for t in self.directions.values()))

    def norms(self) -> dict[str, float]:
        return {h: float(t.norm()) for h, t in self.directions.items()}

    def __getitem__(self, hook: str) -> Tensor:
        try:
            return self.directions[hook]
        except KeyError:
            raise KeyError(f"this vector has no direction at {hook!r}; its hooks: {', '.join(self.hooks)}") from None

    def __contains__(self, hook: str) -> bool:
        return hook in self.directions

    def __len__(self) -> int:
        return len(self.directions)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{h}{list(t.shape) if t.dim() == 2 else ''}" for h, t in self.directions.items())
        return f"SteeringVector({self.label!r}, {shapes}, d_model={self.d_model}, norm={self.norm:.4g})"

    def to_tensor(self, hook: str | None = None) -> Tensor:
        """The direction at `hook` (default: the only hook), a copy."""
        return self[hook or self.hook].clone()

    def unit(self, hook: str | None = None) -> Tensor:
        """The unit direction at `hook` (an aligned vector is averaged over positions first)."""
        t = self[hook or self.hook]
        t = t.mean(0) if t.dim() == 2 else t
        n = t.norm()
        if n == 0:
            raise SteeringError("the direction is zero; it has no unit direction")
        return t / n

    # ---- compatibility ---------------------------------------------------------------------
    def _check(self, other: "SteeringVector", op: str) -> None:
        if not isinstance(other, SteeringVector):
            raise TypeError(f"cannot {op} a SteeringVector and a {type(other).__name__}")
        if self.d_model != other.d_model:
            raise SteeringError(
                f"cannot {op} vectors of different widths: {self.label!r} has d_model={self.d_model}, "
                f"{other.label!r} has d_model={other.d_model}; they come from different models"
            )
        if not same_model(self.model, other.model):
            raise SteeringError(
                f"cannot {op} vectors of different models: {self.label!r} comes from a "
                f"{describe_model(self.model)}, {other.label!r} from a {describe_model(other.model)}; "
                "compute both on one model, or, to move a direction to another checkpoint on purpose, "
                "re-label it with vector.for_model(model)"
            )
        for h in set(self.directions) & set(other.directions):
            a, b = self.directions[h], other.directions[h]
            if (a.dim() == 2) != (b.dim() == 2):
                raise SteeringError(
                    f"cannot {op} a position-aligned vector and a single direction at {h}; "
                    "reduce the aligned one first (vector.reduce('mean') or 'last')"
                )

    def check_model(self, model: GPT, strict: bool = True) -> None:
        """Raise SteeringError unless this vector can steer `model`: same width, hooks that exist,
        and (with `strict`) the same weights it was read from."""
        width = int(model.config.n_embd)
        if self.d_model != width:
            raise SteeringError(
                f"the vector {self.label!r} has width {self.d_model} but the model's d_model is {width}; "
                "it was made for another model: compute the direction on this model"
            )
        for h in self.directions:
            layer = layer_of(h)
            if layer is not None and layer >= model.config.n_layer:
                raise SteeringError(
                    f"the vector {self.label!r} steers {h}, but this model has only {model.config.n_layer} "
                    f"layers (0..{model.config.n_layer - 1})"
                )
            model.check_hook_name(h)
        if strict and self.model:
            fp = model_fingerprint(model)
            if not same_model(self.model, fp):
                raise SteeringError(
                    f"the vector {self.label!r} was computed on a {describe_model(self.model)}, not on this "
                    f"{describe_model(fp)}; pass check_model=False (or use vector.for_model(model)) to apply a "
                    "direction from another checkpoint on purpose"
                )

    def for_model(self, model: GPT) -> "SteeringVector":
        """A copy labelled as belonging to `model` (same width required): for moving a direction
        from one checkpoint to another on purpose. The old fingerprint is kept in the provenance."""
        self.check_model(model, strict=False)
        prov = {**self.provenance, "transferred_from": self.model}
        return self._like(dict(self.directions), model=model_fingerprint(model), provenance=prov)

    def with_scales(self, model: GPT, texts: Sequence[str] | Tensor) -> "SteeringVector":
        """A copy whose typical norms are measured on `model` over `texts`."""
        scales = measure_scales(model, self.hooks, texts)
        out = self._like(dict(self.directions))
        out.scales = scales
        out.provenance = {**out.provenance, "scale_texts": _describe_texts(texts)}
        return out

    # ---- arithmetic --------------------------------------------------------------------------
    def _like(self, directions: dict[str, Tensor], **changes: Any) -> "SteeringVector":
        kw = dict(model=self.model, scales=self.scales, provenance=self.provenance, label=self.label)
        kw.update(changes)
        return SteeringVector(directions, **kw)

    def _combine(self, other: "SteeringVector", sign: float, symbol: str) -> "SteeringVector":
        self._check(other, "add" if sign > 0 else "subtract")
        out: dict[str, Tensor] = {h: t.clone() for h, t in self.directions.items()}
        for h, t in other.directions.items():
            if h in out:
                a = out[h]
                if a.dim() == 2:  # aligned: pad the shorter with zeros (ActAdd pads)
                    n = max(a.shape[0], t.shape[0])
                    out[h] = _pad_rows(a, n) + sign * _pad_rows(t, n)
                else:
                    out[h] = a + sign * t
            else:
                out[h] = sign * t
        scales = dict(other.scales)
        for h, s in self.scales.items():
            scales[h] = (s + scales[h]) / 2 if h in scales else s
        label = f"{self.label} {symbol} {other.label}"
        prov = {"method": "arithmetic", "expression": label, "parts": [self.provenance, other.provenance]}
        return SteeringVector(out, model=self.model or other.model, scales=scales, provenance=prov, label=label)

    def __add__(self, other: Any) -> "SteeringVector":
        if isinstance(other, numbers.Number) and other == 0:  # sum([...]) starts from 0
            return self
        return self._combine(other, 1.0, "+")

    def __radd__(self, other: Any) -> "SteeringVector":
        if isinstance(other, numbers.Number) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: Any) -> "SteeringVector":
        return self._combine(other, -1.0, "-")

    def __neg__(self) -> "SteeringVector":
        return self._scaled(-1.0, f"-({self.label})")

    def __pos__(self) -> "SteeringVector":
        return self

    def __mul__(self, k: Any) -> "SteeringVector":
        if isinstance(k, SteeringVector):
            raise TypeError("two steering vectors cannot be multiplied; use a.cosine(b) or scale by a number")
        k = _scalar(k, "the scale factor")
        return self._scaled(k, f"{k:g} * ({self.label})")

    __rmul__ = __mul__

    def __truediv__(self, k: Any) -> "SteeringVector":
        k = _scalar(k, "the divisor")
        if k == 0:
            raise SteeringError("cannot divide a steering vector by zero")
        return self._scaled(1.0 / k, f"({self.label}) / {k:g}")

    def _scaled(self, k: float, label: str) -> "SteeringVector":
        prov = {"method": "arithmetic", "expression": label, "parts": [self.provenance]}
        return self._like({h: t * k for h, t in self.directions.items()}, provenance=prov, label=label)

    def normalize(self) -> "SteeringVector":
        """A copy whose direction at each hook has norm 1 (an aligned vector: Frobenius norm 1)."""
        out = {}
        for h, t in self.directions.items():
            n = t.norm()
            if n == 0:
                raise SteeringError(f"the direction at {h} is zero and cannot be normalised")
            out[h] = t / n
        prov = {**self.provenance, "normalized": True}
        return self._like(out, provenance=prov)

    def reduce(self, how: str = "mean") -> "SteeringVector":
        """Turn position-aligned [n_pos, d] directions into single [d] ones ('mean' or 'last' row)."""
        if how not in ("mean", "last"):
            raise SteeringError(f"reduce how={how!r}: use 'mean' or 'last'")
        out = {h: (t.mean(0) if how == "mean" else t[-1]) if t.dim() == 2 else t for h, t in self.directions.items()}
        return self._like(out, provenance={**self.provenance, "reduced": how})

    def cosine(self, other: "SteeringVector | Tensor", hook: str | None = None) -> float:
        """Cosine similarity: at one `hook`, or over all hooks together (a hook missing from one
        vector counts as zero there). Works across models of one width (e.g. two checkpoints)."""
        if isinstance(other, Tensor):
            other = SteeringVector({hook or self.hook: other})
        if not isinstance(other, SteeringVector):
            raise TypeError(f"cosine needs a SteeringVector or a tensor, got {type(other).__name__}")
        if self.d_model != other.d_model:
            raise SteeringError(f"cannot compare vectors of different widths ({self.d_model} vs {other.d_model})")
        hooks = [hook] if hook else sorted(set(self.directions) | set(other.directions))
        dot = na = nb = 0.0
        for h in hooks:
            a = self.directions.get(h)
            b = other.directions.get(h)
            if a is not None and b is not None:
                if a.dim() == 2 or b.dim() == 2:
                    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
                    n = max(a2.shape[0], b2.shape[0])
                    a, b = _pad_rows(a2, n), _pad_rows(b2, n)
                dot += float((a * b).sum())
            if a is not None:
                na += float(a.pow(2).sum())
            if b is not None:
                nb += float(b.pow(2).sum())
        if hook and (hook not in self.directions or hook not in other.directions):
            raise SteeringError(f"both vectors need a direction at {hook}")
        if na == 0 or nb == 0:
            raise SteeringError("the cosine of a zero vector is undefined")
        return dot / math.sqrt(na * nb)

    def without(self, other: "SteeringVector") -> "SteeringVector":
        """This vector minus its projection on `other`, hook by hook (one Gram-Schmidt step): a
        direction orthogonal to `other`, e.g. a gender direction with no sentiment component,
        so that adding both steers each property on its own axis."""
        self._check(other, "project")
        out = {}
        for h, t in self.directions.items():
            b = other.directions.get(h)
            if b is None:
                out[h] = t.clone()
                continue
            if t.dim() == 2 or b.dim() == 2:
                raise SteeringError(f"without() needs one direction per hook; {h} holds a position-aligned vector")
            nb = float(b.pow(2).sum())
            if nb == 0:
                raise SteeringError(f"{other.label!r} is zero at {h}: there is no direction to remove")
            out[h] = t - (float((t * b).sum()) / nb) * b
        label = f"{self.label} without {other.label}"
        prov = {"method": "arithmetic", "expression": label, "parts": [self.provenance, other.provenance]}
        return self._like(out, provenance=prov, label=label)

    def allclose(self, other: "SteeringVector", rtol: float = 1e-5, atol: float = 1e-6) -> bool:
        """Same hooks and (numerically) the same directions."""
        if set(self.directions) != set(other.directions):
            return False
        return all(self.directions[h].shape == other.directions[h].shape
                   and torch.allclose(self.directions[h], other.directions[h], rtol=rtol, atol=atol)
                   for h in self.directions)

    # ---- files -------------------------------------------------------------------------------
    @staticmethod
    def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
        path = Path(path)
        if path.suffix in (".safetensors", ".json"):
            path = path.with_suffix("")
        return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")

    def save(self, path: str | os.PathLike) -> Path:
        """Write `path.safetensors` (one tensor per hook) and `path.json` (model, scales,
        provenance, label), each atomically. Returns the .safetensors path."""
        tensors_path, meta_path = self._paths(path)
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT, "version": VERSION, "label": self.label, "hooks": self.hooks,
            "d_model": self.d_model, "model": self.model, "scales": self.scales, "provenance": self.provenance,
        }
        atomic_write(tensors_path, lambda tmp: save_file({h: t.contiguous() for h, t in self.directions.items()},
                                                         str(tmp), metadata={"format": FORMAT}))
        atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1, default=str) + "\n", encoding="utf-8"))
        return tensors_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SteeringVector":
        """Read a vector written by `save` (give the path with or without a suffix)."""
        tensors_path, meta_path = cls._paths(path)
        for p in (tensors_path, meta_path):
            if not p.is_file():
                raise FileNotFoundError(f"no steering vector at {path}: {p} is missing (save writes .safetensors + .json)")
        try:
            meta = read_json(meta_path)
            if meta.get("format") != FORMAT:
                raise SteeringError(f"{meta_path} is not a nanolens steering vector (format {meta.get('format')!r})")
            hooks = field(meta, "hooks", LIST_OF_STR, meta_path, default=[])
            label = field(meta, "label", optional(STR), meta_path, default=None)
            d_model = field(meta, "d_model", optional(INT), meta_path, default=None)
            model = field(meta, "model", optional(OBJECT), meta_path, default=None)
            for name, kind in (("d_model", INT), ("n_layer", INT), ("config_hash", STR), ("weights_hash", STR)):
                if model:
                    field(model, name, optional(kind), f"{meta_path}: model", default=None)
            scales = field(meta, "scales", optional(NUMBERS_BY_NAME), meta_path, default=None)
            provenance = field(meta, "provenance", optional(OBJECT), meta_path, default=None)
        except FileFormatError as err:
            raise SteeringError(str(err)) from None
        try:
            tensors = load_file(str(tensors_path))
        except (SafetensorError, OSError) as err:
            raise SteeringError(f"{tensors_path} cannot be read ({err})") from None
        widths = {t.shape[-1] for t in tensors.values()}
        if d_model is not None and widths != {d_model}:
            raise SteeringError(f"{meta_path}: d_model: {d_model}, but the directions in {tensors_path.name} have width "
                                f"{', '.join(map(str, sorted(widths)))}; the two files do not belong together")
        order = [h for h in hooks if h in tensors] + [h for h in tensors if h not in hooks]
        return cls({h: tensors[h] for h in order}, model=model, scales=scales, provenance=provenance, label=label)


def _describe_texts(texts: Any, keep: int = 3) -> dict[str, Any]:
    """A JSON-able summary of source texts for provenance: count and the first few."""
    if isinstance(texts, Tensor):
        return {"n": int(texts.shape[0]), "tokens": list(texts.shape)}
    texts = list(texts)
    return {"n": len(texts), "examples": [t[:120] for t in texts[:keep]]}
