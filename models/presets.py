"""The simple-to-complex ladder: named presets over one code base, each adding one idea.

Every rung is a `GPTConfig`; training them on the same text and comparing validation losses
shows what each piece of a GPT buys (see `benchmarks/ladder.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ConfigError, GPTConfig


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    settings: dict[str, Any]


# Rungs share width and context so that only the named idea changes between neighbours.
_PLAIN = dict(norm="none", use_final_norm=False, use_residual=False, use_mlp=False, dropout=0.0)

LADDER: tuple[Preset, ...] = (
    Preset(
        "bigram",
        "A lookup table: each character predicts the next from itself alone (embedding -> "
        "untied unembedding, so a->b and b->a can differ), with no context at all.",
        dict(_PLAIN, n_layer=0, positional="none", use_attn=False, tie_weights=False),
    ),
    Preset(
        "average",
        "Each position averages the embeddings of all tokens so far: the first use of context, "
        "uniform and blind to order beyond the learned positions.",
        dict(_PLAIN, n_layer=1, n_head=1, attention="average"),
    ),
    Preset(
        "one_head",
        "One self-attention head: each position chooses, by query-key match, which earlier "
        "tokens to read instead of averaging them all.",
        dict(_PLAIN, n_layer=1, n_head=1),
    ),
    Preset(
        "multi_head",
        "Four smaller heads in parallel, so a position can look for several things at once "
        "(e.g. the previous character and the start of the word).",
        dict(_PLAIN, n_layer=1, n_head=4),
    ),
    Preset(
        "feed_forward",
        "An MLP after attention gives each position computation of its own to turn what it "
        "gathered into a prediction.",
        dict(_PLAIN, n_layer=1, n_head=4, use_mlp=True, mlp="relu"),
    ),
    Preset(
        "deep",
        "Four of those blocks stacked, each replacing the stream with its output (no residual "
        "path): depth alone, which a plain deep stack struggles to train.",
        dict(_PLAIN, n_layer=4, n_head=4, use_mlp=True, mlp="relu"),
    ),
    Preset(
        "residual",
        "The same four blocks, each adding to a residual stream instead of replacing it, which "
        "is what lets a deep stack train at all.",
        dict(_PLAIN, n_layer=4, n_head=4, use_mlp=True, mlp="relu", use_residual=True),
    ),
    Preset(
        "layer_norm",
        "Pre-norm LayerNorm before each sub-layer and at the end keeps activations at a steady "
        "scale, so training is faster and more stable.",
        dict(n_layer=4, n_head=4, mlp="relu", norm="layernorm", dropout=0.0),
    ),
    Preset(
        "gpt2",
        "nanoGPT's block exactly: learned positions, pre-LayerNorm with bias, GELU MLP, tied "
        "embeddings.",
        dict(
            n_layer=4, n_head=4, positional="learned", norm="layernorm", norm_position="pre",
            mlp="gelu", bias=True, tie_weights=True, dropout=0.0,
        ),
    ),
    Preset(
        "modern",
        "Today's recipe: rotary positions, RMSNorm, a SwiGLU MLP and no biases (as in LLaMA).",
        dict(
            n_layer=4, n_head=4, positional="rotary", norm="rmsnorm", mlp="swiglu", bias=False,
            tie_weights=True, dropout=0.0,
        ),
    ),
)

PRESETS: dict[str, Preset] = {p.name: p for p in LADDER}


def preset_config(name: str, **overrides: Any) -> GPTConfig:
    """The `GPTConfig` of a named preset, with any field overridden."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets are: {', '.join(PRESETS)}")
    settings = {**PRESETS[name].settings, **overrides, "preset": name}
    return GPTConfig(**settings)
