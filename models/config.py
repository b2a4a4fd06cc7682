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

# The valid names of every registry-backed slot. The registries themselves live beside the
# modules that implement them; this table is kept here so that config validation (and
# `nanolens --help`) never has to import torch.
VARIANTS: dict[str, tuple[str, ...]] = {
    "positional": ("learned", "sinusoidal", "rotary", "alibi", "none"),
    "norm": ("layernorm", "rmsnorm", "none"),
    "norm_position": ("pre", "post"),
    "attention": ("multi_head", "average"),
    "mlp": ("gelu", "relu", "relu2", "silu", "swiglu", "geglu"),
}

GATED_MLPS = ("swiglu", "geglu")


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


def check_field_types(config: Any) -> None:
    """Refuse a dataclass field value of the wrong type for its annotation (e.g. the string
    "False" for a switch), which would otherwise be taken as truthy or fail deep inside; floats
    given as ints become floats. Raises ConfigTypeError: `field: expected T, got V`."""
    for f in dataclasses.fields(config):
        value, kind = getattr(config, f.name), str(f.type)
        nullable = "None" in kind
        if value is None and nullable:
            continue
        if kind == "bool" and not isinstance(value, bool):
            raise ConfigTypeError(f"{f.name}: expected true or false, got {value!r}")
        if kind.startswith("int") and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigTypeError(f"{f.name}: expected an integer{' or null' if nullable else ''}, got {value!r}")
        if kind.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigTypeError(f"{f.name}: expected a number{' or null' if nullable else ''}, got {value!r}")
            setattr(config, f.name, float(value))
        if kind.startswith("str") and not isinstance(value, str):
            raise ConfigTypeError(f"{f.name}: expected a string{' or null' if nullable else ''}, got {value!r}")
        if kind.startswith("dict") and not isinstance(value, dict):
            raise ConfigTypeError(f"{f.name}: expected an object, got {value!r}")


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

    # ---- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
