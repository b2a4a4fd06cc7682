"""From a corpus' text to a model ready to train: tokenizer, config, token data, weights.

The one recipe behind `nanolens train`, the demo and the explorer's small runs, so a model
trained any of these ways carries the same notes (`config.extra`: its corpus and tokenizer)
and draws its initial weights from the same seed; `continued_model_and_data` is the same for
a model that starts from a checkpoint (`--init-from`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from nanolens.models import GPT, ConfigError, build_tokenizer, preset_config

from .batches import TokenData
from .runs import open_model


def model_and_data(
    text: str,
    data_name: str,
    *,
    preset: str = "gpt2",
    tokenizer: str = "char",
    vocab_size: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    assignments: Sequence[str] = (),
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[GPT, TokenData]:
    """A fresh `preset` model sized to the corpus `text`, and the text as token data.

    `tokenizer`: "char" or "bpe" (`vocab_size` for BPE); `overrides`: GPTConfig fields;
    `assignments`: `key=value` strings as `--set` gives them, applied last. The weights are
    drawn after `torch.manual_seed(seed)`. `data_name` (e.g. "sentiment") is noted in the
    model's config and the data's metadata.
    """
    tok = build_tokenizer(tokenizer, text, vocab_size)
    config = preset_config(preset, **{**dict(overrides or {}), "vocab_size": tok.vocab_size}).with_overrides(list(assignments))
    config.extra = {**config.extra, "data": data_name, "tokenizer": tokenizer}
    data = TokenData.from_text(text, tok, val_fraction, meta={"data": data_name})
    torch.manual_seed(seed)
    return GPT(config, tokenizer=tok), data


def continued_model_and_data(
    init_from: str,
    text: str,
    data_name: str,
    *,
    assignments: Sequence[str] = (),
    val_fraction: float = 0.1,
) -> tuple[GPT, TokenData]:
    """A model to train further, as nanoGPT's `init_from` does: `init_from` names a checkpoint
    or run (`--ckpt`'s forms, `hf:DIR` included), and `text` becomes token data in the model's
    own tokenizer. `assignments` may change only what keeps the weights' shapes (e.g.
    `dropout=0.1`, as nanoGPT's finetune_shakespeare sets), or shrink `block_size` (the learned
    position table is cropped, as nanoGPT's `crop_block_size` does); the model is rebuilt with
    them and given the loaded weights."""
    model = open_model(init_from)
    if model.tokenizer is None:
        raise ConfigError(f"{init_from} has no tokenizer, so the corpus cannot be turned into its tokens; "
                          "give a checkpoint that carries tokenizer.json")
    config = model.config.with_overrides(list(assignments))
    config.extra = {**config.extra, "data": data_name, "init_from": str(init_from)}
    if assignments:
        rebuilt = GPT(config, tokenizer=model.tokenizer)
        state = _cropped_to_context(model.state_dict(), model.config.block_size, config.block_size)
        try:
            rebuilt.load_state_dict(state)
        except RuntimeError as err:
            raise ConfigError(f"--set {' '.join(assignments)} changes the shapes of {init_from}'s weights, which "
                              "--init-from keeps; only settings such as dropout can change "
                              f"({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err})") from None
        model = rebuilt
    model.config.extra = config.extra
    data = TokenData.from_text(text, model.tokenizer, val_fraction, meta={"data": data_name, "init_from": str(init_from)})
    return model.train(), data


def _cropped_to_context(state: dict[str, torch.Tensor], old: int, new: int) -> dict[str, torch.Tensor]:
    """The weights for a shorter context: per-position tables ([block_size, ...]) keep their
    first `new` rows."""
    if new >= old:
        return state
    return {name: t[:new] if t.dim() >= 1 and t.shape[0] == old and "pos" in name.split(".")[0] else t
            for name, t in state.items()}
