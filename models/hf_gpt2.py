"""GPT-2 (`GPT2LMHeadModel`: gpt2, distilgpt2, gpt2-medium/large/xl) <-> nanolens.

GPT-2's block is nanoGPT's (learned positions, pre-LayerNorm with biases, tied embeddings) with
two differences that matter for parity: its GELU is the tanh approximation (`gelu_new`, our
`mlp="gelu_tanh"`), and its Conv1D layers store weights transposed ([in, out]). The causal-mask
buffers old files carry (`attn.bias`, `attn.masked_bias`) are not weights and are dropped.
"""

from __future__ import annotations

import re
from typing import Any

from .config import GATED_MLPS, GPTConfig
from .hf_family import PLAIN_ACTIVATIONS, Family, Piece, hf_extra, refuse, refuse_export, require
from .nanogpt import GPT2_GLOBAL_NAMES, GPT2_LAYER_NAMES

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_MASK_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
_OUR_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "relu2": "relu2", "silu": "silu"}


def config_from_hf(hf: dict[str, Any], names: set[str]) -> GPTConfig:
    vocab, width, layers, heads = require(hf, "vocab_size", "n_embd", "n_layer", "n_head")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in PLAIN_ACTIVATIONS:
        raise refuse("activation_function", activation, f"supported: {', '.join(PLAIN_ACTIVATIONS)}")
    if not hf.get("scale_attn_weights", True) or hf.get("scale_attn_by_inverse_layer_idx", False):
        raise refuse("scale_attn_weights / scale_attn_by_inverse_layer_idx",
                     (hf.get("scale_attn_weights"), hf.get("scale_attn_by_inverse_layer_idx")),
                     "only GPT-2's standard 1/sqrt(d_head) attention scale is supported")
    if hf.get("add_cross_attention"):
        raise refuse("add_cross_attention", True, "cross-attention (an encoder-decoder GPT-2) is not a causal LM")
    return GPTConfig(
        vocab_size=vocab, block_size=hf.get("n_positions") or hf.get("n_ctx") or 1024,
        n_layer=layers, n_head=heads, n_embd=width, d_mlp=hf.get("n_inner"),
        positional="learned", norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        mlp=PLAIN_ACTIVATIONS[activation], bias=True,
        tie_weights=bool(hf.get("tie_word_embeddings", True)) or "lm_head.weight" not in names,
        dropout=float(hf.get("resid_pdrop") or 0.0), extra=hf_extra(hf),
    )


def pieces(config: GPTConfig) -> list[Piece]:
    out = [Piece(theirs.removeprefix("transformer."), ours) for theirs, ours in GPT2_GLOBAL_NAMES.items()
           if theirs != "lm_head.weight" or not config.tie_weights]
    for i in range(config.n_layer):
        for theirs, ours in GPT2_LAYER_NAMES.items():
            out.append(Piece(f"h.{i}.{theirs}", f"blocks.{i}.{ours}", layout="conv1d" if theirs in _CONV1D else "same"))
    return out


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """GPT-2's config.json for a learned-position model, or a refusal naming what it lacks."""
    if config.norm != "layernorm":
        raise refuse_export("norm", config.norm, "GPT-2 uses LayerNorm; a rotary model with norm='rmsnorm' exports as Llama")
    if config.kv_heads != config.n_head:
        raise refuse_export("n_kv_head", config.n_kv_head, "GPT-2 has one key/value head per query head")
    if config.mlp in GATED_MLPS or config.mlp not in _OUR_ACTIVATIONS:
        raise refuse_export("mlp", config.mlp, f"GPT-2's MLP is plain, one of {', '.join(_OUR_ACTIVATIONS)}")
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": config.mlp_width,
        "activation_function": _OUR_ACTIVATIONS[config.mlp], "layer_norm_epsilon": config.norm_eps,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "scale_attn_weights": True, "tie_word_embeddings": config.tie_weights, "use_cache": True,
    }


FAMILY = Family(
    name="gpt2", architectures=("GPT2LMHeadModel",), model_types=("gpt2",), prefix="transformer.",
    head="lm_head.weight", config_from_hf=config_from_hf, pieces=pieces,
    ignored=lambda name: bool(_MASK_BUFFER.match(name)),
)
