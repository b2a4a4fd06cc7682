"""Tokenizers: text <-> token ids, saved as JSON beside a checkpoint.

`CharTokenizer` (the default) has one token per character of the training corpus. Every
tokenizer offers `encode`, `decode`, `vocab_size`, `save`, and `load_tokenizer` reads any of them
back from its JSON file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable


class UnknownCharactersError(ValueError):
    """Text holds characters the tokenizer has never seen."""


class CharTokenizer:
    """One token per character, vocabulary sorted for a stable order (as nanoGPT's char model).

    Unknown characters raise `UnknownCharactersError` naming them, unless `unknown` names a
    replacement character from the vocabulary (e.g. `unknown=" "`).
    """

    kind = "char"

    def __init__(self, chars: Iterable[str], unknown: str | None = None) -> None:
        self.chars: list[str] = sorted(set(chars))
        if not self.chars:
            raise ValueError("a CharTokenizer needs at least one character; the corpus is empty")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        if unknown is not None and unknown not in self.stoi:
            raise ValueError(f"replacement character {unknown!r} is not in the vocabulary")
        self.unknown = unknown

    @classmethod
    def from_text(cls, text: str, unknown: str | None = None) -> "CharTokenizer":
        return cls(set(text), unknown=unknown)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            if self.unknown is not None:
                fallback = self.stoi[self.unknown]
                return [self.stoi.get(c, fallback) for c in text]
            missing = sorted({c for c in text if c not in self.stoi})
            raise UnknownCharactersError(
                f"characters {missing} are not in this model's vocabulary of {self.vocab_size} "
                "characters; remove them, or build the tokenizer with unknown=' ' to replace them"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        try:
            return "".join(self.chars[int(i)] for i in ids)
        except IndexError:
            raise ValueError(f"token id out of range for a vocabulary of {self.vocab_size}") from None

    def id_to_str(self, i: int) -> str:
        return self.chars[i]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars, "unknown": self.unknown}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict) -> "CharTokenizer":
        return cls(data["chars"], unknown=data.get("unknown"))


TOKENIZERS: dict[str, type] = {"char": CharTokenizer}


def load_tokenizer(path: str | Path):
    """Read a tokenizer saved by any tokenizer's `save`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        kind = data["kind"]
    except FileNotFoundError:
        raise FileNotFoundError(f"no tokenizer file at {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a nanolens tokenizer file ({err}); re-save the tokenizer") from None
    if kind not in TOKENIZERS:
        raise ValueError(f"{path}: unknown tokenizer kind {kind!r}; known kinds: {', '.join(TOKENIZERS)}")
    return TOKENIZERS[kind].from_dict(data)
