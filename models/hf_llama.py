"""The Llama family (`LlamaForCausalLM`: SmolLM2, TinyLlama, Llama 3.x; `MistralForCausalLM`;
`Qwen2ForCausalLM`) <-> nanolens.

One block for all three: rotary positions in the `rotate_half` layout (ours), RMSNorm, a gated
MLP (act(gate) * up), grouped-query attention, `rope_theta` and RoPE scaling, and tied or
untied unembedding (a file without `lm_head.weight` is tied). They differ only in biases:
Qwen2 has q/k/v biases and no others, Llama has `attention_bias` (q/k/v/o) and `mlp_bias`,
Mistral none. Separate q/k/v projections fill our fused `qkv` matrix, row blocks q | k | v.
A sliding window (Mistral, some Qwen2) equals full attention on texts no longer than the
window, so the context is capped at the window.
"""

from __future__ import annotations

import re
from typing import Any

from .config import GATED_MLPS, GPTConfig
from .hf_family import GATED_ACTIVATIONS, Family, Piece, hf_extra, refuse, refuse_export, require, rope_settings, rope_to_hf

_ROTARY_BUFFER = re.compile(r"^layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")
_OUR_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu"}


def config_from_hf(hf: dict[str, Any], names: set[str]) -> GPTConfig:
    vocab, width, layers, heads, d_mlp = require(
        hf, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim * heads != width:
        raise refuse("head_dim", head_dim, f"nanolens needs head_dim = hidden_size / num_attention_heads "
                                           f"({width} / {heads})")
    activation = hf.get("hidden_act", "silu")
    if activation not in GATED_ACTIVATIONS:
        raise refuse("hidden_act", activation, f"supported: {', '.join(GATED_ACTIVATIONS)}")
    theta, scaling, fraction = rope_settings(hf)
    if fraction != 1.0:
        raise refuse("partial_rotary_factor", fraction, "Llama-family blocks rotate whole heads here")
    model_type = hf.get("model_type")
    if model_type == "qwen2":
        bias, qkv_bias, mlp_bias = False, True, False
    else:
        bias = bool(hf.get("attention_bias", False))
        qkv_bias, mlp_bias = None, bool(hf.get("mlp_bias", False))
    kv_heads = hf.get("num_key_value_heads") or heads
    context = hf.get("max_position_embeddings") or 2048
    window = hf.get("sliding_window")
    if window and (model_type != "qwen2" or hf.get("use_sliding_window")):
        context = min(context, int(window))
    return GPTConfig(
        vocab_size=vocab, block_size=context, n_layer=layers, n_head=heads, n_embd=width,
        n_kv_head=None if kv_heads == heads else kv_heads, d_mlp=d_mlp, positional="rotary", rope_base=theta,
        rope_scaling=scaling, norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6),
        mlp=GATED_ACTIVATIONS[activation], bias=bias, qkv_bias=qkv_bias, mlp_bias=mlp_bias,
        tie_weights=bool(hf.get("tie_word_embeddings", False)) or "lm_head.weight" not in names,
        dropout=float(hf.get("attention_dropout") or 0.0), extra=hf_extra(hf),
    )


def pieces(config: GPTConfig) -> list[Piece]:
    """Llama's tensors. Biases: q/k/v with `has_qkv_bias`, o_proj with `bias` (Llama's
    attention_bias sets both; Qwen2 has only the first), the MLP's with `has_mlp_bias`."""
    q, kv = config.n_head * config.d_head, config.kv_heads * config.d_head
    out = [Piece("embed_tokens.weight", "embed.W_E"), Piece("norm.weight", "ln_final.w")]
    if not config.tie_weights:
        out.append(Piece("lm_head.weight", "unembed.weight"))
    for i in range(config.n_layer):
        layer, block = f"layers.{i}", f"blocks.{i}"
        out += [Piece(f"{layer}.input_layernorm.weight", f"{block}.ln1.w"),
                Piece(f"{layer}.post_attention_layernorm.weight", f"{block}.ln2.w"),
                Piece(f"{layer}.self_attn.o_proj.weight", f"{block}.attn.out.weight"),
                Piece(f"{layer}.mlp.gate_proj.weight", f"{block}.mlp.fc_gate.weight"),
                Piece(f"{layer}.mlp.up_proj.weight", f"{block}.mlp.fc_in.weight"),
                Piece(f"{layer}.mlp.down_proj.weight", f"{block}.mlp.fc_out.weight")]
        kinds = ("weight", "bias") if config.has_qkv_bias else ("weight",)
        for kind in kinds:
            for name, rows in (("q_proj", (0, q)), ("k_proj", (q, q + kv)), ("v_proj", (q + kv, q + 2 * kv))):
                out.append(Piece(f"{layer}.self_attn.{name}.{kind}", f"{block}.attn.qkv.{kind}", rows=rows))
        if config.bias:
            out.append(Piece(f"{layer}.self_attn.o_proj.bias", f"{block}.attn.out.bias"))
        if config.has_mlp_bias:
            out += [Piece(f"{layer}.mlp.{name}.bias", f"{block}.mlp.{ours}.bias")
                    for name, ours in (("gate_proj", "fc_gate"), ("up_proj", "fc_in"), ("down_proj", "fc_out"))]
    return out


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """Llama's (or, with q/k/v biases only, Qwen2's) config.json, or a refusal naming the field."""
    if config.norm != "rmsnorm":
        raise refuse_export("norm", config.norm, "Llama uses RMSNorm (a learned-position LayerNorm model exports as GPT-2)")
    if config.mlp not in GATED_MLPS:
        raise refuse_export("mlp", config.mlp, f"Llama's MLP is gated: one of {', '.join(_OUR_ACTIVATIONS)}")
    if config.rotary_dim is not None and config.rotary_dim != config.d_head:
        raise refuse_export("rotary_dim", config.rotary_dim, "Llama rotates whole heads")
    if config.has_qkv_bias and not config.bias:
        if config.has_mlp_bias:
            raise refuse_export("mlp_bias", True, "Qwen2 (q/k/v biases only) has no MLP biases")
        architecture, model_type, extra = "Qwen2ForCausalLM", "qwen2", {"use_sliding_window": False, "sliding_window": None}
    else:
        if config.bias and not config.has_qkv_bias:
            raise refuse_export("qkv_bias", False, "Llama's attention_bias covers q, k, v and o together")
        architecture, model_type = "LlamaForCausalLM", "llama"
        extra = {"attention_bias": config.bias, "mlp_bias": config.has_mlp_bias}
    return {
        "architectures": [architecture], "model_type": model_type, "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd, "intermediate_size": config.mlp_width, "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head, "num_key_value_heads": config.kv_heads, "head_dim": config.d_head,
        "max_position_embeddings": config.block_size, "rms_norm_eps": config.norm_eps,
        "hidden_act": _OUR_ACTIVATIONS[config.mlp], "attention_dropout": config.dropout,
        "tie_word_embeddings": config.tie_weights, "use_cache": True, **rope_to_hf(config), **extra,
    }


FAMILY = Family(
    name="llama", architectures=("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"),
    model_types=("llama", "mistral", "qwen2"), prefix="model.", head="lm_head.weight",
    config_from_hf=config_from_hf, pieces=pieces, ignored=lambda name: bool(_ROTARY_BUFFER.match(name)),
)
