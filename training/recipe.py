"""From a corpus' text to a model ready to train: tokenizer, config, token data, weights.

The one recipe behind `nanolens train`, the demo and the explorer's small runs, so a model
trained any of these ways carries the same notes (`config.extra`: its corpus and tokenizer)
and draws its initial weights from the same seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from nanolens.models import GPT, build_tokenizer, preset_config

from .batches import TokenData


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
