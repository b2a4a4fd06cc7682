"""Tokenizers: text <-> token ids, saved as JSON beside a checkpoint.

`CharTokenizer` (the default) has one token per character of the training corpus.
`BPETokenizer` is a byte-level byte-pair encoding trained locally on the corpus with the
HuggingFace `tokenizers` package. Every tokenizer offers `encode`, `decode`, `vocab_size`,
`id_to_str`, `save`, `to_dict` / `from_dict` and a `kind`; `load_tokenizer` reads any of them
back from its JSON file and `build_tokenizer(kind, text)` makes one from a corpus.
`HFTokenizer` (models/hf_tokenizer.py) wraps a pretrained model's Hugging Face tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from nanolens.fields import OBJECT, STR, FileFormatError, Kind, field, optional, read_json

from .hf_tokenizer import HFTokenizer


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

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character span of each token of `text`: one character each."""
        return [(i, i + 1) for i in range(len(text))]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars, "unknown": self.unknown}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict, where: str | Path = "tokenizer") -> "CharTokenizer":
        chars = field(data, "chars", Kind("a list of single characters",
                                          lambda v: isinstance(v, list) and all(isinstance(c, str) and len(c) == 1 for c in v)), where)
        return cls(chars, unknown=field(data, "unknown", optional(STR), where, default=None))


class BPETokenizer:
    """Byte-level byte-pair encoding (as GPT-2), trained on your corpus with HuggingFace `tokenizers`.

    The base vocabulary is the 256 byte values, so every string encodes and decodes back
    exactly: unknown characters cannot happen (a character never seen in training is spelled
    as its UTF-8 bytes). Merges learned from the corpus fill the rest of `vocab_size`. There
    are no special tokens. A single token may hold part of a multi-byte character, so
    `id_to_str` / `decode` of a lone token can show the replacement character U+FFFD.
    """

    kind = "bpe"
    unknown = None  # byte-level: nothing is ever unknown
    MIN_VOCAB = 256

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int) -> "BPETokenizer":
        """Learn merges from `text` until the vocabulary holds `vocab_size` tokens (or no pair
        repeats: a small corpus can end with fewer; `vocab_size` reports the real size)."""
        if not isinstance(vocab_size, int) or vocab_size < cls.MIN_VOCAB:
            raise ValueError(
                f"vocab_size for byte-level BPE must be an integer >= {cls.MIN_VOCAB} "
                f"(the 256 byte tokens plus merges), got {vocab_size!r}"
            )
        if not text:
            raise ValueError("cannot train a BPE tokenizer on empty text; give it the corpus")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        tok.train_from_iterator(_chunks(text), trainer=trainer, length=None)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} out of range for a vocabulary of {self.vocab_size}")
        return self._tok.decode(ids, skip_special_tokens=False)

    def id_to_str(self, i: int) -> str:
        return self.decode([i])

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character span of each token of `text` (a merged token's leading
        space belongs to it)."""
        return [tuple(o) for o in self._tok.encode(text, add_special_tokens=False).offsets]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokenizer": json.loads(self._tok.to_str())}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict, where: str | Path = "tokenizer") -> "BPETokenizer":
        spec = field(data, "tokenizer", OBJECT, where)
        try:
            return cls(Tokenizer.from_str(json.dumps(spec)))
        except Exception as err:  # the tokenizers library's own parse error
            raise FileFormatError(f"{where}: tokenizer: not a tokenizers-library tokenizer ({str(err)[:120]})") from None

    @property
    def backend(self):
        """The wrapped `tokenizers.Tokenizer` (what export writes as tokenizer.json)."""
        return self._tok

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


def _chunks(text: str, size: int = 1 << 16):
    """Feed the trainer pieces of about `size` characters, cut after a newline."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


TOKENIZERS: dict[str, type] = {"char": CharTokenizer, "bpe": BPETokenizer}  # what build_tokenizer makes
# What load_tokenizer reads: those, plus a pretrained model's Hugging Face tokenizer (never built here).
LOADABLE: dict[str, type] = {**TOKENIZERS, "hf": HFTokenizer}
DEFAULT_BPE_VOCAB = 1024


def build_tokenizer(kind: str, text: str, vocab_size: int | None = None, *, unknown: str | None = None):
    """A tokenizer of `kind` ("char" or "bpe") built from the corpus `text`.

    `vocab_size` is for "bpe" (default 1024); a char vocabulary is the corpus's characters.
    `unknown` (char only) names a replacement character for characters outside the vocabulary.
    """
    if kind == "char":
        if vocab_size is not None:
            raise ValueError("a char tokenizer's vocabulary is the corpus's characters; drop vocab_size or use kind='bpe'")
        return CharTokenizer.from_text(text, unknown=unknown)
    if kind == "bpe":
        if unknown is not None:
            raise ValueError("byte-level BPE has no unknown characters; drop unknown= (it is for kind='char')")
        return BPETokenizer.train(text, DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size)
    raise ValueError(f"unknown tokenizer kind {kind!r}; known kinds: {', '.join(TOKENIZERS)}")


def char_span_to_tokens(tokenizer, text: str, start: int, end: int) -> tuple[int, int]:
    """The token span (start, end; end exclusive) of `text` covering characters `start:end`,
    so positions found in characters (e.g. a story's reveal sentence) read the right tokens
    under any tokenizer."""
    spans = tokenizer.offsets(text)
    inside = [i for i, (a, b) in enumerate(spans) if a < end and b > start]
    if not inside:
        raise ValueError(f"characters {start}:{end} hold no token of a {len(text)}-character text")
    return inside[0], inside[-1] + 1


def load_tokenizer(path: str | Path):
    """Read a tokenizer saved by any tokenizer's `save`, every field checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    try:
        data = read_json(path)
    except FileFormatError as err:
        raise FileFormatError(f"{path} is not a nanolens tokenizer file ({str(err).removeprefix(f'{path}: ')}); "
                              "re-save the tokenizer") from None
    kind = field(data, "kind", STR, path)
    if kind not in LOADABLE:
        raise FileFormatError(f"{path}: unknown tokenizer kind {kind!r}; known kinds: {', '.join(LOADABLE)}")
    return LOADABLE[kind].from_dict(data, where=path)
