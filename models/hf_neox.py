"""GPT-NeoX / Pythia (`GPTNeoXForCausalLM`) <-> nanolens.

Pythia's block: attention and MLP in parallel (`use_parallel_residual`, our `parallel_block`),
each behind its own LayerNorm; rotary positions on only the first `rotary_pct` of each head
(our `rotary_dim`); one fused QKV matrix whose rows are laid out per head (q_h, k_h, v_h, head
after head; ours are all q, then all k, then all v); biases everywhere; an untied unembedding
(`embed_out`). A rotary model with LayerNorm made here exports to this family (a bias it lacks is
written as zeros, which computes the same).
"""

from __future__ import annotations

import re
from typing import Any

from .config import GATED_MLPS, GPTConfig
from .hf_family import PLAIN_ACTIVATIONS, Family, Piece, hf_extra, refuse, refuse_export, require, rope_settings, rope_to_hf

_BUFFERS = re.compile(r"^layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)$")


def config_from_hf(hf: dict[str, Any], names: set[str]) -> GPTConfig:
    vocab, width, layers, heads, d_mlp = require(
        hf, "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    activation = hf.get("hidden_act", "gelu")
    if activation not in PLAIN_ACTIVATIONS:
        raise refuse("hidden_act", activation, f"supported: {', '.join(PLAIN_ACTIVATIONS)}")
    if not hf.get("attention_bias", True):
        raise refuse("attention_bias", False, "GPT-NeoX without attention biases (but with LayerNorm biases) "
                                              "is not supported")
    theta, scaling, fraction = rope_settings(hf, default_fraction=0.25)  # GPT-NeoX's default rotary_pct
    d_head = width // heads
    rotary_dim = int(d_head * fraction)
    return GPTConfig(
        vocab_size=vocab, block_size=hf.get("max_position_embeddings") or 2048, n_layer=layers, n_head=heads,
        n_embd=width, d_mlp=d_mlp, positional="rotary", rope_base=theta, rope_scaling=scaling,
        rotary_dim=None if rotary_dim == d_head else rotary_dim, norm="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-5), mlp=PLAIN_ACTIVATIONS[activation], bias=True,
        parallel_block=bool(hf.get("use_parallel_residual", True)),
        tie_weights=bool(hf.get("tie_word_embeddings", False)) or "embed_out.weight" not in names,
        dropout=float(hf.get("hidden_dropout") or 0.0), extra=hf_extra(hf),
    )


def pieces(config: GPTConfig) -> list[Piece]:
    out = [Piece("embed_in.weight", "embed.W_E"), Piece("final_layer_norm.weight", "ln_final.w"),
           Piece("final_layer_norm.bias", "ln_final.b")]
    if not config.tie_weights:
        out.append(Piece("embed_out.weight", "unembed.weight"))
    names = {"input_layernorm.weight": "ln1.w", "input_layernorm.bias": "ln1.b",
             "post_attention_layernorm.weight": "ln2.w", "post_attention_layernorm.bias": "ln2.b",
             "attention.dense.weight": "attn.out.weight", "attention.dense.bias": "attn.out.bias",
             "mlp.dense_h_to_4h.weight": "mlp.fc_in.weight", "mlp.dense_h_to_4h.bias": "mlp.fc_in.bias",
             "mlp.dense_4h_to_h.weight": "mlp.fc_out.weight", "mlp.dense_4h_to_h.bias": "mlp.fc_out.bias"}
    for i in range(config.n_layer):
        out += [Piece(f"layers.{i}.{theirs}", f"blocks.{i}.{ours}") for theirs, ours in names.items()]
        out += [Piece(f"layers.{i}.attention.query_key_value.{kind}", f"blocks.{i}.attn.qkv.{kind}", layout="neox_qkv")
                for kind in ("weight", "bias")]
    return out


_OUR_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "relu2": "relu2", "silu": "silu"}


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """GPT-NeoX's config.json for a rotary LayerNorm model, or a refusal naming the field."""
    if config.kv_heads != config.n_head:
        raise refuse_export("n_kv_head", config.n_kv_head, "GPT-NeoX has one key/value head per query head")
    if config.mlp in GATED_MLPS or config.mlp not in _OUR_ACTIVATIONS:
        raise refuse_export("mlp", config.mlp, f"GPT-NeoX's MLP is plain, one of {', '.join(_OUR_ACTIVATIONS)}")
    rope = rope_to_hf(config)
    fraction = config.rotary_width / config.d_head
    return {
        "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd, "intermediate_size": config.mlp_width, "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head, "max_position_embeddings": config.block_size,
        "layer_norm_eps": config.norm_eps, "hidden_act": _OUR_ACTIVATIONS[config.mlp],
        "use_parallel_residual": config.parallel_block, "attention_bias": True,
        "rotary_pct": fraction, "partial_rotary_factor": fraction, "rotary_emb_base": config.rope_base,
        **rope, "hidden_dropout": config.dropout, "attention_dropout": config.dropout,
        "tie_word_embeddings": config.tie_weights, "use_cache": True,
    }


FAMILY = Family(
    name="gpt_neox", architectures=("GPTNeoXForCausalLM",), model_types=("gpt_neox",), prefix="gpt_neox.",
    head="embed_out.weight", config_from_hf=config_from_hf, pieces=pieces,
    ignored=lambda name: bool(_BUFFERS.match(name)),
    aliases={"lm_head.weight": "embed_out.weight"},  # transformers 5 names it so in memory
)
