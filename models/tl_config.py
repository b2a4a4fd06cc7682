"""`model.cfg`: the model's facts under TransformerLens' names, for TransformerLens' tools.

TransformerLens' analysis tools (`ActivationCache` helpers, `patching`, `head_detector`) read a
config object, not our `GPTConfig`; `tl_config` translates one into the other. The optional
hook switches live on it too, as in TransformerLens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformer_lens.config.transformer_lens_config import TransformerLensConfig

from .config import GPTConfig

_TL_NORMS = {"layernorm": "LN", "rmsnorm": "RMS", "none": None}
_TL_POSITIONS = {"learned": "standard", "sinusoidal": "sinusoidal", "rotary": "rotary", "alibi": "alibi", "none": "none"}
_TL_ACTS = {"gelu": "gelu", "geglu": "gelu", "relu": "relu", "relu2": "relu2", "silu": "silu", "swiglu": "silu",
            "gelu_tanh": "gelu_new"}
SWITCHES = ("use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in", "use_hook_unembed")


@dataclass
class NanolensTLConfig(TransformerLensConfig):
    """`model.cfg`: the facts TransformerLens' tools read, plus the optional-hook switches.

    Components read the switches from this one shared object at every forward, so
    `model.cfg.use_attn_result = True` (or `model.set_use_attn_result(True)`) takes effect at once.
    """

    use_attn_in: bool = False
    use_hook_mlp_in: bool = False
    use_hook_unembed: bool = False
    d_vocab_out: int = -1
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    parallel_attn_mlp: bool = False
    original_architecture: str = "nanolens"
    extra: dict[str, Any] = field(default_factory=dict)


def tl_config(config: GPTConfig) -> NanolensTLConfig:
    return NanolensTLConfig(
        d_model=config.n_embd,
        d_head=config.d_head,
        n_layers=config.n_layer,
        n_ctx=config.block_size,
        n_heads=config.n_head,
        d_mlp=config.mlp_width,
        d_vocab=config.vocab_size,
        d_vocab_out=config.vocab_size,
        device="cpu",
        positional_embedding_type=_TL_POSITIONS[config.positional],
        n_key_value_heads=config.kv_heads if config.kv_heads != config.n_head else None,
        attn_only=not config.use_mlp,
        gated_mlp=config.gated_mlp,
        uses_rms_norm=config.norm == "rmsnorm",
        eps=config.norm_eps,
        act_fn=_TL_ACTS[config.mlp],
        normalization_type=_TL_NORMS[config.norm],
        final_rms=config.norm == "rmsnorm" and config.use_final_norm,
        default_prepend_bos=False,
        rotary_dim=config.rotary_width if config.positional == "rotary" else None,
        rotary_base=config.rope_base,
        parallel_attn_mlp=config.parallel_block,
        **{name: getattr(config, name) for name in SWITCHES},
    )
