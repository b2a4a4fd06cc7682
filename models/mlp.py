"""Feed-forward (MLP) sub-layers: plain or gated, with TransformerLens' hook points.

Hooks: `hook_pre` [batch, pos, d_mlp] (pre-activation; the gate's for gated MLPs),
`hook_pre_linear` (gated only: the linear branch), `hook_post` (what W_out reads).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import GPTConfig
from .hooks import Dropout, FastCall, HookPoint, Linear
from .registry import Registry

ACTIVATIONS: Registry = Registry("mlp")
ACTIVATIONS.register("gelu", "geglu")(F.gelu)
# GPT-2's GELU (Hugging Face's `gelu_new`): the tanh approximation OpenAI trained with.
ACTIVATIONS.register("gelu_tanh")(partial(F.gelu, approximate="tanh"))
ACTIVATIONS.register("relu")(F.relu)
ACTIVATIONS.register("relu2")(lambda x: F.relu(x).square())
ACTIVATIONS.register("silu", "swiglu")(F.silu)


class MLP(FastCall):
    """x -> act(x W_in + b_in) W_out + b_out; gated variants multiply by a second linear branch."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.act = ACTIVATIONS[cfg.mlp]
        self.gated = cfg.gated_mlp
        bias = cfg.has_mlp_bias
        self.fc_in = Linear(cfg.n_embd, cfg.mlp_width, bias=bias)
        self.fc_gate = Linear(cfg.n_embd, cfg.mlp_width, bias=bias) if self.gated else None
        self.fc_out = Linear(cfg.mlp_width, cfg.n_embd, bias=bias)
        self.dropout = Dropout(cfg.dropout)
        self.hook_pre = HookPoint()
        if self.gated:
            self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            pre = self.hook_pre(self.fc_gate(x))
            post = self.act(pre) * self.hook_pre_linear(self.fc_in(x))
        else:
            post = self.act(self.hook_pre(self.fc_in(x)))
        return self.dropout(self.fc_out(self.hook_post(post)))

    # TransformerLens' weight layout (views of the Linear weights, so edits write through).
    @property
    def W_in(self) -> Tensor:  # [d_model, d_mlp]
        return self.fc_in.weight.T

    @property
    def W_gate(self) -> Tensor | None:
        return self.fc_gate.weight.T if self.fc_gate is not None else None

    @property
    def W_out(self) -> Tensor:  # [d_mlp, d_model]
        return self.fc_out.weight.T

    @property
    def b_in(self) -> Tensor:
        return _bias_or_zeros(self.fc_in)

    @property
    def b_out(self) -> Tensor:
        return _bias_or_zeros(self.fc_out)


def _bias_or_zeros(linear: nn.Linear) -> Tensor:
    """A Linear's bias, or zeros of its width when it has none (TransformerLens expects one)."""
    if linear.bias is not None:
        return linear.bias
    return torch.zeros(linear.out_features, device=linear.weight.device, dtype=linear.weight.dtype)
