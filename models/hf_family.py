"""What a Hugging Face model family is to nanolens: a config translation and a weight-name table.

A family (GPT-2, Llama, GPT-NeoX) says which `GPTConfig` its `config.json` means, and, for that
config, where each of its tensors lives in the nanolens model (`Piece`s). Import and export read
the same table in opposite directions, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .checkpoint import CheckpointError
from .config import ROPE_SCALING_KEYS, GPTConfig

# HF `hidden_act` / `activation_function` -> our plain MLP variant.
PLAIN_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                     "relu": "relu", "relu2": "relu2", "silu": "silu", "swish": "silu"}
# HF gated MLPs (Llama's act(gate) * up) -> our gated variant.
GATED_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu"}


def _same(t: Tensor, config: GPTConfig) -> Tensor:
    return t


def _transposed(t: Tensor, config: GPTConfig) -> Tensor:
    """GPT-2's Conv1D stores a weight as [in, out], the transpose of nn.Linear's."""
    return t.T


def _neox_qkv_in(t: Tensor, config: GPTConfig) -> Tensor:
    """GPT-NeoX's fused rows are per head (q_h, k_h, v_h); ours are all q, then all k, then all v."""
    heads, d = config.n_head, config.d_head
    return t.reshape(heads, 3, d, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


def _neox_qkv_out(t: Tensor, config: GPTConfig) -> Tensor:
    heads, d = config.n_head, config.d_head
    return t.reshape(3, heads, d, *t.shape[1:]).transpose(0, 1).reshape(t.shape)


# layout name -> (their tensor -> ours, ours -> theirs)
LAYOUTS: dict[str, tuple[Callable[[Tensor, GPTConfig], Tensor], Callable[[Tensor, GPTConfig], Tensor]]] = {
    "same": (_same, _same),
    "conv1d": (_transposed, _transposed),
    "neox_qkv": (_neox_qkv_in, _neox_qkv_out),
}


@dataclass(frozen=True)
class Piece:
    """One tensor of the Hugging Face checkpoint and where it goes in ours.

    `theirs` is named without the base model's prefix (`layers.0.mlp.up_proj.weight`, not
    `model.layers.0...`); `rows` (start, end), when given, is the slice of our parameter it
    fills (q, k and v projections fill one fused matrix); `layout` names how it is stored.
    """

    theirs: str
    ours: str
    rows: tuple[int, int] | None = None
    layout: str = "same"


@dataclass(frozen=True)
class Family:
    """A Hugging Face architecture family and its translation to and from nanolens."""

    name: str
    architectures: tuple[str, ...]  # config.json `architectures` it reads (the LM-head classes)
    model_types: tuple[str, ...]  # config.json `model_type`
    prefix: str  # the base model's prefix in the state dict ("model.", "transformer.", ...)
    head: str  # the unembedding's name in saved files
    config_from_hf: Callable[[dict[str, Any], set[str]], GPTConfig]  # (config.json, tensor names)
    pieces: Callable[[GPTConfig], list[Piece]]
    ignored: Callable[[str], bool] = lambda name: False  # buffers some files carry (causal masks, inv_freq)
    aliases: dict[str, str] = field(default_factory=dict)  # other names of a tensor -> ours for it

    def canonical(self, name: str) -> str:
        """A file's or state dict's tensor name, as the pieces name it."""
        name = name.removeprefix(self.prefix)
        return self.aliases.get(name, name)

    def full_name(self, canonical: str) -> str:
        """The name `transformers` saves a tensor under."""
        return canonical if canonical == self.head else self.prefix + canonical


def require(hf: dict[str, Any], *keys: str) -> list[Any]:
    """The values of required config.json keys, or a CheckpointError naming the missing ones."""
    missing = [k for k in keys if hf.get(k) is None]
    if missing:
        raise CheckpointError(f"config.json lacks {', '.join(missing)}, which a {hf.get('model_type')} model needs")
    return [hf[k] for k in keys]


def refuse(field_name: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"cannot import this model: config.json has {field_name}={value!r}; {why}")


def refuse_export(field_name: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"cannot export to Hugging Face: {field_name}={value!r}; {why}")


def rope_settings(hf: dict[str, Any], default_fraction: float = 1.0) -> tuple[float, dict | None, float]:
    """(rope_theta, rope_scaling as our config stores it, partial rotary fraction) from either
    config.json format: transformers 5's `rope_parameters`, or the older `rope_theta` /
    `rope_scaling` / `rotary_pct` / `rotary_emb_base` keys."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = dict(hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    fraction = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", default_fraction)))
    kind_of = lambda d: d.get("rope_type", d.get("type", "default")) if d else "default"  # noqa: E731
    scaling = params if kind_of(params) != "default" else legacy
    kind = kind_of(scaling)
    if kind == "default":
        return float(theta), None, float(fraction)
    if kind not in ROPE_SCALING_KEYS:
        raise refuse("rope_type", kind, f"supported RoPE scalings are: default, {', '.join(ROPE_SCALING_KEYS)}")
    if kind == "llama3":
        scaling.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
    missing = [k for k in ROPE_SCALING_KEYS[kind] if scaling.get(k) is None]
    if missing:
        raise refuse("rope_scaling", scaling, f"a {kind} scaling needs {', '.join(missing)}")
    return float(theta), {"rope_type": kind, **{k: scaling[k] for k in ROPE_SCALING_KEYS[kind]}}, float(fraction)


def rope_to_hf(config: GPTConfig) -> dict[str, Any]:
    """RoPE settings in the config.json keys every `transformers` version reads."""
    out: dict[str, Any] = {"rope_theta": config.rope_base, "rope_scaling": None}
    if config.rope_scaling is not None:
        kind = config.rope_scaling["rope_type"]
        out["rope_scaling"] = {"rope_type": kind, "type": kind,
                               **{k: config.rope_scaling[k] for k in ROPE_SCALING_KEYS[kind]}}
    return out


def hf_extra(hf: dict[str, Any]) -> dict[str, Any]:
    """What config.extra keeps of where an imported model came from."""
    return {"hf": {"architecture": (hf.get("architectures") or [None])[0], "model_type": hf.get("model_type")}}
