"""Adding steering vectors to the residual stream while the model runs, KV cache included.

    with steer(model, happy, coeff=4, positions="all") as s:
        text = model.generate(prompt, max_new_tokens=80)
    print(s.report())                     # which hooks fired, at how many positions

    model.generate(prompt, steering=Steering(happy, coeff=4))   # the same, as an argument

Positions are **text positions**: 0 is the first token of the prompt, whatever the model is
doing. Generation with the KV cache runs the prompt once and then one token per step, so a
hook sees `[batch, 1, d]` at text position `prompt_len + k`; without the cache (or after the
context window is cropped) it sees the whole window again. `Steering` tracks where each forward
pass sits in the text, so every mode means the same with and without the cache:

- ``"all"``: every position, the prompt and every generated token (each decode step included);
- ``"prompt"``: the prompt's positions only (nothing after the prompt pass);
- ``"generated"``: the generated tokens' positions only (never the prompt);
- an int ``k``: the first k text positions (ActAdd's alignment), counted across cached steps.

A position-aligned vector (`[n_pos, d]`, from `contrast_pair(position="aligned")`) adds row i
at text position i, intersected with the mode.

Where a forward pass sits in the text comes from `generate` (it announces each step), or, for
a model called directly, from its `kv_cache` argument: the call that starts a cache is the
prompt and later calls continue it; a call without a cache is a whole text, all prompt.

`relative=True` measures the coefficient in units of the layer's typical residual norm (the
vector's `scales`): each hook's direction is normalised and multiplied by `coeff * scale`, so
only its direction matters. `relative=False` adds `coeff * vector` as stored.

`Steering.report()` says how many (row, position) pairs each hook touched and at which text
positions, so a silently disabled steering (the KV-cache bug of several public libraries)
shows up as a count that stopped growing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor

from nanolens.models import GPT
from nanolens.models.generation import Intervention, current_step, register_intervention_adapter

from .vector import SteeringError, SteeringVector, _scalar

Positions = Union[str, int]
STEER_POSITIONS = ("all", "prompt", "generated")
VectorsLike = Union[SteeringVector, Sequence[Union[SteeringVector, tuple[SteeringVector, float]]]]


def check_positions(positions: Any) -> Positions:
    if isinstance(positions, str):
        if positions not in STEER_POSITIONS:
            raise SteeringError(f"positions={positions!r}: use 'all', 'prompt', 'generated' or an int k (the first k positions)")
        return positions
    if isinstance(positions, bool) or not isinstance(positions, int):
        raise SteeringError(f"positions must be 'all', 'prompt', 'generated' or an int k, got {positions!r}")
    if positions < 1:
        raise SteeringError(f"positions={positions}: the first k positions needs k >= 1")
    return positions


def _terms(vectors: Any) -> list[tuple[SteeringVector, float]]:
    if isinstance(vectors, SteeringVector):
        return [(vectors, 1.0)]
    if isinstance(vectors, (list, tuple)):
        out = []
        for item in vectors:
            if isinstance(item, SteeringVector):
                out.append((item, 1.0))
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], SteeringVector):
                out.append((item[0], _scalar(item[1], "a vector's coefficient")))
            else:
                raise SteeringError(f"expected SteeringVector or (SteeringVector, coeff) items, got {type(item).__name__}")
        if not out:
            raise SteeringError("no steering vectors given: the list is empty")
        return out
    raise SteeringError(f"expected a SteeringVector or a list of them, got {type(vectors).__name__}")


@dataclass
class SteeringReport:
    """What a steering did: per hook, the (row, position) pairs it added to (`touched`), the
    forward passes in which it fired (`calls`) and the distinct text positions it touched."""

    touched: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    text_positions: dict[str, set[int]] = field(default_factory=dict)
    forward_passes: int = 0

    def record(self, hook: str, rows: int, lo: int, hi: int) -> None:
        self.touched[hook] = self.touched.get(hook, 0) + rows * (hi - lo)
        self.calls[hook] = self.calls.get(hook, 0) + 1
        self.text_positions.setdefault(hook, set()).update(range(lo, hi))

    @property
    def total(self) -> int:
        return sum(self.touched.values())

    def __str__(self) -> str:
        if not self.touched:
            return f"steering touched nothing in {self.forward_passes} forward passes"
        parts = []
        for h, n in self.touched.items():
            pos = sorted(self.text_positions[h])
            span = f"{pos[0]}..{pos[-1]}" if pos == list(range(pos[0], pos[-1] + 1)) else f"{len(pos)} distinct"
            parts.append(f"{h}: {n} (row, position) pairs in {self.calls[h]} of {self.forward_passes} passes, text positions {span}")
        return "steering touched " + "; ".join(parts)


@dataclass
class _Step:
    first: int = 0  # text position of the first input token
    prompt_len: int | None = None  # None: every position is prompt


class _Reported:
    """What the last application touched, shared by both kinds of steering."""

    last_report: SteeringReport | None

    def report(self) -> SteeringReport:
        if self.last_report is None:
            raise SteeringError("this steering has not been applied yet")
        return self.last_report


class Steering(_Reported):
    """A steering setting: vectors with coefficients, positions and units.

    `vectors`: a SteeringVector, or a list of vectors / (vector, coeff) pairs (several vectors
    at several layers at once; vectors at one hook add up). `coeff` multiplies them all.
    `positions`: 'all', 'prompt', 'generated' or an int k (first k text positions).
    `relative`: coefficients in units of each layer's typical residual norm.
    `check_model`: refuse vectors computed on other weights (width is always checked).
    `rows`: per-row settings instead (see `RowSteering`).

    Use it with `steer(model, steering)` / `with steering.applied(model):`, or pass it to
    `model.generate(..., steering=steering)`; afterwards `steering.last_report` holds the counts.
    """

    def __init__(
        self,
        vectors: VectorsLike,
        coeff: float = 1.0,
        positions: Positions = "all",
        relative: bool = False,
        check_model: bool = True,
    ) -> None:
        self.terms = _terms(vectors)
        self.coeff = _scalar(coeff, "coeff")
        self.positions = check_positions(positions)
        self.relative = bool(relative)
        self.check = bool(check_model)
        self.last_report: SteeringReport | None = None
        if self.relative:
            for v, _ in self.terms:
                missing = [h for h in v.hooks if h not in v.scales]
                if missing:
                    raise SteeringError(
                        f"relative coefficients need the typical residual norm at {', '.join(missing)}, which "
                        f"the vector {v.label!r} lacks; measure it with vector.with_scales(model, texts) or use relative=False"
                    )

    def __repr__(self) -> str:
        terms = " + ".join(f"{c * self.coeff:g}*{v.label}" for v, c in self.terms)
        return f"Steering({terms}, positions={self.positions!r}, relative={self.relative})"

    # ---- what gets added ---------------------------------------------------------------------
    def validate(self, model: GPT) -> None:
        for v, _ in self.terms:
            v.check_model(model, strict=self.check)

    def additions(self) -> dict[str, list[Tensor]]:
        """hook -> the tensors to add: [d] (every position) and/or [n_pos, d] (aligned), CPU float32."""
        out: dict[str, dict[bool, Tensor]] = {}
        for v, c in self.terms:
            for h, t in v.directions.items():
                k = self.coeff * c
                if self.relative:
                    n = float(t.norm(dim=-1).mean()) if t.dim() == 2 else float(t.norm())
                    if n == 0:
                        raise SteeringError(f"the direction of {v.label!r} at {h} is zero; relative steering needs a direction")
                    k *= v.scales[h] / n
                slot = out.setdefault(h, {})
                aligned = t.dim() == 2
                if aligned in slot:
                    prev = slot[aligned]
                    if aligned:
                        n_rows = max(prev.shape[0], t.shape[0])
                        prev = torch.cat([prev, prev.new_zeros(n_rows - prev.shape[0], prev.shape[1])])
                        t = torch.cat([t, t.new_zeros(n_rows - t.shape[0], t.shape[1])])
                    slot[aligned] = prev + k * t
                else:
                    slot[aligned] = k * t
        return {h: [slot[a] for a in (False, True) if a in slot] for h, slot in out.items()}

    # ---- attaching -----------------------------------------------------------------------------
    @contextmanager
    def applied(self, model: GPT) -> Iterator["Steering"]:
        self.validate(model)
        plan = {h: [(t[None, None, :], False) if t.dim() == 1 else (t[None], True) for t in ts]
                for h, ts in self.additions().items()}
        with _attach(model, plan, self.positions) as report:
            self.last_report = report
            yield self



class RowSteering(_Reported):
    """A different steering per batch row, in one forward pass (what `sweep` uses to run every
    setting of a sweep in one batch): `rows[i]` is a `Steering` or None (row i unsteered).
    All rows share one position mode. Applied like a Steering (`steer(model, row_steering)`)."""

    def __init__(self, rows: Sequence[Steering | None], check_model: bool = True) -> None:
        self.rows = list(rows)
        if not self.rows:
            raise SteeringError("RowSteering needs at least one row")
        modes = {s.positions for s in self.rows if s is not None}
        if len(modes) > 1:
            raise SteeringError(f"all rows of a RowSteering must use one position mode, got {sorted(map(str, modes))}")
        self.positions: Positions = modes.pop() if modes else "all"
        self.check = check_model
        self.last_report: SteeringReport | None = None

    def validate(self, model: GPT) -> None:
        for s in self.rows:
            if s is not None:
                s.validate(model)

    @contextmanager
    def applied(self, model: GPT) -> Iterator["RowSteering"]:
        self.validate(model)
        per_row = [s.additions() if s is not None else {} for s in self.rows]
        hooks = list(dict.fromkeys(h for adds in per_row for h in adds))
        d = model.config.n_embd
        B = len(self.rows)
        plan: dict[str, list[tuple[Tensor, bool]]] = {}
        for h in hooks:
            has_flat = any(t.dim() == 1 for adds in per_row for t in adds.get(h, []))
            flat = torch.zeros(B, 1, d) if has_flat else None
            n_al = max((t.shape[0] for adds in per_row for t in adds.get(h, []) if t.dim() == 2), default=0)
            al = torch.zeros(B, n_al, d) if n_al else None
            for i, adds in enumerate(per_row):
                for t in adds.get(h, []):
                    if t.dim() == 1:
                        flat[i, 0] += t  # type: ignore[index]
                    else:
                        al[i, : t.shape[0]] += t  # type: ignore[index]
            plan[h] = ([(flat, False)] if flat is not None else []) + ([(al, True)] if al is not None else [])
        with _attach(model, plan, self.positions) as report:
            self.last_report = report
            yield self



# ---------------------------------------------------------------------------------------------
# the hooks
# ---------------------------------------------------------------------------------------------
def _span(mode: Positions, step: _Step, n: int) -> tuple[int, int]:
    """The input positions [lo, hi) a mode covers in a pass of `n` tokens starting at text
    position `step.first` (every mode covers one contiguous run)."""
    first = step.first
    prompt_end = first + n if step.prompt_len is None else step.prompt_len
    if mode == "all":
        lo, hi = 0, n
    elif mode == "prompt":
        lo, hi = 0, prompt_end - first
    elif mode == "generated":
        lo, hi = prompt_end - first, n
    else:  # first k text positions
        lo, hi = 0, int(mode) - first
    return max(lo, 0), min(hi, n)


@contextmanager
def _attach(model: GPT, plan: Mapping[str, list[tuple[Tensor, bool]]], positions: Positions) -> Iterator[SteeringReport]:
    """Attach one hook per hook point adding each `(tensor, aligned)` of `plan[hook]`: a
    [R, 1, d] tensor at every covered position, or an aligned [R, n_pos, d] one whose row j goes
    to text position j (R = 1, or one per batch row); plus a forward pre-hook tracking positions."""
    report = SteeringReport()
    step = _Step()
    cache_prompts: dict[int, tuple[Any, int]] = {}
    device_cache: dict[tuple[str, int, Any, Any], Tensor] = {}

    def pre_hook(module: Any, args: tuple, kwargs: dict) -> None:
        report.forward_passes += 1
        announced = current_step(module)
        if announced is not None:
            step.first, step.prompt_len = announced
            return
        kv_cache = kwargs.get("kv_cache", args[3] if len(args) > 3 else None)
        tokens = args[0] if args else kwargs.get("input")
        n = tokens.shape[-1] if isinstance(tokens, Tensor) else None
        if kv_cache is None:
            step.first, step.prompt_len = 0, None
        else:
            offset = int(kv_cache.length)
            if offset == 0 and n is not None:
                cache_prompts[id(kv_cache)] = (kv_cache, n)
            held = cache_prompts.get(id(kv_cache))
            step.first = offset
            step.prompt_len = held[1] if held is not None and held[0] is kv_cache else offset + (n or 0)

    def make_hook(name: str, adds: list[tuple[Tensor, bool]]):
        width = adds[0][0].shape[-1]

        def hook(act: Tensor, hook: Any) -> Tensor | None:
            if act.dim() < 3:
                return None
            n = act.shape[1]
            lo, hi = _span(positions, step, n)
            if lo >= hi:
                return None
            if act.shape[-1] != width:
                raise SteeringError(f"{name} carries vectors of width {act.shape[-1]}, the steering vector has {width}")
            rows = act.shape[0]
            delta = None
            t_lo, t_hi = hi, lo
            for i, (t, aligned) in enumerate(adds):
                key = (name, i, act.device, act.dtype)
                dev = device_cache.get(key)
                if dev is None:
                    dev = device_cache[key] = t.to(act.device, act.dtype)
                if dev.shape[0] not in (1, rows):
                    raise SteeringError(
                        f"this steering holds one setting per row for {dev.shape[0]} rows, but the model runs a batch of {rows}"
                    )
                if not aligned:
                    a, b = lo, hi
                    piece = dev if hi - lo == 1 else dev.expand(dev.shape[0], hi - lo, dev.shape[2])
                else:  # row j of an aligned vector belongs at text position j
                    a, b = lo, min(hi, dev.shape[1] - step.first)
                    if a >= b:
                        continue
                    piece = dev[:, step.first + a : step.first + b]
                    if a != lo or b != hi:
                        piece = torch.nn.functional.pad(piece, (0, 0, a - lo, hi - b))
                delta = piece if delta is None else delta + piece
                t_lo, t_hi = min(t_lo, a), max(t_hi, b)
            if delta is None:
                return None
            report.record(name, rows, step.first + t_lo, step.first + t_hi)
            if lo == 0 and hi == n:
                return act + delta
            out = act.clone()
            out[:, lo:hi] = out[:, lo:hi] + delta
            return out

        return hook

    handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with model.hooks(fwd_hooks=[(h, make_hook(h, adds)) for h, adds in plan.items()]):
            yield report
    finally:
        handle.remove()


@contextmanager
def steer(
    model: GPT,
    vectors: "VectorsLike | Steering | RowSteering",
    coeff: float = 1.0,
    positions: Positions = "all",
    relative: bool = False,
    check_model: bool = True,
) -> Iterator["Steering | RowSteering"]:
    """Add steering vectors to `model`'s activations inside the `with` block; yields the
    `Steering`, whose `.report()` counts what it touched. See the module docstring for
    `positions` and `relative`. A `Steering`/`RowSteering` may be passed as it is."""
    if isinstance(vectors, (Steering, RowSteering)):
        s = vectors
    else:
        s = Steering(vectors, coeff=coeff, positions=positions, relative=relative, check_model=check_model)
    with s.applied(model):
        yield s


def as_steering(steering: Any) -> "Steering | RowSteering":
    """What `generate(steering=...)` accepts: a Steering/RowSteering, a SteeringVector (coeff 1,
    all positions, absolute), a list of vectors, or a dict of Steering's keyword arguments."""
    if isinstance(steering, (Steering, RowSteering)):
        return steering
    if isinstance(steering, Mapping):
        kw = dict(steering)
        if "vectors" not in kw:
            raise SteeringError("a steering dict needs a 'vectors' entry (plus optional coeff, positions, relative)")
        return Steering(**kw)
    return Steering(steering)


def _adapt(steering: Any) -> Intervention | None:
    """`generate(steering=...)`'s other spellings: a SteeringVector, a list of vectors, a dict of
    Steering's keyword arguments (registered with the model's generation below)."""
    return as_steering(steering) if isinstance(steering, (SteeringVector, Mapping, list, tuple)) else None


register_intervention_adapter(_adapt)


def finite_coeffs(coeffs: Sequence[float]) -> list[float]:
    out = [_scalar(c, "a coefficient") for c in coeffs]
    if not out:
        raise SteeringError("no coefficients given")
    return out


__all__ = ["Steering", "RowSteering", "SteeringReport", "steer", "as_steering", "STEER_POSITIONS", "check_positions",
           "finite_coeffs"]
