"""The divergence guard: a loss, gradient or weight that stops being a number ends the run
with a message instead of being trained on, sampled from or saved.

A too-large learning rate (or no gradient clipping, or broken data) makes the loss inf or NaN;
from then on every update spreads it through the weights. The trainer checks the loss and the
gradient norm at every step and the weights before each evaluation, sample and checkpoint. By
default (`on_nan="stop"`) it writes a `stop` row to metrics.jsonl saying why, keeps `best/`
and `last/` as the last finite checkpoint left them, and raises `TrainingDiverged`. With
`on_nan="skip"` it skips the update instead, as large-scale trainers do, and stops only after
`MAX_CONSECUTIVE_SKIPS` bad steps in a row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

NAN_POLICIES = ("stop", "skip")
MAX_CONSECUTIVE_SKIPS = 20


class TrainingDiverged(ValueError):
    """The loss, a gradient or a weight became inf or NaN; the message names the step and the fix."""


def non_finite(loss: Tensor | float, grad_norm: Tensor | float | None = None) -> str | None:
    """What is not a finite number (the step's loss, then its gradient norm), or None."""
    loss = float(loss)
    if not math.isfinite(loss):
        return f"the training loss is {loss}"
    if grad_norm is not None and not math.isfinite(float(grad_norm)):
        return f"the gradient norm is {float(grad_norm)} (the loss was {loss:.4f})"
    return None


def weights_are_finite(parameters: Iterable[Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in parameters)


def gradient_norm(parameters: Iterable[Tensor]) -> Tensor:
    """The total L2 norm of the gradients (what clipping would measure), without clipping."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())


def divergence_message(iteration: int, what: str, lr: float, learning_rate: float, grad_clip: float,
                       checkpoint_iter: int | None) -> str:
    """The message of a diverged run: where, why, how to fix it, and what is safe on disk."""
    clip = "set grad_clip (it is off; 1.0 is nanoGPT's)" if grad_clip == 0 else f"lower grad_clip (now {grad_clip:g})"
    kept = (f"best/ and last/ still hold the checkpoint of iteration {checkpoint_iter}, written before it diverged"
            if checkpoint_iter is not None else "no checkpoint was written")
    return (f"training stopped at iteration {iteration}: {what} at learning rate {lr:.4g}. Lower learning_rate "
            f"(now {learning_rate:g}), {clip}, or check the data for broken text; on_nan='skip' skips such steps "
            f"instead. {kept}.")
