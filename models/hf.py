"""Open a model trained elsewhere: a Hugging Face checkpoint -> the nanolens GPT.

`GPT.from_hf(source)` (here `from_hf(GPT, source)`) reads a local directory (config.json + safetensors, sharded or not, or
`pytorch_model.bin` with `weights_only=True`), a `transformers.PreTrainedModel` object, or a hub
name (through `huggingface_hub`'s cache). The family (GPT-2, Llama / Mistral / Qwen2, GPT-NeoX)
chooses the `GPTConfig` and the tensor names; nothing here is a second model class.

Memory: the model is built on the meta device (no weights allocated or initialised), then
given uninitialised storage in the requested dtype, and each checkpoint tensor is copied into
place as it is read and dropped at once, so peak memory is about one copy of the weights plus
the largest tensor. Neither `transformers` nor torch's pickle loader runs on a directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import snapshot_download
from torch import Tensor

from .checkpoint import CheckpointError
from .hf_family import LAYOUTS, Family
from .hf_gpt2 import FAMILY as GPT2
from .hf_llama import FAMILY as LLAMA
from .hf_neox import FAMILY as NEOX
from .hf_tokenizer import HFTokenizer
from .hf_weights import StateDict, WeightSource, open_weights

if TYPE_CHECKING:
    from .gpt import GPT

FAMILIES: tuple[Family, ...] = (GPT2, LLAMA, NEOX)
SUPPORTED = tuple(a for f in FAMILIES for a in f.architectures)
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.txt", "*.model"]


def from_hf(
    gpt_class: type["GPT"],
    source: Any,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    tokenizer: Any = None,
    revision: str | None = None,
) -> "GPT":
    """A nanolens GPT with the weights of a Hugging Face causal LM, in eval mode.

    `source`: a checkpoint directory, a `transformers.PreTrainedModel`, or a hub name.
    `dtype`: torch.float32 by default (nanolens computes in float32); "auto" keeps the
    checkpoint's own; bf16/fp16 keep norms and rotary angles in float32 as `transformers` does.
    `tokenizer`: None reads the directory's tokenizer.json when there is one; False attaches
    none; a `transformers` tokenizer or any nanolens tokenizer is attached (wrapped as needed).
    `gpt_class` is the GPT class (`GPT.from_hf` passes it, so this module needs no import of it).
    """
    if isinstance(source, (str, Path)):
        directory = resolve_directory(source, revision)
        hf_config, weights = read_config(directory), open_weights(directory)
        if tokenizer is None and (directory / "tokenizer.json").is_file():
            tokenizer = HFTokenizer.from_directory(directory)
    elif hasattr(source, "config") and hasattr(source, "state_dict"):
        hf_config, weights = source.config.to_dict(), StateDict(source.state_dict())
    else:
        raise TypeError(f"from_hf takes a directory, a hub name or a transformers model, not {type(source).__name__}")
    family = family_of(hf_config)
    names = {family.canonical(n): n for n in weights.names()}
    config = family.config_from_hf(hf_config, set(names))
    dtype = _resolve_dtype(dtype, hf_config)
    with torch.device("meta"):
        model = gpt_class(config)
    model = model.to(dtype).to_empty(device=device or "cpu")
    _fill(model, family, weights, names)
    model.tokenizer = _as_tokenizer(tokenizer)
    model.cfg.default_prepend_bos = bool(getattr(model.tokenizer, "prepend_bos", False))
    return model.eval()


def family_of(hf_config: dict[str, Any]) -> Family:
    """The family of a config.json, by its `architectures` (else its `model_type`)."""
    architectures = hf_config.get("architectures") or []
    for family in FAMILIES:
        if any(a in family.architectures for a in architectures):
            return family
    for family in FAMILIES:
        if not architectures and hf_config.get("model_type") in family.model_types:
            return family
    named = ", ".join(architectures) or f"model_type {hf_config.get('model_type')!r}"
    raise CheckpointError(f"unsupported architecture {named}; nanolens reads: {', '.join(SUPPORTED)}")


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json; it is not a Hugging Face model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def resolve_directory(source: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint directory, or a hub name resolved through `huggingface_hub`'s cache."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; give the directory that holds config.json and the weights")
    if not _HUB_NAME.match(str(source)):
        raise CheckpointError(f"no directory {path}; give a checkpoint directory or a hub name such as 'gpt2'")
    try:
        folder = Path(snapshot_download(str(source), revision=revision, allow_patterns=_HUB_FILES))
        if not any(folder.glob("*.safetensors")):  # an older repository: only pytorch_model.bin
            folder = Path(snapshot_download(str(source), revision=revision, allow_patterns=_HUB_FILES + ["*.bin"]))
    except Exception as err:  # offline, unknown or gated repository, no network: say what to do
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise CheckpointError(
            f"{source!r} is not a local directory, and the Hugging Face hub could not provide it "
            f"({type(err).__name__}: {reason}). Offline, a hub name loads only if it is already in the hub "
            f"cache. Download it where there is a network (`hf download {source} --local-dir DIR`) and "
            "pass that directory instead: GPT.from_hf('DIR')"
        ) from None
    return folder


def _resolve_dtype(dtype: torch.dtype | str | None, hf_config: dict[str, Any]) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        dtype = hf_config.get("dtype") or hf_config.get("torch_dtype") or "float32"
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. torch.float32, 'bfloat16' or 'auto'")
        dtype = resolved
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    return dtype


def _fill(model: "GPT", family: Family, weights: WeightSource, names: dict[str, str]) -> None:
    """Copy every checkpoint tensor into its place, checking that each of ours is written once
    and that nothing of theirs is left over (which would mean a part we do not model)."""
    params = dict(model.named_parameters())
    written: dict[str, int] = {name: 0 for name in params}
    used = set()
    missing = []
    for piece in family.pieces(model.config):
        if piece.theirs not in names:
            missing.append(family.full_name(piece.theirs))
            continue
        if piece.ours not in params:
            raise CheckpointError(f"{names[piece.theirs]} has no place in this model ({piece.ours})")
        tensor = weights.get(names[piece.theirs])
        value = LAYOUTS[piece.layout][0](tensor, model.config)
        target = params[piece.ours]
        if piece.rows is not None:
            target = target[piece.rows[0] : piece.rows[1]]
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(
                f"shape mismatch: {names[piece.theirs]} is {tuple(tensor.shape)}, but config.json implies "
                f"{_their_shape(target, piece.layout)} (for {piece.ours}); the weights belong to another "
                "config (check hidden size, heads, key/value heads, vocabulary and MLP width)"
            )
        with torch.no_grad():
            target.copy_(value)
        written[piece.ours] += target.numel()
        used.add(piece.theirs)
        del tensor, value
    if missing:
        raise CheckpointError(f"the checkpoint lacks {len(missing)} tensor(s) a {family.name} model of this "
                              f"config needs: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    left = sorted(names[c] for c in set(names) - used if not family.ignored(c) and not _tied_head(model, family, c))
    if left:
        raise CheckpointError(f"the checkpoint has tensors nanolens does not model: {', '.join(left[:5])}"
                              f"{' ...' if len(left) > 5 else ''}; is it a variant of {family.name}?")
    unwritten = [name for name, count in written.items() if count != params[name].numel()]
    if unwritten:  # a table bug rather than a bad file, but never hand out uninitialised weights
        raise CheckpointError(f"no checkpoint tensor filled {', '.join(unwritten[:5])}")


def _tied_head(model: "GPT", family: Family, canonical: str) -> bool:
    """A tied model's file (or state dict) may still carry the head: it is the embedding."""
    return canonical == family.head and model.config.tie_weights


def _their_shape(target: Tensor, layout: str) -> tuple[int, ...]:
    return tuple(target.shape[::-1]) if layout == "conv1d" else tuple(target.shape)


def _as_tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None or tokenizer is False:
        return None
    if hasattr(tokenizer, "backend_tokenizer"):  # a transformers tokenizer object
        return HFTokenizer.from_transformers(tokenizer)
    return tokenizer
