"""VADER's sentiment score (the `vaderSentiment` lexicon), set up once for every user.

A second scorer beside the embedded corpus' own word lists: it labels natural text such as
Shakespeare's lines for probes, and scores steered continuations independently of the
generator's lexicon.
"""

from __future__ import annotations

from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer


@lru_cache(maxsize=1)
def analyzer() -> SentimentIntensityAnalyzer:
    """The shared analyzer (building one reads the lexicon from disk: do it once)."""
    return SentimentIntensityAnalyzer()


def vader_score(text: str) -> float:
    """VADER's compound score of `text`, in [-1, 1]."""
    return float(analyzer().polarity_scores(text)["compound"])
