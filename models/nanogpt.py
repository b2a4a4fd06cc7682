"""Translate nanoGPT checkpoints (`ckpt.pt`) in and out of nanolens' gpt2 preset.

nanoGPT stores `{"model_args": {...}, "model": state_dict, ...}` with keys such as
`transformer.h.0.attn.c_attn.weight`; a `torch.compile`d model adds a `_orig_mod.` prefix.
Files are read with `torch.load(weights_only=True)`, so a pickle that would run code is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nanolens.files import atomic_write

from .checkpoint import CheckpointError, load_torch_file
from .config import GPTConfig
from .presets import preset_config

if TYPE_CHECKING:
    from .gpt import GPT

# nanoGPT name -> nanolens name (per layer: under transformer.h.{i}). nanoGPT kept GPT-2's names,
# so Hugging Face's GPT-2 (models/hf_gpt2.py) reads the same table.
GPT2_GLOBAL_NAMES = {
    "transformer.wte.weight": "embed.W_E",
    "transformer.wpe.weight": "pos_embed.W_pos",
    "transformer.ln_f.weight": "ln_final.w",
    "transformer.ln_f.bias": "ln_final.b",
    "lm_head.weight": "unembed.weight",
}
GPT2_LAYER_NAMES = {
    "ln_1.weight": "ln1.w", "ln_1.bias": "ln1.b",
    "attn.c_attn.weight": "attn.qkv.weight", "attn.c_attn.bias": "attn.qkv.bias",
    "attn.c_proj.weight": "attn.out.weight", "attn.c_proj.bias": "attn.out.bias",
    "ln_2.weight": "ln2.w", "ln_2.bias": "ln2.b",
    "mlp.c_fc.weight": "mlp.fc_in.weight", "mlp.c_fc.bias": "mlp.fc_in.bias",
    "mlp.c_proj.weight": "mlp.fc_out.weight", "mlp.c_proj.bias": "mlp.fc_out.bias",
}
_LAYER_KEY = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")
_MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")


def _to_ours(key: str) -> str | None:
    if key in GPT2_GLOBAL_NAMES:
        return GPT2_GLOBAL_NAMES[key]
    match = _LAYER_KEY.match(key)
    if match and match.group(2) in GPT2_LAYER_NAMES:
        return f"blocks.{match.group(1)}.{GPT2_LAYER_NAMES[match.group(2)]}"
    return None


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"no nanoGPT checkpoint at {path}")
    checkpoint = load_torch_file(
        path,
        refused_fix="re-save it from nanoGPT with only tensors and plain values",
        unreadable_fix="give the ckpt.pt that nanoGPT's train.py wrote",
    )
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict)
            and isinstance(checkpoint.get("model_args"), dict)):
        raise CheckpointError(
            f"{path} is not in nanoGPT's format: expected a dict with 'model_args' and 'model' (dicts)"
        )
    return checkpoint


def read_nanogpt(path: str | Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """The gpt2-preset config a nanoGPT checkpoint's `model_args` describe, and its tensors."""
    path = Path(path)
    checkpoint = _read(path)
    args = checkpoint["model_args"]
    missing_args = [a for a in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size") if a not in args]
    if missing_args:
        raise CheckpointError(f"{path}: model_args lacks {missing_args}")
    config = preset_config(
        "gpt2", n_layer=int(args["n_layer"]), n_head=int(args["n_head"]), n_embd=int(args["n_embd"]),
        block_size=int(args["block_size"]), vocab_size=int(args["vocab_size"]),
        bias=bool(args.get("bias", True)), dropout=float(args.get("dropout", 0.0)),
    )
    return config, checkpoint["model"]


def translate_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: str | Path) -> dict[str, torch.Tensor]:
    """nanoGPT's tensors under nanolens' names, every key and shape checked against `expected`
    (the state dict of the model they are for)."""
    translated: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        key = key.removeprefix("_orig_mod.")
        if key.endswith(".attn.bias") and tensor.dim() == 4:  # nanoGPT's causal-mask buffer
            continue
        ours = _to_ours(key)
        if ours is None or ours not in expected:
            unknown.append(key)
            continue
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(tensor.shape)} but model_args imply {tuple(expected[ours].shape)}"
            )
        translated[ours] = tensor
    missing = sorted(set(expected) - set(translated))
    if unknown or missing:
        raise CheckpointError(
            f"{path} does not match nanoGPT's gpt2 layout: unexpected keys {unknown[:5]}, missing keys "
            f"{missing[:5]} (is it a nanoGPT checkpoint of the same model_args?)"
        )
    return translated


def _check_exportable(model: "GPT") -> None:
    c = model.config
    gpt2 = preset_config("gpt2", n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                         block_size=c.block_size, vocab_size=c.vocab_size, bias=c.bias, dropout=c.dropout)
    differ = [name for name in ("positional", "norm", "norm_position", "attention", "mlp", "tie_weights",
                                "use_attn", "use_mlp", "use_residual", "use_final_norm", "kv_heads",
                                "mlp_width", "norm_eps")
              if getattr(c, name) != getattr(gpt2, name)]
    if differ:
        raise CheckpointError(
            f"only gpt2-preset models can be written in nanoGPT's format; this one differs in {differ}"
        )


def to_nanogpt(model: "GPT", path: str | Path) -> Path:
    """Write `model` as a nanoGPT checkpoint (`model_args` + `model`), atomically."""
    _check_exportable(model)
    ours_to_theirs: dict[str, str] = {v: k for k, v in GPT2_GLOBAL_NAMES.items()}
    for i in range(model.config.n_layer):
        for theirs, ours in GPT2_LAYER_NAMES.items():
            ours_to_theirs[f"blocks.{i}.{ours}"] = f"transformer.h.{i}.{theirs}"
    state = {ours_to_theirs[k]: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]  # nanoGPT ties them too
    c = model.config
    checkpoint = {
        "model_args": {name: getattr(c, name) for name in _MODEL_ARGS},
        "model": state,
        "iter_num": 0,
        "best_val_loss": float("inf"),
        "config": {},
    }
    return atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))
