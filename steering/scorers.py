"""Scorers of a continuation's sentiment, in [-1, 1]: the embedded corpus' own word lists
(``"words"``, its ground truth) and VADER (``"vader"``, for natural text and as an independent
second opinion). Any `callable(text) -> float` works where a scorer is asked for."""

from __future__ import annotations

from collections.abc import Callable

from nanolens.corpora.sentiment import score_sentiment
from nanolens.corpora.vader import vader_score

from .vector import SteeringError

Scorer = Callable[[str], float]


def words_scorer(text: str) -> float:
    """The embedded corpus' ground truth: (positive - negative) / (positive + negative) words."""
    return score_sentiment(text)


def vader_scorer(text: str) -> float:
    """VADER's compound score in [-1, 1] (vaderSentiment), for natural English text."""
    return vader_score(text)


SCORERS: dict[str, Scorer] = {"words": words_scorer, "vader": vader_scorer}


def get_scorer(scorer: str | Scorer) -> tuple[str, Scorer]:
    if callable(scorer):
        return getattr(scorer, "__name__", "custom"), scorer
    if scorer not in SCORERS:
        raise SteeringError(f"unknown scorer {scorer!r}; use one of {', '.join(SCORERS)} or a function text -> score")
    return scorer, SCORERS[scorer]
