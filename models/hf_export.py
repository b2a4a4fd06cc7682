"""Hand a model trained here to `transformers`: nanolens GPT -> a Hugging Face checkpoint.

The family follows the positions and the norm: learned positions -> GPT-2; rotary + RMSNorm
(the `modern` preset) -> Llama (Qwen2 when only q/k/v have biases); rotary + LayerNorm ->
GPT-NeoX. The directory gets config.json, model.safetensors and, where the tokenizer can be
expressed (all of nanolens' can), tokenizer.json + tokenizer_config.json, written atomically.
Configs no family computes the same way (ALiBi, sinusoidal or no positions, post-norm, average
attention, switched-off residuals, ...) are refused with the field named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import save_file
from torch import Tensor

from .checkpoint import CheckpointError, atomic_directory
from .config import GPTConfig
from .hf_family import LAYOUTS, Family, refuse_export
from .hf_gpt2 import FAMILY as GPT2
from .hf_gpt2 import config_to_hf as gpt2_config
from .hf_llama import FAMILY as LLAMA
from .hf_llama import config_to_hf as llama_config
from .hf_neox import FAMILY as NEOX
from .hf_neox import config_to_hf as neox_config
from .hf_tokenizer import hf_backend, write_hf_tokenizer

if TYPE_CHECKING:
    from .gpt import GPT

# Switches every exportable family needs in their default position: (field, required value, why).
_REQUIRED = (
    ("norm_position", "pre", "Hugging Face's GPT-2, Llama and GPT-NeoX blocks are pre-norm"),
    ("attention", "multi_head", "average attention has no Hugging Face equivalent"),
    ("use_attn", True, "every Hugging Face block has attention"),
    ("use_mlp", True, "every Hugging Face block has an MLP"),
    ("use_residual", True, "Hugging Face blocks add to the residual stream"),
    ("use_final_norm", True, "Hugging Face models end with a norm"),
)


def hf_config_for(config: GPTConfig) -> tuple[Family, dict[str, Any]]:
    """The family and config.json that express `config`, or a CheckpointError naming the field."""
    for name, required, why in _REQUIRED:
        if getattr(config, name) != required:
            raise refuse_export(name, getattr(config, name), why)
    if config.norm == "none":
        raise refuse_export("norm", "none", "every Hugging Face family here normalises")
    if config.positional == "learned":
        if config.parallel_block:
            raise refuse_export("parallel_block", True, "GPT-2 blocks are sequential")
        return GPT2, gpt2_config(config)
    if config.positional == "rotary":
        if config.norm == "layernorm":
            return NEOX, neox_config(config)
        if config.parallel_block:
            raise refuse_export("parallel_block", True, "Llama blocks are sequential")
        return LLAMA, llama_config(config)
    raise refuse_export("positional", config.positional,
                        "Hugging Face's GPT-2 has learned positions, Llama and GPT-NeoX rotary ones; "
                        "ALiBi, sinusoidal and position-free models have no family here")


def to_hf(model: "GPT", directory: str | Path) -> Path:
    """Write `model` as a Hugging Face checkpoint that `AutoModelForCausalLM.from_pretrained`
    loads, with the same logits. Returns the directory."""
    family, hf_config = hf_config_for(model.config)
    dtype = model.embed.W_E.dtype
    backend = hf_backend(model.tokenizer)
    bos, eos = getattr(model.tokenizer, "bos_token", None), getattr(model.tokenizer, "eos_token", None)
    hf_config.update(
        dtype=str(dtype).removeprefix("torch."), torch_dtype=str(dtype).removeprefix("torch."),
        bos_token_id=getattr(model.tokenizer, "bos_token_id", None),
        eos_token_id=getattr(model.tokenizer, "eos_token_id", None),
    )
    state = export_state(model, family)
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if backend is not None:
            write_hf_tokenizer(backend, tmp, bos, eos, getattr(model.tokenizer, "pad_token", None), model.config.block_size)
    return directory


def export_state(model: "GPT", family: Family) -> dict[str, Tensor]:
    """Our parameters under the family's names and layouts; a bias the family has and this
    model lacks is written as zeros (adding zero computes the same)."""
    ours = dict(model.named_parameters())
    state: dict[str, Tensor] = {}
    for piece in family.pieces(model.config):
        source = ours[piece.ours].detach() if piece.ours in ours else _zero_bias(piece.ours, ours)
        if piece.rows is not None:
            source = source[piece.rows[0] : piece.rows[1]]
        state[family.full_name(piece.theirs)] = LAYOUTS[piece.layout][1](source, model.config).contiguous().clone().cpu()
    return state


def _zero_bias(name: str, params: dict[str, Tensor]) -> Tensor:
    """Zeros for a bias this model does not have: one per row of the weight beside it
    (`x.bias` beside `x.weight`, a norm's `b` beside its `w`)."""
    weight = name.removesuffix(".bias") + ".weight" if name.endswith(".bias") else name.removesuffix(".b") + ".w"
    if weight not in params:
        raise CheckpointError(f"cannot export: neither {name} nor {weight} is a parameter of this model")
    return params[weight].detach().new_zeros(params[weight].shape[0])
