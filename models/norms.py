"""Normalisation layers with TransformerLens' hook points `hook_scale` and `hook_normalized`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import GPTConfig
from .hooks import FastCall, HookPoint, is_observed
from .registry import Registry

NORMS: Registry[type[nn.Module]] = Registry("norm")


@NORMS.register("layernorm")
class LayerNorm(FastCall):
    """LayerNorm with an optional bias (nanoGPT's `bias=False` drops it)."""

    centers = True

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.eps = cfg.norm_eps
        self.w = nn.Parameter(torch.ones(cfg.n_embd))
        self.b = nn.Parameter(torch.zeros(cfg.n_embd)) if cfg.bias else None
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Tensor) -> Tensor:
        if not is_observed(self.hook_scale, self.hook_normalized):
            return F.layer_norm(x, self.w.shape, self.w, self.b, self.eps)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        x = x / scale * self.w
        if self.b is not None:
            x = x + self.b
        return self.hook_normalized(x)


@NORMS.register("rmsnorm")
class RMSNorm(FastCall):
    """Root-mean-square norm: rescale without centring, no bias (LLaMA's choice).

    In bf16/fp16 the statistics are computed in float32 and the result cast back before the gain
    is applied, exactly as Hugging Face's Llama does, so a half-precision model stays close to
    its float32 original.
    """

    centers = False

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.eps = cfg.norm_eps
        self.w = nn.Parameter(torch.ones(cfg.n_embd))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        low_precision = x.dtype not in (torch.float32, torch.float64)
        if not is_observed(self.hook_scale, self.hook_normalized):
            if low_precision:
                return self.w * F.rms_norm(x.float(), self.w.shape, None, self.eps).to(x.dtype)
            return F.rms_norm(x, self.w.shape, self.w, self.eps)
        wide = x.float() if low_precision else x
        scale = self.hook_scale((wide.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized((wide / scale).to(x.dtype) * self.w)


def build_norm(cfg: GPTConfig) -> nn.Module | None:
    """The norm module for a config, or None when `norm='none'`."""
    return None if cfg.norm == "none" else NORMS[cfg.norm](cfg)
