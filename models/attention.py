"""Causal self-attention: multi-head, grouped-query and multi-query (by `n_kv_head`), plus the
parameter-free `average` attention of the ladder's second rung.

Hook points (TransformerLens names): `hook_q`, `hook_k`, `hook_v` [batch, pos, head, d_head]
(keys and values have `n_kv_head` heads), `hook_rot_q`/`hook_rot_k` (rotary only),
`hook_attn_scores` and `hook_pattern` [batch, head, query_pos, key_pos], `hook_z`
[batch, pos, head, d_head], and `hook_result` [batch, pos, head, d_model] when
`cfg.use_attn_result` is on.

Speed: unless something hooks `hook_attn_scores` or `hook_pattern` (a user's hook or
`run_with_cache`), attention runs as one fused `scaled_dot_product_attention` call and the
[query, key] pattern is never materialised.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import GPTConfig
from .hooks import Dropout, FastCall, HookPoint, Linear, is_observed
from .positional import build_positional
from .registry import Registry

ATTENTION: Registry[type[nn.Module]] = Registry("attention")


class LayerKV:
    """One layer's cached keys and values, preallocated so a decode step never copies the past."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v of shape [batch, kv_head, new_pos, d] and return all keys/values so far."""
        new = k.shape[2]
        if self.k is None:
            shape = (k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self.k = k.new_empty(shape)
            self.v = v.new_empty(shape[:3] + (v.shape[3],))
        if self.length + new > self.capacity:
            raise RuntimeError(
                f"KV cache holds at most {self.capacity} positions; generation must crop or reset it"
            )
        self.k[:, :, self.length : self.length + new] = k
        self.v[:, :, self.length : self.length + new] = v
        self.length += new
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


class KVCache:
    """Keys and values of every layer for the tokens seen so far.

    With a cache, after the prompt each step passes only the newest token through the model, so
    hooks then see activations of shape [batch, 1, ...].
    """

    def __init__(self, n_layers: int, capacity: int) -> None:
        self.layers = [LayerKV(capacity) for _ in range(n_layers)]
        self.capacity = capacity
        self.length = 0  # positions already stored (the offset of the next token)

    def advance(self, new_positions: int) -> None:
        self.length += new_positions


def causal_mask(q_len: int, k_len: int, device: torch.device) -> Tensor:
    """Boolean [q_len, k_len] mask, True where a query (the last q_len of k_len positions) may look."""
    offset = k_len - q_len
    q = torch.arange(offset, k_len, device=device)[:, None]
    k = torch.arange(k_len, device=device)[None, :]
    return k <= q


@ATTENTION.register("multi_head")
class Attention(FastCall):
    """Causal multi-head attention with `n_kv_head` key/value heads shared by groups of queries
    (`n_kv_head == n_head`: multi-head; `1`: multi-query; in between: grouped-query)."""

    def __init__(self, cfg: GPTConfig, switches: Any) -> None:
        super().__init__()
        self.switches = switches  # the model's shared `cfg`, read for `use_attn_result`
        self.n_heads, self.n_kv_heads, self.d_head = cfg.n_head, cfg.kv_heads, cfg.d_head
        self.group = self.n_heads // self.n_kv_heads
        q_width, kv_width = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        self.qkv = Linear(cfg.n_embd, q_width + 2 * kv_width, bias=cfg.has_qkv_bias)
        self.out = Linear(q_width, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout_p = cfg.dropout
        self.resid_dropout = Dropout(cfg.dropout)
        positional = build_positional(cfg)
        self.rotary = positional if getattr(positional, "kind", None) == "rotary" else None
        self.alibi = positional if getattr(positional, "kind", None) == "bias" else None

        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        if self.rotary is not None:
            self.hook_rot_q, self.hook_rot_k = HookPoint(), HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()
        self.hook_result = HookPoint()

    # ---- TransformerLens weight layout (views of the fused Linear weights) -----------------
    def _split(self, t: Tensor, dim: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """The query, key and value parts of a fused qkv weight, bias or activation."""
        q_width, kv_width = self.n_heads * self.d_head, self.n_kv_heads * self.d_head
        return t.split([q_width, kv_width, kv_width], dim=dim)

    def _heads_weight(self, rows: Tensor) -> Tensor:  # [head * d_head, d_model] -> [head, d_model, d_head]
        return rows.view(-1, self.d_head, rows.shape[-1]).transpose(1, 2)

    @property
    def W_Q(self) -> Tensor:
        return self._heads_weight(self._split(self.qkv.weight)[0])

    @property
    def W_K(self) -> Tensor:
        return self._heads_weight(self._split(self.qkv.weight)[1])

    @property
    def W_V(self) -> Tensor:
        return self._heads_weight(self._split(self.qkv.weight)[2])

    @property
    def W_O(self) -> Tensor:  # [head, d_head, d_model]
        return self.out.weight.view(-1, self.n_heads, self.d_head).permute(1, 2, 0)

    def _bias_part(self, index: int) -> Tensor:
        if self.qkv.bias is None:
            n = self.n_heads if index == 0 else self.n_kv_heads
            return self.qkv.weight.new_zeros(n, self.d_head)
        return self._split(self.qkv.bias)[index].view(-1, self.d_head)

    @property
    def b_Q(self) -> Tensor:
        return self._bias_part(0)

    @property
    def b_K(self) -> Tensor:
        return self._bias_part(1)

    @property
    def b_V(self) -> Tensor:
        return self._bias_part(2)

    @property
    def b_O(self) -> Tensor:
        if self.out.bias is None:
            return self.out.weight.new_zeros(self.out.out_features)
        return self.out.bias

    # ---- forward ---------------------------------------------------------------------------
    def project(self, x: Tensor | None, per_head: tuple[Tensor, Tensor, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys, values [batch, pos, head, d_head] from x [batch, pos, d_model], or from
        per-head inputs [batch, pos, head, d_model] (TransformerLens' split-qkv-input mode)."""
        if per_head is None:
            b, t, _ = x.shape
            qkv = self.qkv(x).view(b, t, self.n_heads + 2 * self.n_kv_heads, self.d_head)
            return qkv.split_with_sizes((self.n_heads, self.n_kv_heads, self.n_kv_heads), dim=2)
        q_in, k_in, v_in = per_head
        q = torch.einsum("bphm,hmd->bphd", q_in, self.W_Q) + self.b_Q
        k = torch.einsum("bphm,hmd->bphd", k_in, self.W_K) + self.b_K
        v = torch.einsum("bphm,hmd->bphd", v_in, self.W_V) + self.b_V
        return q, k, v

    def forward(
        self,
        x: Tensor | None,
        offset: int = 0,
        cache: LayerKV | None = None,
        per_head: tuple[Tensor, Tensor, Tensor] | None = None,
    ) -> Tensor:
        q, k, v = self.project(x, per_head)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        if self.rotary is not None:
            q = self.hook_rot_q(self.rotary(q, offset))
            k = self.hook_rot_k(self.rotary(k, offset))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [batch, head, pos, d]
        if cache is not None:
            k, v = cache.append(k, v)
        if is_observed(self.hook_attn_scores, self.hook_pattern):
            z = self._materialised(q, k, v, offset)
        else:
            z = self._fused(q, k, v, offset)
        z = self.hook_z(z.transpose(1, 2))  # [batch, pos, head, d_head]
        if self.switches.use_attn_result:
            result = self.hook_result(torch.einsum("bphd,hdm->bphm", z, self.W_O))
            out = result.sum(dim=2) + self.b_O
        else:
            out = self.out(z.reshape(z.shape[0], z.shape[1], -1))
        return self.resid_dropout(out)

    def _fused(self, q: Tensor, k: Tensor, v: Tensor, offset: int) -> Tensor:
        q_len, k_len = q.shape[2], k.shape[2]
        mask, is_causal = None, False
        if self.alibi is not None:
            mask = self.alibi(q_len, k_len, offset).to(q.dtype)
            mask = mask.masked_fill(~causal_mask(q_len, k_len, q.device), float("-inf"))
        elif q_len == k_len:
            is_causal = True
        elif q_len > 1:
            mask = causal_mask(q_len, k_len, q.device)
        if self.group > 1:
            k, v = k.repeat_interleave(self.group, dim=1), v.repeat_interleave(self.group, dim=1)
        dropout = self.attn_dropout_p if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)

    def _materialised(self, q: Tensor, k: Tensor, v: Tensor, offset: int) -> Tensor:
        q_len, k_len = q.shape[2], k.shape[2]
        if self.group > 1:
            k, v = k.repeat_interleave(self.group, dim=1), v.repeat_interleave(self.group, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        if self.alibi is not None:
            scores = scores + self.alibi(q_len, k_len, offset).to(scores.dtype)
        scores = scores.masked_fill(~causal_mask(q_len, k_len, q.device), float("-inf"))
        # softmax in float32 whatever the model's dtype (as Hugging Face does), back to it after
        weights = torch.softmax(self.hook_attn_scores(scores), dim=-1, dtype=torch.float32).to(scores.dtype)
        pattern = self.hook_pattern(weights)
        pattern = F.dropout(pattern, self.attn_dropout_p, self.training)
        return pattern @ v


@ATTENTION.register("average")
class AverageAttention(FastCall):
    """Every position takes the plain mean of the (values =) inputs at and before it.

    No parameters: the ladder's rung that shows context helps even before attention learns
    *where* to look. `hook_pattern` shows the uniform causal weights.
    """

    def __init__(self, cfg: GPTConfig, switches: Any = None) -> None:
        super().__init__()
        self.hook_pattern = HookPoint()  # [batch, 1, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, 1, d_model]

    def forward(self, x: Tensor, offset: int = 0, cache: LayerKV | None = None, per_head=None) -> Tensor:
        values = x.unsqueeze(1)  # [batch, 1 head, pos, d_model]
        if cache is not None:
            values = cache.append(values, values)[1]
        q_len, k_len = x.shape[1], values.shape[2]
        allowed = causal_mask(q_len, k_len, x.device).to(x.dtype)
        pattern = self.hook_pattern((allowed / allowed.sum(-1, keepdim=True)).expand(x.shape[0], 1, q_len, k_len))
        z = self.hook_z((pattern @ values).transpose(1, 2))
        return z.squeeze(2)
