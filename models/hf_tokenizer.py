"""A Hugging Face tokenizer behind nanolens' tokenizer interface.

It wraps a `tokenizers.Tokenizer` (what a checkpoint's `tokenizer.json` holds, and what every
fast `transformers` tokenizer runs on), so a pretrained model takes text like a model trained
here: `encode`, `decode`, `vocab_size`, `id_to_str`, `offsets`, `save` / `to_dict`, and
`load_tokenizer` reads it back. `encode` is the plain text codec (no special tokens); the BOS
token, where the family uses one, is prepended by `GPT.to_tokens` as TransformerLens'
`prepend_bos` does, so a prompt's length and character offsets mean the same as for any other
tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers import models as token_models

from nanolens.fields import BOOL, OBJECT, STR, FileFormatError, field, optional


class HFTokenizer:
    """A `tokenizers.Tokenizer` plus the special tokens a model family relies on.

    `prepend_bos` (default: whenever the tokenizer names a BOS token, TransformerLens' rule; so
    GPT-2, Pythia and Llama prompts start with it, Qwen2's, which has none, do not) is what
    `GPT.to_tokens` reads.
    """

    kind = "hf"
    unknown = None

    def __init__(
        self,
        tokenizer: Any,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        prepend_bos: bool | None = None,
    ) -> None:
        self._tok = tokenizer
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.bos_token_id = self._special_id(bos_token)
        self.eos_token_id = self._special_id(eos_token)
        self.pad_token_id = self._special_id(pad_token)
        self.prepend_bos = self.bos_token_id is not None if prepend_bos is None else bool(prepend_bos)

    def _special_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        found = self._tok.token_to_id(token)
        if found is None:
            raise ValueError(f"special token {token!r} is not in the tokenizer's vocabulary")
        return found

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_transformers(cls, tokenizer: Any, prepend_bos: bool | None = None) -> "HFTokenizer":
        """Wrap a `transformers` tokenizer object (a fast one: it runs on a `tokenizers.Tokenizer`)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(
                f"{type(tokenizer).__name__} is not backed by a `tokenizers` tokenizer; load the fast "
                "version (AutoTokenizer.from_pretrained(..., use_fast=True)) or give the tokenizer.json"
            )
        # A private copy: the wrapper changes nothing on the user's object.
        backend = type(backend).from_str(backend.to_str())
        return cls(backend, _token_text(tokenizer.bos_token), _token_text(tokenizer.eos_token),
                   _token_text(tokenizer.pad_token), prepend_bos)

    @classmethod
    def from_directory(cls, directory: str | Path, prepend_bos: bool | None = None) -> "HFTokenizer":
        """Read `tokenizer.json`, with the special tokens named in `tokenizer_config.json` (or
        `special_tokens_map.json`), from a Hugging Face checkpoint directory."""
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{directory} has no tokenizer.json (a slow-only tokenizer, e.g. a bare sentencepiece "
                "tokenizer.model, cannot be read); pass tokenizer=False to load the model without one"
            )
        special: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
            if (directory / name).is_file():
                data = json.loads((directory / name).read_text(encoding="utf-8"))
                special.update({k: data[k] for k in ("bos_token", "eos_token", "pad_token") if k in data})
        return cls(Tokenizer.from_file(str(path)), _token_text(special.get("bos_token")),
                   _token_text(special.get("eos_token")), _token_text(special.get("pad_token")), prepend_bos)

    # ---- nanolens' tokenizer interface -----------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, special tokens spelled out. Ids past the tokenizer's vocabulary (a
        model's embedding is often padded beyond it) decode to nothing."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def id_to_str(self, i: int) -> str:
        return self.decode([i])

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character span of each token of `encode(text)`."""
        return [tuple(o) for o in self._tok.encode(text, add_special_tokens=False).offsets]

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "tokenizer": json.loads(self._tok.to_str()), "bos_token": self.bos_token,
            "eos_token": self.eos_token, "pad_token": self.pad_token, "prepend_bos": self.prepend_bos,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict, where: str | Path = "tokenizer") -> "HFTokenizer":
        spec = field(data, "tokenizer", OBJECT, where)
        special = {name: field(data, name, optional(STR), where, default=None) for name in ("bos_token", "eos_token", "pad_token")}
        prepend = field(data, "prepend_bos", optional(BOOL), where, default=None)
        try:
            backend = Tokenizer.from_str(json.dumps(spec))
        except Exception as err:  # the tokenizers library's own parse error
            raise FileFormatError(f"{where}: tokenizer: not a tokenizers-library tokenizer ({str(err)[:120]})") from None
        return cls(backend, special["bos_token"], special["eos_token"], special["pad_token"], prepend)

    # ---- Hugging Face's files, for export ---------------------------------------------------
    @property
    def backend(self) -> Any:
        """The wrapped `tokenizers.Tokenizer`."""
        return self._tok

    def save_hf(self, directory: str | Path, model_max_length: int | None = None) -> None:
        """Write `tokenizer.json` + `tokenizer_config.json`, as `AutoTokenizer` reads them."""
        write_hf_tokenizer(self._tok, directory, self.bos_token, self.eos_token, self.pad_token, model_max_length)

    def __repr__(self) -> str:
        return f"HFTokenizer(vocab_size={self.vocab_size}, bos={self.bos_token!r}, prepend_bos={self.prepend_bos})"


def write_hf_tokenizer(
    backend: Any,
    directory: str | Path,
    bos_token: str | None = None,
    eos_token: str | None = None,
    pad_token: str | None = None,
    model_max_length: int | None = None,
) -> None:
    """Write a `tokenizers.Tokenizer` as a fast `transformers` tokenizer's two files."""
    directory = Path(directory)
    backend.save(str(directory / "tokenizer.json"))
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    for name, value in (("bos_token", bos_token), ("eos_token", eos_token), ("pad_token", pad_token)):
        if value is not None:
            config[name] = value
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def hf_backend(tokenizer: Any) -> Any | None:
    """A `tokenizers.Tokenizer` that encodes exactly as a nanolens tokenizer does, for export
    (None when there is no tokenizer): Hugging Face and BPE tokenizers already are one; a char
    tokenizer becomes a word-level vocabulary of its characters, split one character at a time."""
    if tokenizer is None:
        return None
    if hasattr(tokenizer, "backend"):
        return tokenizer.backend
    if getattr(tokenizer, "kind", None) != "char":
        raise ValueError(f"a {type(tokenizer).__name__} cannot be written as a Hugging Face tokenizer")
    vocab = {c: i for i, c in enumerate(tokenizer.chars)}
    backend = Tokenizer(token_models.WordLevel(vocab=vocab, unk_token=tokenizer.unknown))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return backend


def _token_text(token: Any) -> str | None:
    """A special token as text: `transformers` writes either a string or {"content": ...}."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, dict):
        return token.get("content")
    return str(token)
