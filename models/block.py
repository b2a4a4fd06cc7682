"""The model's parts besides attention and the MLP: the token embedding, the unembedding,
and the transformer block that joins attention and MLP to the residual stream."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import ATTENTION, Attention
from .config import GPTConfig
from .hooks import FastCall, HookPoint
from .mlp import MLP
from .norms import build_norm
from .tl_config import NanolensTLConfig


class Embed(FastCall):
    """Token embedding table `W_E` [d_vocab, d_model]."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(config.vocab_size, config.n_embd))

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.W_E)


class Unembed(FastCall):
    """Residual stream -> logits. With tied weights it reads the embedding table itself."""

    def __init__(self, config: GPTConfig, switches: NanolensTLConfig, tied: nn.Parameter | None) -> None:
        super().__init__()
        self.switches = switches
        self.weight = tied if tied is not None else nn.Parameter(torch.empty(config.vocab_size, config.n_embd))
        self.hook_in = HookPoint()  # [batch, pos, d_model], with cfg.use_hook_unembed
        self.hook_out = HookPoint()  # [batch, pos, d_vocab], with cfg.use_hook_unembed

    @property
    def W_U(self) -> Tensor:  # [d_model, d_vocab]
        return self.weight.T

    @property
    def b_U(self) -> Tensor:
        return self.weight.new_zeros(self.weight.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        if not self.switches.use_hook_unembed:
            return F.linear(x, self.weight)
        return self.hook_out(F.linear(self.hook_in(x), self.weight))


class Block(FastCall):
    """One transformer block: attention then MLP, each pre- or post-normed, each added to the
    residual stream (or, with `use_residual=False`, replacing it).

    With `parallel_block` (GPT-J, GPT-NeoX / Pythia) attention and MLP both read the block's
    input, each through its own norm, and both outputs are added at once; there is then no
    `hook_resid_mid`, as in TransformerLens' parallel blocks."""

    # TransformerLens' logit lens reads this: hook_resid_post is the one stream ln_final reads.
    hook_out_is_single_residual_stream = True

    def __init__(self, config: GPTConfig, switches: NanolensTLConfig) -> None:
        super().__init__()
        self.switches = switches
        self.pre_norm = config.norm_position == "pre"
        self.residual = config.use_residual
        self.parallel = config.parallel_block
        self.hook_resid_pre = HookPoint()
        self.attn = self.mlp = None
        if config.use_attn:
            self.ln1 = build_norm(config) or nn.Identity()
            self.attn = ATTENTION[config.attention](config, switches)
            if isinstance(self.attn, Attention):
                self.hook_attn_in = HookPoint()  # [batch, pos, head, d_model], with cfg.use_attn_in
                self.hook_q_input, self.hook_k_input, self.hook_v_input = HookPoint(), HookPoint(), HookPoint()
            self.hook_attn_out = HookPoint()
        if not self.parallel:
            self.hook_resid_mid = HookPoint()
        if config.use_mlp:
            self.ln2 = build_norm(config) or nn.Identity()
            self.mlp = MLP(config)
            self.hook_mlp_in = HookPoint()  # with cfg.use_hook_mlp_in
            self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: Tensor, offset: int = 0, cache=None) -> Tensor:
        x = self.hook_resid_pre(x)
        if self.parallel:
            attn_out = self.hook_attn_out(self._attend(x, offset, cache))
            mlp_in = self.hook_mlp_in(x.clone()) if self.switches.use_hook_mlp_in else x
            mlp_out = self.hook_mlp_out(self.mlp(self.ln2(mlp_in)))
            return self.hook_resid_post(mlp_out + attn_out + x)  # Hugging Face's order of the sum
        if self.attn is not None:
            x = self._add(x, self.hook_attn_out(self._attend(x, offset, cache)), self.ln1)
        x = self.hook_resid_mid(x)
        if self.mlp is not None:
            mlp_in = self.hook_mlp_in(x.clone()) if self.switches.use_hook_mlp_in else x
            x = self._add(x, self.hook_mlp_out(self.mlp(self.ln2(mlp_in) if self.pre_norm else mlp_in)), self.ln2)
        return self.hook_resid_post(x)

    def _add(self, resid: Tensor, out: Tensor, norm: nn.Module) -> Tensor:
        x = resid + out if self.residual else out
        return x if self.pre_norm else norm(x)

    def _attend(self, x: Tensor, offset: int, cache) -> Tensor:
        s = self.switches
        if not (s.use_split_qkv_input or s.use_attn_in) or not isinstance(self.attn, Attention):
            return self.attn(self.ln1(x) if self.pre_norm else x, offset, cache)
        # TransformerLens' per-head input mode: the residual stream copied once per head (hooks
        # see [batch, pos, head, d_model]) and normalised per head before projection.
        def per_head(n: int) -> Tensor:
            return x.unsqueeze(2).expand(-1, -1, n, -1).clone()

        n_q, n_kv = self.attn.n_heads, self.attn.n_kv_heads
        if s.use_split_qkv_input:
            inputs = (self.hook_q_input(per_head(n_q)), self.hook_k_input(per_head(n_kv)), self.hook_v_input(per_head(n_kv)))
        else:
            attn_in = self.hook_attn_in(per_head(n_q))
            kv_in = attn_in[:, :, :: self.attn.group]  # each K/V head reads its group's first head
            inputs = (attn_in, kv_in, kv_in)
        if self.pre_norm:
            inputs = tuple(self.ln1(t) for t in inputs)
        return self.attn(None, offset, cache, per_head=inputs)
