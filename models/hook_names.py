"""Hook names and the layers they sit in: the one place that knows how TransformerLens names
hook points (`blocks.{i}.hook_resid_post`), so probes, steering, SAEs and the explorer agree.

- `block_hook(i, kind)`: `"resid_post"` -> `blocks.{i}.hook_resid_post`, `"attn.hook_z"` -> `blocks.{i}.attn.hook_z`;
- `layer_of(name)`: the block index a hook sits in (None outside the blocks);
- `stop_layer(hooks)`: the `stop_at_layer` that runs just far enough for every hook to fire;
- `resolve_hooks(model, hooks)`: full names from full names or per-block kinds, checked;
- `residual_hook(model, layer, kind)`: one residual-width hook of one block, checked.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .gpt import GPT

# Hooks that carry one d_model vector per position, so a direction can be read or added there.
RESIDUAL_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
# Short hook kinds that name one hook per block, e.g. "resid_post" -> blocks.{i}.hook_resid_post.
BLOCK_KINDS = RESIDUAL_KINDS + (
    "attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v", "mlp.hook_pre", "mlp.hook_post",
    "ln1.hook_normalized", "ln2.hook_normalized", "attn.hook_result", "hook_attn_in", "hook_mlp_in",
)
# [batch, head, query_pos, key_pos]: not one vector per position.
NOT_PER_POSITION = ("hook_pattern", "hook_attn_scores")
EMBED_HOOKS = ("hook_embed", "hook_pos_embed")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


class HookNameError(ValueError):
    """A hook name that the model does not have; the message suggests the closest real ones."""


def block_hook(i: int, kind: str) -> str:
    """The name of hook `kind` in block `i` (`kind` with or without its `hook_` prefix)."""
    if "." in kind or kind.startswith("hook_"):
        return f"blocks.{i}.{kind}"
    return f"blocks.{i}.hook_{kind}"


def layer_of(name: str) -> int | None:
    """The block index of a hook name (`blocks.3.hook_resid_post` -> 3), or None outside blocks."""
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


def stop_layer(hooks: Sequence[str]) -> int | None:
    """The `stop_at_layer` that runs just far enough for every hook to fire (None: the whole
    model, which `ln_final` and `unembed` hooks need)."""
    deepest = -1
    for name in hooks:
        layer = layer_of(name)
        if layer is None:
            if name in EMBED_HOOKS:
                continue
            return None
        deepest = max(deepest, layer)
    return deepest + 1


def suggest(name: str, candidates: Sequence[str]) -> str:
    """"; did you mean 'a', 'b'?" for the closest of `candidates`, or ""."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def resolve_hooks(model: GPT, hooks: str | Sequence[str]) -> list[str]:
    """Full hook names from full names or short per-block kinds.

    `"resid_post"` (or `"hook_resid_post"`) expands to `blocks.{i}.hook_resid_post` for every
    block; a full name is checked with `model.check_hook_name`, which suggests close names.
    """
    if isinstance(hooks, str):
        hooks = [hooks]
    hooks = list(hooks)
    if not hooks:
        raise ValueError("no hook points requested; name at least one, e.g. hooks=['resid_post'] or 'blocks.0.hook_resid_post'")
    names: list[str] = []
    for hook in hooks:
        if not isinstance(hook, str):
            raise TypeError(f"hook names are strings, got {hook!r}")
        kind = hook[5:] if hook.startswith("hook_") and hook not in model.hook_dict else hook
        if hook not in model.hook_dict and kind in BLOCK_KINDS:
            expanded = [block_hook(i, kind) for i in range(model.config.n_layer)]
            missing = [name for name in expanded if name not in model.hook_dict]
            if missing:
                model.check_hook_name(missing[0])  # explains which switch or config lacks it
            names.extend(expanded)
        else:
            if hook not in model.hook_dict and "." not in hook:
                raise HookNameError(
                    f"no hook point or per-block hook kind named {hook!r}{suggest(hook, list(BLOCK_KINDS) + list(model.hook_dict))} "
                    f"(kinds such as 'resid_post' expand to every block; model.hook_names() lists all "
                    f"{len(model.hook_dict)} hook points)"
                )
            model.check_hook_name(hook)
            names.append(hook)
        if any(names[-1].endswith(bad) for bad in NOT_PER_POSITION):
            raise ValueError(
                f"{names[-1]} is [batch, head, query_pos, key_pos], not one vector per position; "
                "read attention patterns from model.run_with_cache, or probe a per-position hook "
                "such as blocks.{i}.attn.hook_z or blocks.{i}.hook_attn_out"
            )
    return list(dict.fromkeys(names))  # drop repeats, keep order


def residual_hook(model: GPT, layer: int, kind: str = "resid_pre") -> str:
    """`blocks.{layer}.hook_{kind}` for a residual-width `kind`, checked: `layer` may count from
    the end (-1 = the last block); out-of-range layers raise ValueError saying the valid range."""
    n = model.config.n_layer
    if n == 0:
        raise ValueError("this model has no blocks (n_layer=0), so there is no residual stream inside it")
    index = int(layer) + n if layer < 0 else int(layer)
    if not 0 <= index < n:
        raise ValueError(
            f"layer {layer} is out of range: this model has {n} layers, so layer must be 0..{n - 1} "
            f"(or -{n}..-1 counting from the end)"
        )
    kind = kind[5:] if kind.startswith("hook_") else kind
    if kind not in RESIDUAL_KINDS:
        raise ValueError(f"hook={kind!r}: use one of {', '.join(RESIDUAL_KINDS)} (or give a full hook name)")
    name = block_hook(index, kind)
    model.check_hook_name(name)
    return name
