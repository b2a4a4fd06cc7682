"""Labelled texts for probing: texts, one label each, and optionally where to read each text.

Sources:

- Python lists: `LabelledTexts(texts, labels, positions=None)`;
- a CSV or JSONL file: `LabelledTexts.from_csv` / `from_jsonl` / `from_file`;
- the embedded `sentiment` corpus (ground-truth labels): `LabelledTexts.from_sentiment`, read
  where the label has just been decided (the end of the first sentence that shows it);
- tiny Shakespeare lines labelled by the VADER sentiment lexicon (offline):
  `LabelledTexts.from_shakespeare(pos_threshold=0.5, neg_threshold=-0.5)`.

A position is a token index into its text (negative: from the end), a `(start, end)` span to
average, or None (the last token); for the char-level tokenizer token indices are character
offsets. Bad input raises `ValueError` naming the fix: labels of the wrong length, a single
class, an empty list.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from nanolens.corpora import read_text_file, shakespeare_path
from nanolens.corpora.sentiment import generate_corpus
from nanolens.corpora.vader import vader_score

from .positions import Position, normalise_positions

SENTIMENT_POSITIONS = ("reveal", "decision", "end", "random")
DEFAULT_PROBE_SEED = 1234  # the sentiment corpus is generated with seed 0 for training by default


class LabelledTexts:
    """Texts with one label each (and optional reading positions), validated on construction.

    `labels`: strings, ints or bools give a classification task (at least two classes); floats
    with non-integer values give a regression task (`task` can force either).
    `positions`: None (read the last token), or one entry per text: an int token index, a
    `(start, end)` span, or None.
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[Any] | np.ndarray,
        positions: Sequence[Position] | None = None,
        *,
        name: str = "texts",
        task: str = "auto",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string; wrap it: [text]")
        self.texts = list(texts)
        if not self.texts:
            raise ValueError("no texts given: the list is empty; a probing dataset needs labelled texts")
        bad = [i for i, t in enumerate(self.texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings; text {bad[0]} is {type(self.texts[bad[0]]).__name__}")
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be one value per text (a flat list), got shape {labels.shape}")
        if len(labels) != len(self.texts):
            raise ValueError(
                f"got {len(labels)} labels for {len(self.texts)} texts; give exactly one label per text "
                "(in the same order)"
            )
        self.labels = labels
        self.positions = None if positions is None else normalise_positions(list(positions), len(self.texts))
        if task not in ("auto", "classification", "regression"):
            raise ValueError(f"task={task!r}: use 'auto', 'classification' or 'regression'")
        self.task = _infer_task(labels) if task == "auto" else task
        self.name = name
        self.metadata = dict(metadata or {})
        if self.task == "regression":
            try:
                self.labels = labels.astype(np.float64)
            except ValueError:
                raise ValueError("regression labels must be numbers; non-numeric labels make a classification task") from None
        else:
            self.check_classes()

    # ---- views -------------------------------------------------------------------------------
    @property
    def label_names(self) -> list[str] | None:
        """The classes in sorted order (scikit-learn's `classes_` order), or None for regression."""
        if self.task != "classification":
            return None
        return [str(c) for c in np.unique(self.labels)]

    @property
    def classes(self) -> np.ndarray:
        return np.unique(self.labels)

    def class_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in sorted(Counter(self.labels.tolist()).items())}

    def check_classes(self) -> None:
        """Raise if a classification task has fewer than two classes."""
        classes = np.unique(self.labels)
        if len(classes) < 2:
            only = classes[0].item() if len(classes) else None
            raise ValueError(
                f"all {len(self.labels)} labels are the same class ({only!r}); a probe needs at least two "
                "classes to tell apart: add examples of another class (for VADER-labelled lines, widen "
                "the thresholds or take more lines)"
            )

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        what = self.class_counts() if self.task == "classification" else f"regression, mean {self.labels.mean():.3g}"
        return f"LabelledTexts({self.name!r}, {len(self)} texts, {what})"

    def subset(self, indices: Sequence[int] | np.ndarray) -> "LabelledTexts":
        idx = np.asarray(indices, dtype=np.int64)
        positions = None if self.positions is None else [self.positions[i] for i in idx]
        return LabelledTexts(
            [self.texts[i] for i in idx], self.labels[idx], positions, name=self.name, task=self.task, metadata=self.metadata
        )

    def split(self, test_size: float = 0.25, seed: int = 0) -> tuple["LabelledTexts", "LabelledTexts"]:
        """Train / test split by text (stratified by class for classification)."""
        train, test = split_indices(self.labels, test_size, seed, stratify=self.task == "classification")
        return self.subset(train), self.subset(test)

    def crop(self, max_tokens: int) -> "LabelledTexts":
        """Keep each text's last `max_tokens` characters (char tokenizer: tokens), shifting positions.

        A position that falls in the cut part raises; crop around the position instead.
        """
        texts, positions = [], []
        for i, text in enumerate(self.texts):
            cut = max(0, len(text) - max_tokens)
            texts.append(text[cut:])
            p = None if self.positions is None else self.positions[i]
            if p is None:
                positions.append(None)
                continue
            if isinstance(p, tuple):
                a, b = (x + len(text) if x < 0 else x for x in p)
                shifted: Position = (a - cut, b - cut)
                first = a - cut
            else:
                a = p + len(text) if p < 0 else p
                shifted, first = a - cut, a - cut
            if first < 0:
                raise ValueError(f"text {i}: its reading position {p} lies in the {cut} characters cropped from its front")
            positions.append(shifted)
        has = self.positions is not None
        return LabelledTexts(texts, self.labels, positions if has else None, name=self.name, task=self.task, metadata=self.metadata)

    # ---- files ---------------------------------------------------------------------------------
    @classmethod
    def from_lists(cls, texts: Sequence[str], labels: Sequence[Any], positions: Sequence[Position] | None = None, **kw: Any) -> "LabelledTexts":
        return cls(texts, labels, positions, **kw)

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> "LabelledTexts":
        """A `.csv` (or `.tsv`) or `.jsonl` file; see `from_csv` / `from_jsonl` for the columns."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            return cls.from_csv(path, delimiter="\t" if suffix == ".tsv" else ",", **kw)
        if suffix in (".jsonl", ".ndjson"):
            return cls.from_jsonl(path, **kw)
        raise ValueError(f"{path}: unknown file type {suffix or '(none)'!r}; give a .csv, .tsv or .jsonl file")

    @classmethod
    def from_csv(
        cls, path: str | Path, text_column: str = "text", label_column: str = "label",
        position_column: str | None = None, delimiter: str = ",", **kw: Any,
    ) -> "LabelledTexts":
        """A CSV with a header row naming `text_column` and `label_column` (and optionally a
        `position_column` of token indices). Numeric labels are read as numbers."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = reader.fieldnames or []
            for col in (text_column, label_column) + ((position_column,) if position_column else ()):
                if col not in columns:
                    raise ValueError(f"{path} has no column {col!r}; its columns are {columns} (pass text_column=/label_column=)")
            rows = list(reader)
        texts = [r[text_column] for r in rows]
        labels = _parse_labels([r[label_column] for r in rows])
        positions = None
        if position_column:
            positions = [None if r[position_column] in ("", None) else int(r[position_column]) for r in rows]
        return cls(texts, labels, positions, name=kw.pop("name", path.stem), **kw)

    @classmethod
    def from_jsonl(
        cls, path: str | Path, text_key: str = "text", label_key: str = "label", position_key: str = "position", **kw: Any,
    ) -> "LabelledTexts":
        """One JSON object per line with `text_key` and `label_key` (and optionally `position_key`:
        an int, a [start, end] span, or null)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        texts, labels, positions = [], [], []
        with open(path, encoding="utf-8-sig") as handle:
            for n, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {n} is not JSON ({err.msg}); each line must be one JSON object") from None
                if not isinstance(row, dict) or text_key not in row or label_key not in row:
                    raise ValueError(f"{path} line {n} lacks {text_key!r} or {label_key!r}; each line needs both keys")
                texts.append(row[text_key])
                labels.append(row[label_key])
                p = row.get(position_key)
                positions.append(tuple(p) if isinstance(p, list) else p)
        has_positions = any(p is not None for p in positions)
        return cls(texts, labels, positions if has_positions else None, name=kw.pop("name", path.stem), **kw)

    def to_jsonl(self, path: str | Path) -> Path:
        path = Path(path)
        with open(path, "w", encoding="utf-8") as handle:
            for i, text in enumerate(self.texts):
                row: dict[str, Any] = {"text": text, "label": self.labels[i].item()}
                if self.positions is not None:
                    p = self.positions[i]
                    row["position"] = list(p) if isinstance(p, tuple) else p
                handle.write(json.dumps(row) + "\n")
        return path

    # ---- built-in corpora ----------------------------------------------------------------------
    @classmethod
    def from_sentiment(
        cls,
        n: int = 1000,
        seed: int = DEFAULT_PROBE_SEED,
        position: str = "reveal",
        max_chars: int | None = None,
        labels: Sequence[str] = ("positive", "negative"),
        corpus: Any = None,
    ) -> "LabelledTexts":
        """`n` stories of the embedded sentiment corpus with their ground-truth labels.

        Each text is a story's beginning, ending where it is read (so the last token is the
        reading position): `position="reveal"` (default) at the end of the first sentence that
        shows the label, the point where the model must have inferred it; `"decision"` at the end
        of the neutral opening, before anything about the label is said (a probe should be at
        chance there); `"end"` at the story's end; `"random"` at a random character between the
        reveal and the end (labels for every position after the label is decided).
        `max_chars` (e.g. the model's block_size) keeps only the last `max_chars` characters.
        `seed` picks the stories; the default differs from training's, so the stories are new.
        `corpus`: use these stories instead of generating (a `Corpus` from `generate_corpus`).
        """
        if position not in SENTIMENT_POSITIONS:
            raise ValueError(f"position={position!r}: use one of {', '.join(SENTIMENT_POSITIONS)}")
        if n < 2 and corpus is None:
            raise ValueError(f"n={n}: a probing dataset needs at least 2 stories (one per class)")
        if corpus is None:
            size = n * 400
            corpus = generate_corpus(size, seed=seed, labels=tuple(labels))
            while len(corpus.stories) < n:
                size = int(size * 1.5)
                corpus = generate_corpus(size, seed=seed, labels=tuple(labels))
        stories = corpus.stories[:n]
        rng = random.Random(seed)
        texts, ys = [], []
        for s in stories:
            if position == "reveal":
                stop = s.reveal
            elif position == "decision":
                stop = s.decision
            elif position == "end":
                stop = s.end
            else:
                stop = rng.randint(s.reveal, s.end)
            text = corpus.text[s.start : stop]
            if max_chars is not None:
                text = text[-max_chars:]
            texts.append(text)
            ys.append(s.label)
        return cls(texts, ys, name=f"sentiment[{position}]", metadata={"seed": seed, "position": position, "source": "sentiment"})

    @classmethod
    def from_shakespeare(
        cls,
        path: str | Path | None = None,
        pos_threshold: float = 0.5,
        neg_threshold: float = -0.5,
        n: int | None = None,
        max_chars: int | None = None,
        min_words: int = 3,
        balance: bool = True,
        seed: int = 0,
        alphabet: Sequence[str] | str | None = None,
    ) -> "LabelledTexts":
        """Lines of tiny Shakespeare labelled by VADER's compound score (offline lexicon).

        A line is `positive` when its compound score is >= `pos_threshold`, `negative` when it is
        <= `neg_threshold`, and dropped in between. Speaker names (`ROMEO:`) and lines of fewer
        than `min_words` words are skipped; with `max_chars` (e.g. the model's block_size),
        longer lines are skipped; with `alphabet` (e.g. a char tokenizer's `chars`), lines holding
        other characters are skipped. `balance` keeps as many of each class (the rarer's count);
        `n` caps the total. `path`: the text file (default: found as `load_corpus` finds it).
        """
        if not -1 <= neg_threshold < pos_threshold <= 1:
            raise ValueError(
                f"thresholds must satisfy -1 <= neg_threshold < pos_threshold <= 1, got {neg_threshold} and {pos_threshold}"
            )
        text = read_text_file(shakespeare_path(path))
        allowed = set(alphabet) if alphabet is not None else None
        lines, scores, ys = [], [], []
        for line in text.split("\n"):
            line = line.strip()
            if len(line.split()) < min_words or (line.endswith(":") and len(line.split()) <= 4):
                continue
            if max_chars is not None and len(line) > max_chars:
                continue
            if allowed is not None and not set(line) <= allowed:
                continue
            score = vader_score(line)
            if score >= pos_threshold:
                ys.append("positive")
            elif score <= neg_threshold:
                ys.append("negative")
            else:
                continue
            lines.append(line)
            scores.append(score)
        if not lines:
            raise ValueError(
                f"no line scored >= {pos_threshold} or <= {neg_threshold}; widen the thresholds"
            )
        idx = np.arange(len(lines))
        rng = np.random.default_rng(seed)
        ys_arr = np.array(ys)
        if balance:
            groups = [idx[ys_arr == c] for c in ("positive", "negative")]
            k = min(len(g) for g in groups)
            if n is not None:
                k = min(k, n // 2)
            idx = np.sort(np.concatenate([rng.choice(g, size=k, replace=False) for g in groups if len(g)]))
        elif n is not None and n < len(idx):
            idx = np.sort(rng.choice(idx, size=n, replace=False))
        if len(idx) == 0:  # balance with one empty class
            only = Counter(ys).most_common(1)[0][0]
            raise ValueError(
                f"all {len(ys)} VADER-labelled lines are {only!r}; no line is on the other side of its threshold: "
                "widen the thresholds"
            )
        return cls(
            [lines[i] for i in idx], ys_arr[idx], name="shakespeare[vader]",
            metadata={"pos_threshold": pos_threshold, "neg_threshold": neg_threshold,
                      "scores": [scores[i] for i in idx], "source": "shakespeare"},
        )


def _infer_task(labels: np.ndarray) -> str:
    if labels.dtype.kind == "f":
        finite = labels[np.isfinite(labels)]
        if len(finite) != len(labels):
            raise ValueError("labels hold NaN or infinite values; drop those examples")
        if not np.all(finite == np.round(finite)) or len(np.unique(finite)) > 20:
            return "regression"
    return "classification"


def _parse_labels(values: list[str]) -> list[Any]:
    for convert in (int, float):
        try:
            return [convert(v) for v in values]
        except (TypeError, ValueError):
            continue
    return values


def split_indices(labels: np.ndarray, test_size: float = 0.25, seed: int = 0, stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Train / test indices; stratified by class when possible (every class on both sides)."""
    n = len(labels)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size}")
    n_test = int(round(n * test_size))
    if n_test < 1 or n - n_test < 1:
        raise ValueError(f"{n} examples are too few to split with test_size={test_size}; give more examples")
    idx = np.arange(n)
    strat = None
    if stratify:
        counts = Counter(np.asarray(labels).tolist())
        if min(counts.values()) >= 2 and n_test >= len(counts) and n - n_test >= len(counts):
            strat = labels
    train, test = train_test_split(idx, test_size=n_test, random_state=seed, stratify=strat)
    return np.sort(train), np.sort(test)
