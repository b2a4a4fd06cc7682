"""Small helpers about hook points, shared by the model's components."""

from __future__ import annotations

from transformer_lens.hook_points import HookPoint


def is_observed(*points: HookPoint) -> bool:
    """True when any of these hook points has a forward or backward hook attached.

    Components use it to choose between a fused kernel (nothing is watching) and the
    step-by-step computation that materialises every hooked intermediate.
    """
    return any(p.fwd_hooks or p.bwd_hooks for p in points)
