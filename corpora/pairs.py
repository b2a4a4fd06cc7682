"""Matched pairs of stories from the embedded generator: texts that differ in one property only.

They are what direction finding (`nanolens.steering`) and fine-tuning data read: the same story
told positively and negatively (`sentiment_pairs`), or with a heroine and with a hero
(`gender_pairs`).
"""

from __future__ import annotations

import random
import re

from .corpus import CorpusError
from .sentiment import FEMALE, MALE, generate_story, story_prefix_to_reveal


def sentiment_pairs(n: int, seed: int = 4321, where: str = "reveal", max_chars: int | None = None) -> tuple[list[str], list[str]]:
    """`n` matched (positive, negative) story beginnings from the embedded sentiment generator.

    Pair i is generated twice from one random seed, once per label, so both share the cast,
    the neutral opening and the sentence form, and (up to the reveal) differ only in the
    sentiment words. Texts end at `where`: ``"reveal"`` (the end of the first sentence that
    shows the label: the pair is exactly aligned) or ``"story"`` (the whole stories, which
    drift apart after the reveal). `max_chars` keeps each text's last characters.
    """
    if n < 1:
        raise CorpusError(f"n must be >= 1, got {n}")
    if where not in ("reveal", "story"):
        raise CorpusError(f"where={where!r}: use 'reveal' (end of the first sentiment sentence) or 'story' (whole story)")
    pos, neg = [], []
    for i in range(n):
        s = f"nanolens-pairs-{seed}-{i}"
        p = generate_story("positive", random.Random(s))
        q = generate_story("negative", random.Random(s))
        if where == "reveal":
            p, q = p[: story_prefix_to_reveal(p)], q[: story_prefix_to_reveal(q)]
        if max_chars is not None:
            p, q = p[-max_chars:], q[-max_chars:]
        pos.append(p)
        neg.append(q)
    return pos, neg


def gender_pairs(n: int, seed: int = 4321, max_chars: int | None = None) -> tuple[list[str], list[str]]:
    """`n` matched stories whose hero is a woman in the first and a man in the second.

    A second property of the embedded corpus, independent of the sentiment: pair i is one
    story (label alternating positive / negative) told twice with only the hero's name and
    pronouns changed. Read them with ``position="mean"``; score continuations with
    `nanolens.corpora.sentiment.pronoun_gender`. `max_chars` keeps each text's last characters.
    """
    if n < 1:
        raise CorpusError(f"n must be >= 1, got {n}")
    women, men = [], []
    for i in range(n):
        label = ("positive", "negative")[i % 2]
        for attempt in range(1000):
            s = f"nanolens-heroes-{seed}-{i}-{attempt}"
            names = random.Random(s + "-names")
            try:
                w = generate_story(label, random.Random(s), hero=names.choice(FEMALE))
                m = generate_story(label, random.Random(s), hero=names.choice(MALE))
            except CorpusError:  # the name drawn is this story's companion
                continue
            # a name can make an opening held out, and the generator then draws another one
            if _masked(w) == _masked(m):
                break
        women.append(w[-max_chars:] if max_chars else w)
        men.append(m[-max_chars:] if max_chars else m)
    return women, men


def _masked(story: str) -> str:
    return re.sub(r"\b(she|he|her|him|his|[A-Z][a-z]+)\b", "_", story)
