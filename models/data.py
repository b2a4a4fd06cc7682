"""Corpora: the text a model is trained on, and (for the embedded corpus) its ground truth.

`load_corpus(spec)` accepts

- ``"sentiment"``: the embedded default, short procedurally generated stories whose hidden label
  (positive / negative) governs the words all the way through (`nanolens.models.sentiment`);
  works offline, `size` and `seed` choose how much and which text. Each story's label and
  character span come back in `Corpus.stories`.
- ``"shakespeare"``: tiny Shakespeare (1,115,394 characters), from a local copy or downloaded
  once into the user cache (see `shakespeare_path`).
- a path to a UTF-8 text file, or to a folder of ``.txt`` files (searched recursively, read in
  sorted order of their relative paths, joined by a blank line).

The names win over paths: to read a local file called ``sentiment``, pass ``./sentiment``.
Windows line endings (``\\r\\n``) are read as ``\\n`` and a UTF-8 byte-order mark is dropped.
Every problem raises `CorpusError` with a message that names the fix.

Turning text into token arrays, the train/val split and batches live in `nanolens.models.batches`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_CHARS = 1_115_394
SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_NAMES = (SHAKESPEARE_FILE, "input.txt")  # accepted file names inside a directory
DATA_ENV = "NANOLENS_DATA"
DOWNLOAD_TIMEOUT_S = 15.0

CORPUS_NAMES = ("sentiment", "shakespeare")


class CorpusError(ValueError):
    """The corpus cannot be read; the message says why and how to fix it."""


@dataclass(frozen=True)
class Story:
    """One labelled story of a generated corpus: ``corpus.text[start:end]`` (no separator).

    `decision` (absolute offset): ``text[start:decision]`` is the story's neutral opening
    sentence, which says nothing about the label; the label is decided right after it.
    `reveal` (absolute offset): the end of the first sentence that shows the label, so
    ``text[start:reveal]`` already holds sentiment words (positions from here on are
    the natural ones for probes).
    """

    label: str
    start: int
    end: int
    decision: int | None = None
    reveal: int | None = None

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Document:
    """One source file of a corpus read from a folder: ``corpus.text[start:end]``."""

    path: str
    start: int
    end: int


@dataclass
class Corpus:
    """A corpus: its `text`, and where known the labelled `stories` and source `documents`."""

    name: str
    text: str
    stories: list[Story] = field(default_factory=list)
    labels: tuple[str, ...] = ()
    documents: list[Document] = field(default_factory=list)
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.text)

    def story_text(self, i: int) -> str:
        s = self.stories[i]
        return self.text[s.start : s.end]

    def opening(self, i: int) -> str:
        """The neutral opening (the text before the label is decided) of story `i`."""
        s = self.stories[i]
        if s.decision is None:
            raise ValueError(f"story {i} of {self.name!r} has no decision offset")
        return self.text[s.start : s.decision]

    def stories_with(self, label: str) -> list[Story]:
        return [s for s in self.stories if s.label == label]

    def __repr__(self) -> str:
        extra = f", {len(self.stories)} stories" if self.stories else ""
        return f"Corpus({self.name!r}, {len(self.text):,} chars{extra})"


# --------------------------------------------------------------------------- files and folders


def read_text_file(path: str | Path) -> str:
    """Read one UTF-8 file; a non-UTF-8 byte raises `CorpusError` naming the file and offset."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"no such file: {path}; check the path") from None
    except OSError as err:
        raise CorpusError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        offset = err.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        bad = data[offset : offset + 1].hex()
        raise CorpusError(
            f"{path} is not valid UTF-8: byte 0x{bad} at byte offset {offset} cannot be decoded. "
            f"Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 '{path}' > '{path.stem}.utf8.txt'` "
            "(use its real encoding in place of latin1)"
        ) from None
    return text.replace("\r\n", "\n")


def _load_file(path: Path, size: int | None) -> Corpus:
    text = read_text_file(path)
    if not text.strip():
        raise CorpusError(
            f"{path} is empty{' (only whitespace)' if text else ''}; give a file with some text in it"
        )
    text = _truncate(text, size)
    return Corpus(name=path.name, text=text, documents=[Document(str(path), 0, len(text))])


def _load_folder(folder: Path, size: int | None) -> Corpus:
    files = sorted((p for p in folder.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise CorpusError(
            f"folder {folder} holds no .txt files; put the training text in files ending in .txt "
            "(UTF-8), or give the path of one file"
        )
    parts: list[tuple[Path, str]] = []
    for p in files:
        t = read_text_file(p).rstrip("\n")
        if t.strip():
            parts.append((p, t))
    if not parts:
        raise CorpusError(
            f"every .txt file in {folder} is empty ({len(files)} file{'s' * (len(files) != 1)}); "
            "add some text to them"
        )
    pieces, documents, pos = [], [], 0
    for p, t in parts:
        documents.append(Document(str(p), pos, pos + len(t)))
        pieces.append(t)
        pos += len(t) + 2
    text = _truncate("\n\n".join(pieces) + "\n", size)
    documents = [Document(d.path, d.start, min(d.end, len(text))) for d in documents if d.start < len(text)]
    return Corpus(name=folder.name, text=text, documents=documents)


def _truncate(text: str, size: int | None) -> str:
    if size is None:
        return text
    if size <= 0:
        raise CorpusError(f"size must be a positive number of characters, got {size}")
    return text[:size]


# --------------------------------------------------------------------------- tiny Shakespeare


def cache_dir() -> Path:
    """The user cache directory for nanolens: ``$XDG_CACHE_HOME/nanolens`` or ``~/.cache/nanolens``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "nanolens"


def _find_in(path: Path) -> Path | None:
    if path.is_file():
        return path
    if path.is_dir():
        for name in SHAKESPEARE_NAMES:
            if (path / name).is_file():
                return path / name
    return None


def _download(url: str, timeout: float) -> bytes:
    """Fetch `url` (the seam tests replace to simulate being offline)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _how_to_supply(target: Path) -> str:
    return (
        "Supply the file (tiny Shakespeare, the char-rnn `data/tinyshakespeare/input.txt`) in any one of these ways: "
        f"(1) pass its path, e.g. `load_corpus('/path/to/tinyshakespeare.txt')` or `--data /path/to/tinyshakespeare.txt`; "
        f"(2) set the environment variable {DATA_ENV} to the file or to a folder holding "
        f"{' or '.join(SHAKESPEARE_NAMES)}; "
        f"(3) copy it to {target} (the cache; download it on a machine with internet from {SHAKESPEARE_URL})."
    )


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def shakespeare_path(path: str | Path | None = None, *, download: bool = True) -> Path:
    """Where tiny Shakespeare is, fetching it once if need be.

    Looks, in order, at: the explicit `path` (a file, or a folder holding ``tinyshakespeare.txt``
    or ``input.txt``); the environment variable ``NANOLENS_DATA`` (same forms); the user cache
    (``$XDG_CACHE_HOME/nanolens`` or ``~/.cache/nanolens``); and otherwise downloads it from the
    char-rnn repository (short timeout) into the cache, checking its sha256 and writing it
    atomically. Local copies are used as they are (not checksummed). Offline, or on a checksum
    mismatch, a `CorpusError` says exactly how to supply the file.
    """
    if path is not None:
        found = _find_in(Path(path).expanduser())
        if found is None:
            raise CorpusError(
                f"no tiny Shakespeare at {path}: give the text file itself, or a folder holding "
                f"{' or '.join(SHAKESPEARE_NAMES)}"
            )
        return found
    env = os.environ.get(DATA_ENV)
    env_note = ""
    if env:
        found = _find_in(Path(env).expanduser())
        if found is not None:
            return found
        env_note = f" ({DATA_ENV}={env} holds neither {' nor '.join(SHAKESPEARE_NAMES)}.)"
    target = cache_dir() / SHAKESPEARE_FILE
    if target.is_file():
        return target
    if not download:
        raise CorpusError(f"tiny Shakespeare is not on this machine.{env_note} " + _how_to_supply(target))
    try:
        data = _download(SHAKESPEARE_URL, DOWNLOAD_TIMEOUT_S)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise CorpusError(
            f"could not download tiny Shakespeare from {SHAKESPEARE_URL} ({reason}); are you offline?"
            f"{env_note} " + _how_to_supply(target)
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise CorpusError(
            f"the file downloaded from {SHAKESPEARE_URL} has sha256 {digest}, not the expected "
            f"{SHAKESPEARE_SHA256} ({len(data):,} bytes received; a proxy or a changed file?). "
            "Nothing was saved. " + _how_to_supply(target)
        )
    try:
        _write_atomic(target, data)
    except OSError as err:
        raise CorpusError(
            f"downloaded tiny Shakespeare but cannot write the cache file {target} ({err.strerror or err}); "
            f"set XDG_CACHE_HOME to a writable folder, or save the file yourself and set {DATA_ENV}"
        ) from None
    return target


# --------------------------------------------------------------------------- the entry point


def load_corpus(spec: str | os.PathLike, *, size: int | None = None, seed: int = 0) -> Corpus:
    """Load a corpus by name (``"sentiment"``, ``"shakespeare"``) or by path (file or folder).

    `size`: for ``sentiment`` the number of characters to generate (whole stories, so roughly;
    default about 1 MB); for text read from disk, keep only the first `size` characters.
    `seed` chooses the generated stories (ignored for text read from disk).
    """
    if isinstance(spec, str) and spec in CORPUS_NAMES:
        if spec == "sentiment":
            from .sentiment import DEFAULT_SIZE, generate_corpus

            if size is not None and size <= 0:
                raise CorpusError(f"size must be a positive number of characters, got {size}")
            return generate_corpus(size_chars=DEFAULT_SIZE if size is None else size, seed=seed)
        path = shakespeare_path()
        corpus = _load_file(path, size)
        corpus.name = "shakespeare"
        return corpus
    if not isinstance(spec, (str, os.PathLike)):
        raise CorpusError(f"a corpus is a name ({', '.join(CORPUS_NAMES)}) or a path, not {type(spec).__name__}")
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_folder(path, size)
    if path.is_file():
        return _load_file(path, size)
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
