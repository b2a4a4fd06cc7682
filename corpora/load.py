"""`load_corpus(spec)`: the one entry point from a corpus name or path to its text.

It accepts

- ``"sentiment"``: the embedded default, short procedurally generated stories whose hidden label
  (positive / negative) governs the words all the way through (`nanolens.corpora.sentiment`);
  works offline, `size` and `seed` choose how much and which text. Each story's label and
  character span come back in `Corpus.stories`.
- ``"shakespeare"``: tiny Shakespeare (1,115,394 characters), from a local copy or downloaded
  once into the user cache (see `nanolens.corpora.shakespeare.shakespeare_path`).
- a path to a UTF-8 text file, or to a folder of ``.txt`` files (searched recursively, read in
  sorted order of their relative paths, joined by a blank line).

The names win over paths: to read a local file called ``sentiment``, pass ``./sentiment``.
Every problem raises `CorpusError` with a message that names the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from .corpus import Corpus, CorpusError
from .sentiment import DEFAULT_SIZE, generate_corpus
from .shakespeare import shakespeare_path
from .text_files import load_file, load_folder

CORPUS_NAMES = ("sentiment", "shakespeare")

def load_corpus(spec: str | os.PathLike, *, size: int | None = None, seed: int = 0) -> Corpus:
    """Load a corpus by name (``"sentiment"``, ``"shakespeare"``) or by path (file or folder).

    `size`: for ``sentiment`` the number of characters to generate (whole stories, so roughly;
    default about 1 MB); for text read from disk, keep only the first `size` characters.
    `seed` chooses the generated stories (ignored for text read from disk).
    """
    if isinstance(spec, str) and spec in CORPUS_NAMES:
        if spec == "sentiment":
            if size is not None and size <= 0:
                raise CorpusError(f"size must be a positive number of characters, got {size}")
            return generate_corpus(size_chars=DEFAULT_SIZE if size is None else size, seed=seed)
        path = shakespeare_path()
        corpus = load_file(path, size)
        corpus.name = "shakespeare"
        return corpus
    if not isinstance(spec, (str, os.PathLike)):
        raise CorpusError(f"a corpus is a name ({', '.join(CORPUS_NAMES)}) or a path, not {type(spec).__name__}")
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_folder(path, size)
    if path.is_file():
        return load_file(path, size)
    if path.exists():
        raise CorpusError(f"{path} is neither a file nor a folder; give a UTF-8 text file or a folder of .txt files")
    raw = os.fspath(spec)
    if os.sep not in raw and "/" not in raw and not path.suffix:
        raise CorpusError(
            f"unknown corpus {raw!r}: the built-in corpora are {', '.join(repr(n) for n in CORPUS_NAMES)}; "
            "otherwise give the path of a UTF-8 text file or of a folder of .txt files"
        )
    raise CorpusError(
        f"no such file or folder: {path}; check the path, or use a built-in corpus "
        f"({', '.join(CORPUS_NAMES)})"
    )
