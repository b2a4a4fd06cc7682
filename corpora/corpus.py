"""What a corpus is: its text, and (for the embedded corpus) its labelled stories.

Loading one by name or path is `nanolens.corpora.load_corpus`; turning text into token arrays,
the train/val split and batches live in `nanolens.training.batches`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
