"""The nanolens GPT: nanoGPT's model as a TransformerLens `HookedRootModule`.

The module tree uses TransformerLens' names (`embed`, `pos_embed`, `blocks.{i}.ln1/attn/ln2/mlp`,
`ln_final`, `unembed`) because `HookedRootModule.setup()` names every `HookPoint` by its module
path, so `blocks.0.hook_resid_post` means here what it means in TransformerLens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule

from . import generation, nanogpt
from .attention import Attention, KVCache
from .block import Block, Embed, Unembed
from .checkpoint import TOKENIZER_FILE, load_weights, read_model_dir, save_model
from .config import GPTConfig
from .hook_names import HookNameError, suggest
from .hooks import Dropout, FastCall, HookPoint
from .norms import build_norm
from .positional import build_positional
from .tl_config import tl_config

ReturnType = Literal["logits", "loss", "both", None]

# TransformerLens 4's bridge (and so patching.get_act_patch_direct_path) names the per-head
# attention inputs `blocks.{i}.attn.hook_{q,k,v}_input`; like HookedTransformer, ours sit on the block.
_HOOK_ALIAS = re.compile(r"^(blocks\.\d+)\.attn\.(hook_[qkv]_input)$")


class GPT(FastCall, HookedRootModule):
    """A GPT whose every component is chosen by `GPTConfig`, with TransformerLens hook points.

    >>> model = GPT(GPTConfig(vocab_size=65, n_layer=2, n_head=2, n_embd=32, block_size=16))
    >>> logits, cache = model.run_with_cache(torch.zeros(1, 8, dtype=torch.long))
    >>> cache["blocks.1.hook_resid_post"].shape
    torch.Size([1, 8, 32])
    """

    def __init__(self, config: GPTConfig, tokenizer: Any | None = None) -> None:
        super().__init__()
        self.config = config
        self.cfg = tl_config(config)
        self.tokenizer = tokenizer
        self.loaded_from: Path | None = None  # the checkpoint directory GPT.load read, if any
        self.embed = Embed(config)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        positional = build_positional(config)
        self.pos_embed = positional if getattr(positional, "kind", None) == "additive" else None
        if self.pos_embed is not None:
            self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, self.cfg) for _ in range(config.n_layer))
        self.ln_final = (build_norm(config) if config.use_final_norm else None) or nn.Identity()
        self.unembed = Unembed(config, self.cfg, self.embed.W_E if config.tie_weights else None)
        self._init_weights()
        self.setup()

    # ---- construction ----------------------------------------------------------------------
    def _init_weights(self) -> None:
        """nanoGPT's initialisation: N(0, 0.02), zero biases, residual projections scaled by
        1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed.W_E, std=0.02)
        if not self.config.tie_weights:
            nn.init.normal_(self.unembed.weight, std=0.02)
        depth_scale = 0.02 / (2 * max(self.config.n_layer, 1)) ** 0.5
        for block in self.blocks:
            for proj in (getattr(block.attn, "out", None), getattr(block.mlp, "fc_out", None)):
                if proj is not None:
                    nn.init.normal_(proj.weight, std=depth_scale)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; like nanoGPT, position embeddings are left out by default."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and isinstance(self.pos_embed, nn.Module):
            n -= sum(p.numel() for p in self.pos_embed.parameters())
        return n

    @property
    def device(self) -> torch.device:
        return self.embed.W_E.device

    def _apply(self, fn, recurse: bool = True):  # keep cfg.device/dtype true after .to()/.cuda()
        super()._apply(fn, recurse)
        if self.config.tie_weights and self.unembed.weight is not self.embed.W_E:
            self.unembed.weight = self.embed.W_E  # a move that makes new Parameters (meta -> to_empty) unties them
        self.cfg.device = str(self.embed.W_E.device)
        self.cfg.dtype = self.embed.W_E.dtype
        return self

    # ---- forward ---------------------------------------------------------------------------
    def forward(
        self,
        input: Tensor | str | list[str],
        return_type: ReturnType = "logits",
        targets: Tensor | None = None,
        kv_cache: KVCache | None = None,
        stop_at_layer: int | None = None,
        loss_per_token: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor] | None:
        """Run the model.

        `input`: token ids [batch, pos] (or [pos]), or text when a tokenizer is attached.
        `return_type`: "logits" [batch, pos, d_vocab], "loss" (mean cross-entropy), "both", None.
        `targets`: ids to predict at each position; without them the loss is next-token loss on
        the input itself (as TransformerLens does). `kv_cache`: generation's cache; the input is
        then the tokens after those already cached. `stop_at_layer`: return the residual stream
        entering that block (TransformerLens' convention) and skip the rest of the model.
        """
        tokens = self._as_tokens(input)
        if stop_at_layer is not None and stop_at_layer < 0:  # negative counts from the end, as in TL
            stop_at_layer += len(self.blocks)
        offset = kv_cache.length if kv_cache is not None else 0
        self._check_tokens(tokens, offset)
        x = self.hook_embed(self.embed(tokens))
        if self.pos_embed is not None:
            pos = self.pos_embed(offset, tokens.shape[1]).to(x.dtype)
            x = x + self.hook_pos_embed(pos.expand(tokens.shape[0], -1, -1))
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            if stop_at_layer is not None and i >= stop_at_layer:
                return x
            x = block(x, offset, kv_cache.layers[i] if kv_cache is not None else None)
        if kv_cache is not None:
            kv_cache.advance(tokens.shape[1])
        if stop_at_layer is not None:
            return x
        if return_type is None:
            return None
        logits = self.unembed(self.ln_final(x))
        if return_type == "logits":
            return logits
        loss = self.loss(logits, tokens, targets, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    @staticmethod
    def loss(logits: Tensor, tokens: Tensor, targets: Tensor | None = None, per_token: bool = False) -> Tensor:
        """Cross-entropy against `targets` (ids, -1 = ignore), or next-token loss on `tokens`."""
        if targets is None:
            if tokens.shape[1] < 2:
                raise ValueError("next-token loss needs at least two tokens; pass a longer input or `targets`")
            logits, targets = logits[:, :-1], tokens[:, 1:]
        flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1, reduction="none")
        per_position = flat.view(targets.shape)
        return per_position if per_token else per_position[targets != -1].mean()

    def _check_tokens(self, tokens: Tensor, offset: int) -> None:
        if tokens.dtype not in (torch.long, torch.int, torch.int16, torch.uint8, torch.int8):
            raise TypeError(f"token ids must be an integer tensor, got {tokens.dtype}")
        if tokens.numel() == 0:
            raise ValueError("the input holds no tokens; give at least one token (an empty prompt cannot be run)")
        length = offset + tokens.shape[1]
        if length > self.config.block_size:
            raise ValueError(
                f"input of {length} tokens is longer than the model's context (block_size="
                f"{self.config.block_size}); crop it to its last {self.config.block_size} tokens "
                "(generate() does this for you)"
            )
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got {low}..{high}")

    def _as_tokens(self, input: Tensor | str | Sequence[str]) -> Tensor:
        if isinstance(input, Tensor):
            tokens = input if input.dim() == 2 else input.unsqueeze(0)
            return tokens.to(self.device, torch.long)
        return self.to_tokens(input)

    # ---- tokens (TransformerLens' helpers) -------------------------------------------------
    def _require_tokenizer(self):
        if self.tokenizer is None:
            if self.loaded_from is not None:
                raise ValueError(
                    f"{self.loaded_from / TOKENIZER_FILE} is missing, so this model cannot read or write text; put the "
                    "tokenizer.json of its run back beside config.json (GPT.save and the trainer write one), set "
                    "model.tokenizer, or pass token ids"
                )
            raise ValueError(
                "this model has no tokenizer attached; pass token ids, or set model.tokenizer "
                "(checkpoints loaded with GPT.load carry theirs)"
            )
        return self.tokenizer

    def to_tokens(
        self,
        input: str | Sequence[str],
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        move_to_device: bool = True,
        truncate: bool = False,
    ) -> Tensor:
        """Text -> ids [batch, pos]. A list of texts must tokenize to equal lengths (there is
        no padding here). A BOS token is prepended when the tokenizer has one and asks for it
        (`tokenizer.prepend_bos`, as TransformerLens does for GPT-2, Pythia and Llama), or when
        `prepend_bos=True`; char and BPE tokenizers trained here have none, so for them
        `prepend_bos` is accepted for TransformerLens compatibility and ignored."""
        tok = self._require_tokenizer()
        texts = [input] if isinstance(input, str) else list(input)
        bos = self.bos_tokens(prepend_bos)
        ids = [bos + list(tok.encode(t)) for t in texts]
        if len({len(i) for i in ids}) > 1:
            raise ValueError(
                "texts tokenize to different lengths "
                f"({sorted({len(i) for i in ids})}); pass them one at a time or make them equal length"
            )
        if truncate:
            ids = [i[-self.config.block_size :] for i in ids]
        tokens = torch.tensor(ids, dtype=torch.long)
        return tokens.to(self.device) if move_to_device else tokens

    def bos_tokens(self, prepend_bos: bool | None = None) -> list[int]:
        """What `to_tokens` puts before the text: [BOS id] when the tokenizer has a BOS token and
        asks for it (or `prepend_bos=True`), else []. Code that counts a prompt's tokens with
        `tokenizer.encode` adds `len(model.bos_tokens())` to index `to_tokens`' output."""
        tok = self._require_tokenizer()
        bos_id = getattr(tok, "bos_token_id", None)
        wanted = getattr(tok, "prepend_bos", False) if prepend_bos is None else prepend_bos
        return [bos_id] if wanted and bos_id is not None else []

    def to_string(self, tokens: Tensor | Sequence[int]) -> str | list[str]:
        tok = self._require_tokenizer()
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 2:
            return [tok.decode(row.tolist()) for row in tokens]
        return tok.decode(tokens.reshape(-1).tolist())  # a single id (0-d) too, as TL's test_prompt passes

    def to_str_tokens(self, input: str | Tensor | Sequence[int], prepend_bos: bool | None = None) -> list[str]:
        tok = self._require_tokenizer()
        if isinstance(input, str):
            ids = self.to_tokens(input, prepend_bos=prepend_bos, move_to_device=False)[0].tolist()
        else:
            ids = torch.as_tensor(input).flatten().tolist()
        return [tok.decode([i]) for i in ids]

    def to_single_token(self, string: str) -> int:
        ids = self._require_tokenizer().encode(string)
        if len(ids) != 1:
            raise ValueError(f"{string!r} is {len(ids)} tokens, not one")
        return ids[0]

    def tokens_to_residual_directions(self, tokens: str | int | Tensor) -> Tensor:
        """The unembedding direction(s) of token(s): [d_model] or [..., d_model]."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        if isinstance(tokens, int):
            return self.W_U[:, tokens]
        return self.W_U[:, tokens.to(self.device)].movedim(0, -1)

    # ---- TransformerLens weight layout -----------------------------------------------------
    @property
    def W_E(self) -> Tensor:
        return self.embed.W_E

    @property
    def W_pos(self) -> Tensor:
        if self.pos_embed is None:
            raise AttributeError(f"a model with positional={self.config.positional!r} has no W_pos")
        return self.pos_embed.W_pos

    @property
    def W_U(self) -> Tensor:
        return self.unembed.W_U

    @property
    def b_U(self) -> Tensor:
        return self.unembed.b_U

    def _stack(self, part: str, attr: str) -> Tensor:
        modules = [getattr(b, part) for b in self.blocks]
        if any(m is None for m in modules) or not modules:
            raise AttributeError(f"this model has no {part} in every block, so no stacked {attr}")
        return torch.stack([getattr(m, attr) for m in modules])

    W_Q = property(lambda self: self._stack("attn", "W_Q"))
    W_K = property(lambda self: self._stack("attn", "W_K"))
    W_V = property(lambda self: self._stack("attn", "W_V"))
    W_O = property(lambda self: self._stack("attn", "W_O"))
    b_Q = property(lambda self: self._stack("attn", "b_Q"))
    b_K = property(lambda self: self._stack("attn", "b_K"))
    b_V = property(lambda self: self._stack("attn", "b_V"))
    b_O = property(lambda self: self._stack("attn", "b_O"))
    W_in = property(lambda self: self._stack("mlp", "W_in"))
    W_out = property(lambda self: self._stack("mlp", "W_out"))
    b_in = property(lambda self: self._stack("mlp", "b_in"))
    b_out = property(lambda self: self._stack("mlp", "b_out"))

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> Tensor:
        """Sum of the output biases written into the residual stream before `layer`."""
        total = self.W_E.new_zeros(self.config.n_embd)
        for block in self.blocks[:layer]:
            if isinstance(block.attn, Attention):
                total = total + block.attn.b_O
            if include_mlp_biases and block.mlp is not None:
                total = total + block.mlp.b_out
        if mlp_input and isinstance(self.blocks[layer].attn, Attention):
            total = total + self.blocks[layer].attn.b_O
        return total

    def tl_parameters(self) -> dict[str, Tensor]:
        """Weights under TransformerLens' names (`blocks.0.attn.W_Q`, `unembed.W_U`, ...), as
        TransformerLens' `SVDInterpreter` reads them. Grouped K/V heads are repeated to one per
        query head, as TransformerLens does, so `W_V[h] @ W_O[h]` is head h's OV circuit."""
        params = {"embed.W_E": self.W_E, "unembed.W_U": self.W_U, "unembed.b_U": self.b_U}
        if self.pos_embed is not None and hasattr(self.pos_embed, "W_pos"):
            params["pos_embed.W_pos"] = self.W_pos
        norms = {"ln_final": self.ln_final}
        for i, block in enumerate(self.blocks):
            norms.update({f"blocks.{i}.ln1": getattr(block, "ln1", None), f"blocks.{i}.ln2": getattr(block, "ln2", None)})
            if isinstance(block.attn, Attention):
                for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
                    value = getattr(block.attn, name)
                    if name[2] in "KV" and block.attn.group > 1:
                        value = value.repeat_interleave(block.attn.group, dim=0)
                    params[f"blocks.{i}.attn.{name}"] = value
            if block.mlp is not None:
                for name in ("W_in", "W_out", "b_in", "b_out") + (("W_gate",) if block.mlp.gated else ()):
                    params[f"blocks.{i}.mlp.{name}"] = getattr(block.mlp, name)
        for prefix, norm in norms.items():
            for name in ("w", "b"):
                if isinstance(getattr(norm, name, None), Tensor):
                    params[f"{prefix}.{name}"] = getattr(norm, name)
        return params

    # ---- hooks -----------------------------------------------------------------------------
    def hook_names(self) -> list[str]:
        """Every hook point's name (some fire only behind cfg switches: see DESIGN.md)."""
        return list(self.hook_dict)

    def attached_hooks(self) -> dict[str, int]:
        """How many hooks (forward + backward, permanent included) each hook point holds now."""
        return {name: len(handles) for name, handles in self.list_hooks().items()}

    def check_hook_name(self, name: str) -> None:
        """Raise HookNameError, suggesting the closest real names, if `name` is not a hook point."""
        if name in self.hook_dict:
            return
        raise HookNameError(
            f"no hook point named {name!r}{suggest(name, list(self.hook_dict))} "
            f"(model.hook_names() lists all {len(self.hook_dict)})"
        )

    def _check_names_filter(self, names_filter) -> None:
        names = [names_filter] if isinstance(names_filter, str) else names_filter
        if isinstance(names, (list, tuple, set)):
            for name in names:
                self.check_hook_name(name)

    def resolve_hook_name(self, name: str) -> str:
        """A hook name, with TransformerLens 4's `blocks.{i}.attn.hook_q_input` (k, v) aliases
        mapped to ours, `blocks.{i}.hook_q_input`."""
        alias = _HOOK_ALIAS.match(name)
        return f"{alias.group(1)}.{alias.group(2)}" if alias and name not in self.hook_dict else name

    def add_hook(self, name, hook, dir="fwd", is_permanent=False, level=None, prepend=False) -> None:
        if isinstance(name, str):
            name = self.resolve_hook_name(name)
            self.check_hook_name(name)
        super().add_hook(name, hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def _enable_hook_with_name(self, name: str, hook: Callable, dir) -> None:
        name = self.resolve_hook_name(name)
        self.check_hook_name(name)
        super()._enable_hook_with_name(name, hook, dir)

    def remove_all_hook_fns(self, direction="both", including_permanent: bool = False, level: int | None = None) -> None:
        """TransformerLens' version, visiting only hook points that hold a hook: it runs at the
        end of every `hooks()` context (`run_with_cache`, `run_with_hooks`, `generate`), and
        rewriting the empty hook lists of all ~100 points cost about 1 ms each time."""
        for hp in self.hook_points():
            if hp.fwd_hooks or hp.bwd_hooks:
                hp.remove_hooks(direction, including_permanent=including_permanent, level=level)

    def run_with_cache(
        self, *model_args: Any, names_filter=None, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs: Any
    ) -> tuple[Any, ActivationCache | dict[str, Tensor]]:
        """Run and cache activations; returns (output, ActivationCache) as TransformerLens'
        HookedTransformer did (`return_cache_object=False` gives the plain dict)."""
        self._check_names_filter(names_filter)
        out, cache = super().run_with_cache(*model_args, names_filter=names_filter, remove_batch_dim=remove_batch_dim, **kwargs)
        if return_cache_object:
            cache = ActivationCache(cache, self, has_batch_dim=not remove_batch_dim)
        return out, cache

    # TransformerLens' runtime switches for the optional hook points.
    def _set_switch(self, name: str, value: bool) -> None:
        setattr(self.cfg, name, bool(value))
        setattr(self.config, name, bool(value))

    def set_use_attn_result(self, use: bool) -> None:
        self._set_switch("use_attn_result", use)

    def set_use_split_qkv_input(self, use: bool) -> None:
        self._set_switch("use_split_qkv_input", use)

    def set_use_attn_in(self, use: bool) -> None:
        self._set_switch("use_attn_in", use)

    def set_use_hook_mlp_in(self, use: bool) -> None:
        self._set_switch("use_hook_mlp_in", use)

    def set_use_hook_unembed(self, use: bool) -> None:
        self._set_switch("use_hook_unembed", use)

    # ---- generation, persistence (implemented in their own modules) ------------------------
    def new_kv_cache(self, capacity: int | None = None) -> KVCache:
        return KVCache(self.config.n_layer, capacity or self.config.block_size)

    def generate(self, input: Tensor | str | list[str], max_new_tokens: int = 100, **kwargs: Any):
        """Sample a continuation; see `nanolens.models.generation.generate` for every option."""
        return generation.generate(self, input, max_new_tokens=max_new_tokens, **kwargs)

    def generate_stream(self, input: Tensor | str, max_new_tokens: int = 100, **kwargs: Any) -> Iterator:
        """Like `generate`, but yields each new piece as soon as it is sampled."""
        return generation.generate_stream(self, input, max_new_tokens=max_new_tokens, **kwargs)

    def save(self, directory: str | Path) -> Path:
        """Write config.json + model.safetensors (+ tokenizer.json) atomically to `directory`."""
        return save_model(self, directory)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = None) -> "GPT":
        """Load a checkpoint directory written by `save` (or the trainer), in eval mode."""
        config, tokenizer = read_model_dir(directory)
        model = cls(config, tokenizer=tokenizer)
        load_weights(model, directory)
        model.loaded_from = Path(directory)  # where it came from: errors name its files
        model.eval()
        return model.to(device) if device is not None else model

    @classmethod
    def from_hf(
        cls,
        source: Any,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        tokenizer: Any = None,
        revision: str | None = None,
    ) -> "GPT":
        """Open a Hugging Face causal LM (GPT-2, Llama / Mistral / Qwen2, GPT-NeoX / Pythia): a
        checkpoint directory, a `transformers` model object or a hub name. See `nanolens.models.hf`."""
        from .hf import from_hf  # on use: interop (and huggingface_hub behind it) stays out of every model import

        return from_hf(cls, source, dtype=dtype, device=device, tokenizer=tokenizer, revision=revision)

    def to_hf(self, directory: str | Path) -> Path:
        """Write this model as a Hugging Face checkpoint (GPT-2, Llama or GPT-NeoX format) that
        `transformers.AutoModelForCausalLM.from_pretrained(directory)` loads."""
        from .hf_export import to_hf  # on use, as from_hf

        return to_hf(self, directory)

    @classmethod
    def from_nanogpt(cls, path: str | Path, tokenizer: Any | None = None) -> "GPT":
        """Load a nanoGPT `ckpt.pt` (read with `torch.load(weights_only=True)`) as a gpt2-preset model."""
        config, state = nanogpt.read_nanogpt(path)
        model = cls(config, tokenizer=tokenizer)
        model.load_state_dict(nanogpt.translate_state(state, model.state_dict(), path), strict=True)
        return model.eval()

    def to_nanogpt(self, path: str | Path) -> Path:
        """Write this (gpt2-preset) model as a nanoGPT `ckpt.pt` with `model_args` and `model`."""
        return nanogpt.to_nanogpt(self, path)


def load_model(directory: str | Path, device: str | torch.device | None = None) -> GPT:
    """`GPT.load`: a checkpoint directory written by `save_model` (or the trainer)."""
    return GPT.load(directory, device=device)
