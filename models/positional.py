"""Positional encodings: how a model knows where each token is.

Three kinds, chosen by `GPTConfig.positional`:
- additive (`learned`, `sinusoidal`): a vector per position added to the token embedding
  (hook `hook_pos_embed`);
- `rotary` (RoPE): queries and keys are rotated by an angle proportional to their position, so
  their dot product depends only on the distance between them;
- `alibi`: no vector at all; each head's attention score is penalised linearly with distance;
- `none`: the model sees an unordered bag (only the causal mask hints at order).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import GPTConfig
from .hooks import FastCall
from .registry import Registry

POSITIONAL: Registry[type[nn.Module]] = Registry("positional")


@POSITIONAL.register("learned")
class LearnedPositions(FastCall):
    """One trained vector per position, as in GPT-2 (TransformerLens: `W_pos`)."""

    kind = "additive"

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.block_size, cfg.n_embd))
        nn.init.normal_(self.W_pos, std=0.02)

    def forward(self, offset: int, length: int) -> Tensor:
        if offset + length > self.W_pos.shape[0]:
            raise ValueError(
                f"sequence of {offset + length} tokens is longer than the {self.W_pos.shape[0]} "
                "learned positions (block_size); crop the input to the last block_size tokens"
            )
        return self.W_pos[offset : offset + length]


@POSITIONAL.register("sinusoidal")
class SinusoidalPositions(FastCall):
    """Fixed sines and cosines of geometric wavelengths (Vaswani et al.); nothing to train."""

    kind = "additive"

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.d_model = cfg.n_embd
        self.register_buffer("W_pos", self.table(cfg.block_size), persistent=False)

    def table(self, length: int, start: int = 0) -> Tensor:
        pos = torch.arange(start, start + length, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, self.d_model, 2).float() * (-math.log(10000.0) / self.d_model))
        pe = torch.zeros(length, self.d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : self.d_model // 2]
        return pe

    def forward(self, offset: int, length: int) -> Tensor:
        if offset + length <= self.W_pos.shape[0]:
            return self.W_pos[offset : offset + length]
        return self.table(length, offset).to(self.W_pos.device, self.W_pos.dtype)


@POSITIONAL.register("rotary")
class Rotary(FastCall):
    """RoPE: rotate pairs of query/key features by an angle proportional to the position.

    Pairs are the two halves of the rotated features (feature i with i + width/2: GPT-NeoX's and
    Hugging Face's `rotate_half` layout, not the interleaved (2i, 2i+1) of the paper). With
    `rotary_dim` only the first features of each head rotate (GPT-NeoX / Pythia's partial rotary)
    and the rest pass through; `rope_scaling` stretches the wavelengths for longer contexts.

    Precision: the frequencies and the angle tables are always float32, whatever dtype the model
    is cast to (as in Hugging Face), and are cast to the activations' dtype only when applied, so a
    bf16/fp16 model rotates by the same angles as a float32 one.
    """

    kind = "rotary"
    INITIAL_TABLE = 8192  # positions precomputed at first; the table grows on demand

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.width = cfg.rotary_width
        self.full = self.width == cfg.d_head
        self.base, self.scaling = cfg.rope_base, cfg.rope_scaling
        self.register_buffer("inv_freq", rope_frequencies(self.width, self.base, self.scaling), persistent=False)
        self._build(min(cfg.block_size, self.INITIAL_TABLE))

    def _build(self, length: int) -> None:
        with torch.inference_mode(False):  # a table grown during generation must serve training too
            inv_freq = rope_frequencies(self.width, self.base, self.scaling).to(self.inv_freq.device)
            angles = torch.outer(torch.arange(length, dtype=torch.float32, device=inv_freq.device), inv_freq)
            angles = torch.cat([angles, angles], dim=-1)
            self.register_buffer("inv_freq", inv_freq, persistent=False)
            self.register_buffer("cos", angles.cos(), persistent=False)
            self.register_buffer("sin", angles.sin(), persistent=False)

    def _apply(self, fn, recurse: bool = True):
        """After `.to(...)`, `.half()` or `to_empty()`: rebuild the float32 tables where they now live."""
        super()._apply(fn, recurse)
        if self.inv_freq.device.type != "meta":
            self._build(self.cos.shape[0])
        return self

    @staticmethod
    def _rotate_half(x: Tensor) -> Tensor:
        first, second = x.chunk(2, dim=-1)
        return torch.cat([-second, first], dim=-1)

    def forward(self, x: Tensor, offset: int) -> Tensor:
        """Rotate x of shape [batch, pos, head, d_head] whose first position is `offset`."""
        length = x.shape[1]
        if offset + length > self.cos.shape[0]:
            self._build(2 * (offset + length))
        cos = self.cos[offset : offset + length, None, :].to(x.dtype)
        sin = self.sin[offset : offset + length, None, :].to(x.dtype)
        if self.full:
            return x * cos + self._rotate_half(x) * sin
        rotated, passed = x[..., : self.width], x[..., self.width :]
        return torch.cat([rotated * cos + self._rotate_half(rotated) * sin, passed], dim=-1)


def rope_frequencies(width: int, base: float, scaling: dict | None = None) -> Tensor:
    """RoPE's inverse frequencies [width / 2] in float32, optionally rescaled.

    `scaling` (Hugging Face's `rope_scaling` / `rope_parameters`): "linear" divides every
    frequency by `factor` (positions interpolated); "llama3" (Llama 3.1+) divides only the low
    frequencies, those whose wavelength exceeds original_context / low_freq_factor, keeps those
    shorter than original_context / high_freq_factor, and blends smoothly in between.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, width, 2, dtype=torch.float32) / width))
    kind = (scaling or {}).get("rope_type")
    if kind is None:
        return inv_freq
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    if kind == "llama3":
        context = float(scaling["original_max_position_embeddings"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        wavelength = 2 * math.pi / inv_freq
        smooth = (context / wavelength - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        out = torch.where(wavelength > context / low, inv_freq / factor, inv_freq)
        medium = (wavelength >= context / high) & (wavelength <= context / low)
        return torch.where(medium, blended, out)
    raise ValueError(f"unknown rope_scaling type {kind!r}; known types: linear, llama3")


@POSITIONAL.register("alibi")
class ALiBi(FastCall):
    """Attention with Linear Biases (Press et al.): score -= slope_h * distance, per head."""

    kind = "bias"

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.register_buffer("slopes", self.head_slopes(cfg.n_head), persistent=False)

    @staticmethod
    def head_slopes(n_heads: int) -> Tensor:
        """The paper's geometric slopes; for a head count that is not a power of two, the
        slopes of the next smaller power of two interleaved with those of twice that."""

        def power_of_two(n: int) -> list[float]:
            start = 2 ** (-(2 ** -(math.log2(n) - 3)))
            return [start ** (i + 1) for i in range(n)]

        if math.log2(n_heads).is_integer():
            return torch.tensor(power_of_two(n_heads))
        closest = 2 ** math.floor(math.log2(n_heads))
        extra = power_of_two(2 * closest)[0::2][: n_heads - closest]
        return torch.tensor(power_of_two(closest) + extra)

    def forward(self, q_len: int, k_len: int, offset: int) -> Tensor:
        """Bias of shape [head, q_len, k_len] for queries at positions offset..offset+q_len-1."""
        q_pos = torch.arange(offset, offset + q_len, device=self.slopes.device)
        k_pos = torch.arange(k_len, device=self.slopes.device)
        distance = (q_pos[:, None] - k_pos[None, :]).clamp(min=0).float()
        return -self.slopes[:, None, None] * distance


def build_positional(cfg: GPTConfig) -> nn.Module | None:
    """The positional module for a config, or None for `positional='none'`."""
    if cfg.positional == "none":
        return None
    return POSITIONAL[cfg.positional](cfg)
