"""What a model costs to run, counted from its config: FLOPs per token and KV-cache bytes.

Training FLOPs per token follow nanoGPT's `estimate_mfu` (PaLM's appendix B): 6 FLOPs per
weight of every matrix multiply (2 forward, 4 backward), counting the unembedding but not the
embedding lookup, plus attention's own 12 x n_layer x n_embd x context (scores and the
weighted sum, forward and backward). A forward pass alone is a third of that.
"""

from __future__ import annotations

from .config import GPTConfig


def matmul_params(config: GPTConfig) -> int:
    """Weights that take part in a matrix multiply per token: attention, MLP, unembedding."""
    d, per_block = config.n_embd, 0
    if config.use_attn and config.attention != "average":
        kv = config.kv_heads * config.d_head
        per_block += d * (d + 2 * kv) + d * d  # q, k, v in; the output projection
    if config.use_mlp:
        per_block += (3 if config.gated_mlp else 2) * d * config.mlp_width
    return config.n_layer * per_block + config.vocab_size * d


def attention_flops(config: GPTConfig, context: int | None = None) -> int:
    """Forward FLOPs per token of attention's scores and weighted sum at `context` tokens."""
    if not config.use_attn or config.n_layer == 0:
        return 0
    return 4 * config.n_layer * config.n_embd * (context or config.block_size)


def train_flops_per_token(config: GPTConfig, context: int | None = None) -> int:
    """FLOPs per token of a training step (forward and backward) at `context` tokens."""
    return 6 * matmul_params(config) + 3 * attention_flops(config, context)


def forward_flops_per_token(config: GPTConfig, context: int | None = None) -> int:
    """FLOPs per token of a forward pass (one decode step attends to `context` cached tokens)."""
    return 2 * matmul_params(config) + attention_flops(config, context)


def kv_cache_bytes_per_token(config: GPTConfig, bytes_per_value: int = 4) -> int:
    """What the KV cache holds per token: keys and values of every layer's K/V heads."""
    if not config.use_attn or config.attention == "average":
        return 0
    return 2 * config.n_layer * config.kv_heads * config.d_head * bytes_per_value
