"""Text files and folders of `.txt` files as corpora: UTF-8 only, with errors that name the fix.

Windows line endings (``\\r\\n``) are read as ``\\n`` and a UTF-8 byte-order mark is dropped.
"""

from __future__ import annotations

from pathlib import Path

from .corpus import Corpus, CorpusError, Document


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


def load_file(path: Path, size: int | None) -> Corpus:
    text = read_text_file(path)
    if not text.strip():
        raise CorpusError(
            f"{path} is empty{' (only whitespace)' if text else ''}; give a file with some text in it"
        )
    text = truncate(text, size)
    return Corpus(name=path.name, text=text, documents=[Document(str(path), 0, len(text))])


def load_folder(folder: Path, size: int | None) -> Corpus:
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
    text = truncate("\n\n".join(pieces) + "\n", size)
    documents = [Document(d.path, d.start, min(d.end, len(text))) for d in documents if d.start < len(text)]
    return Corpus(name=folder.name, text=text, documents=documents)


def truncate(text: str, size: int | None) -> str:
    if size is None:
        return text
    if size <= 0:
        raise CorpusError(f"size must be a positive number of characters, got {size}")
    return text[:size]
