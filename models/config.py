"""GPTConfig: every architectural choice of the model as one plain, JSON-serialisable dataclass.

A variant is a config value, never a fork of the code: each string field names an entry of a
registry (see `VARIANTS`), and `validate()` explains any value that cannot work and how to fix it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanolens.fields import BOOL, INT, NUMBER, OBJECT, STR, optional, shown

# The valid names of every registry-backed slot. The registries themselves live beside the
# modules that implement them; this table is kept here so that config validation (and
# `nanolens --help`) never has to import torch.
VARIANTS: dict[str, tuple[str, ...]] = {
    "positional": ("learned", "sinusoidal", "rotary", "alibi", "none"),
    "norm": ("layernorm", "rmsnorm", "none"),
    "norm_position": ("pre", "post"),
    "attention": ("multi_head", "average"),
    "mlp": ("gelu", "relu", "relu2", "silu", "swiglu", "geglu", "gelu_tanh"),
}

GATED_MLPS = ("swiglu", "geglu")
ROPE_SCALING_KEYS: dict[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}
# Fields added after configs were first saved: written out only when they differ from their
# default, so existing config.json files, and fingerprints computed from a config, stay as they were.
LATER_FIELDS = ("parallel_block", "rotary_dim", "rope_scaling", "qkv_bias", "mlp_bias")


class ConfigError(ValueError):
    """A configuration that cannot build a working model; the message names the fix."""


class ConfigTypeError(ConfigError):
    """A config field of the wrong type: `field: expected T, got V` (a file adds its name in front)."""


def parse_value(raw: str) -> Any:
    """A command-line value: JSON (`4`, `0.1`, `true`, `null`), Python's `True`/`False`/`None`
    spellings, or else the plain string."""
    spelled = {"true": True, "false": False, "none": None, "null": None}
    if raw.strip().lower() in spelled:
        return spelled[raw.strip().lower()]
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


_KINDS = {"bool": BOOL, "int": INT, "float": NUMBER, "str": STR, "dict": OBJECT}


def check_field_types(config: Any) -> None:
    """Refuse a dataclass field value of the wrong type for its annotation (e.g. the string
    "False" for a switch), which would otherwise be taken as truthy or fail deep inside; floats
    given as ints become floats. Raises ConfigTypeError: `field: expected T, got V`."""
    for f in dataclasses.fields(config):
        value, annotation = getattr(config, f.name), str(f.type)
        kind = next((k for name, k in _KINDS.items() if annotation.startswith(name)), None)
        if kind is None:
            continue
        if "None" in annotation:
            kind = optional(kind)
        if not kind.check(value):
            raise ConfigTypeError(f"{f.name}: expected {kind.name}, got {shown(value)}")
        if annotation.startswith("float") and value is not None:
            setattr(config, f.name, float(value))


@dataclass
class GPTConfig:
    """Every architectural choice of a nanolens GPT.

    Names follow nanoGPT (`n_layer`, `n_head`, `n_embd`, `block_size`); `model.cfg` exposes the
    same facts under TransformerLens' names (`n_layers`, `n_heads`, `d_model`, `n_ctx`).
    """

    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    n_kv_head: int | None = None  # None: one K/V head per query head (plain multi-head)
    d_mlp: int | None = None  # None: 4 * n_embd
    positional: str = "learned"
    norm: str = "layernorm"
    norm_position: str = "pre"
    norm_eps: float = 1e-5
    attention: str = "multi_head"
    mlp: str = "gelu"
    bias: bool = True
    tie_weights: bool = True
    dropout: float = 0.0
    rope_base: float = 10000.0
    rotary_dim: int | None = None  # rotate only the first rotary_dim features of each head (None: all)
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "linear" | "llama3", ...}: longer contexts
    parallel_block: bool = False  # attention and MLP both read the block's input (GPT-J, GPT-NeoX)
    qkv_bias: bool | None = None  # bias on the query/key/value projection (None: as `bias`)
    mlp_bias: bool | None = None  # bias on the MLP's linear layers (None: as `bias`)
    # Switches that take the architecture apart, for the simple-to-complex ladder.
    use_attn: bool = True
    use_mlp: bool = True
    use_residual: bool = True
    use_final_norm: bool = True
    # TransformerLens' optional hook points: off by default so they cost nothing.
    use_attn_result: bool = False
    use_split_qkv_input: bool = False
    use_attn_in: bool = False
    use_hook_mlp_in: bool = False
    use_hook_unembed: bool = False
    preset: str | None = None  # the preset this config came from, for display only
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (e.g. the corpus)

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived sizes ---------------------------------------------------------------------
    @property
    def d_head(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def mlp_width(self) -> int:
        return 4 * self.n_embd if self.d_mlp is None else self.d_mlp

    @property
    def gated_mlp(self) -> bool:
        return self.mlp in GATED_MLPS

    @property
    def rotary_width(self) -> int:
        """How many features of each query/key head RoPE rotates."""
        return self.d_head if self.rotary_dim is None else self.rotary_dim

    @property
    def has_qkv_bias(self) -> bool:
        return self.bias if self.qkv_bias is None else self.qkv_bias

    @property
    def has_mlp_bias(self) -> bool:
        return self.bias if self.mlp_bias is None else self.mlp_bias

    # ---- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the problem and the fix, for any config that cannot work."""
        check_field_types(self)
        for slot, valid in VARIANTS.items():
            value = getattr(self, slot)
            if value not in valid:
                raise ConfigError(
                    f"unknown {slot} variant {value!r}; valid {slot} values are: {', '.join(valid)}"
                )
        positive = ("vocab_size", "block_size", "n_head", "n_embd")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_layer < 0:
            raise ConfigError(f"n_layer must be >= 0, got {self.n_layer}")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"n_embd ({self.n_embd}) is not divisible by n_head ({self.n_head}); pick n_head "
                f"from the divisors of n_embd or change n_embd to a multiple of {self.n_head}"
            )
        if self.n_kv_head is not None:
            if self.n_kv_head < 1 or self.n_head % self.n_kv_head != 0:
                raise ConfigError(
                    f"n_head ({self.n_head}) is not divisible by n_kv_head ({self.n_kv_head}); "
                    f"use a divisor of n_head (1 = multi-query, n_head = multi-head)"
                )
        if self.positional == "rotary" and self.d_head % 2 != 0:
            raise ConfigError(
                f"rotary positions need an even head size, but n_embd/n_head = {self.d_head}; "
                "change n_embd or n_head"
            )
        if self.d_mlp is not None and self.d_mlp < 1:
            raise ConfigError(f"d_mlp must be >= 1 (or None for 4*n_embd), got {self.d_mlp}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attention == "average" and self.positional in ("rotary", "alibi"):
            raise ConfigError(
                "average attention has no queries or keys, so rotary/alibi positions cannot act "
                "on it; use positional='learned', 'sinusoidal' or 'none'"
            )
        if self.norm_eps <= 0:
            raise ConfigError(f"norm_eps must be > 0, got {self.norm_eps}")
        self._validate_rotary()
        if self.parallel_block and not (self.use_attn and self.use_mlp and self.use_residual and self.norm_position == "pre"):
            raise ConfigError(
                "parallel_block adds attention and MLP, both reading the block's input, to the residual "
                "stream; it needs use_attn, use_mlp and use_residual on and norm_position='pre'"
            )

    def _validate_rotary(self) -> None:
        if self.rotary_dim is not None:
            if self.positional != "rotary":
                raise ConfigError(f"rotary_dim only applies to positional='rotary' (got {self.positional!r}); drop it")
            if not (2 <= self.rotary_dim <= self.d_head and self.rotary_dim % 2 == 0):
                raise ConfigError(
                    f"rotary_dim must be an even number from 2 to the head size {self.d_head}, got {self.rotary_dim}"
                )
        if self.rope_scaling is None:
            return
        if self.positional != "rotary":
            raise ConfigError(f"rope_scaling only applies to positional='rotary' (got {self.positional!r}); drop it")
        kind = self.rope_scaling.get("rope_type") if isinstance(self.rope_scaling, dict) else None
        if kind not in ROPE_SCALING_KEYS:
            raise ConfigError(
                f"rope_scaling must be a dict whose rope_type is one of {', '.join(ROPE_SCALING_KEYS)}, got "
                f"{self.rope_scaling!r}"
            )
        for key in ROPE_SCALING_KEYS[kind]:
            value = self.rope_scaling.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"rope_scaling of type {kind!r} needs a positive number {key!r}, got {value!r}")
        if kind == "llama3" and self.rope_scaling["high_freq_factor"] <= self.rope_scaling["low_freq_factor"]:
            raise ConfigError("llama3 rope_scaling needs high_freq_factor > low_freq_factor")

    # ---- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in LATER_FIELDS:
            if data[name] == defaults[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GPTConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"expected an object of GPTConfig fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown GPTConfig field(s) {unknown}; valid fields are: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "GPTConfig":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "GPTConfig":
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def replace(self, **changes: Any) -> "GPTConfig":
        """A copy with some fields changed (validated like any new config)."""
        return dataclasses.replace(self, **changes)

    def with_overrides(self, assignments: list[str]) -> "GPTConfig":
        """Apply `key=value` strings (as given to `--set`), parsing values as JSON when they can be."""
        field_types = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"--set expects key=value, got {item!r}")
            if key not in field_types:
                raise ConfigError(
                    f"unknown GPTConfig field {key!r}; valid fields: {', '.join(sorted(field_types))}"
                )
            changes[key] = parse_value(raw)
        return self.replace(**changes)
