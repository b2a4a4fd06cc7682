"""nanolens.corpora: the text a model trains on, and the ground truth of the embedded one.

    from nanolens.corpora import load_corpus, neutral_openings
    corpus = load_corpus("sentiment", size=20_000)     # or "shakespeare", a file, a folder

Sources: text files and folders (`text_files`), tiny Shakespeare (`shakespeare`), the embedded
`sentiment` story generator and its matched pairs (`pairs`), and the VADER scorer (`vader`).
Nothing here imports torch.
"""

from .corpus import Corpus, CorpusError, Document, Story
from .load import CORPUS_NAMES, load_corpus
from .pairs import gender_pairs, sentiment_pairs
from .sentiment import generate_corpus, generate_story, neutral_openings, pronoun_gender, score_sentiment
from .shakespeare import shakespeare_path
from .text_files import read_text_file
from .vader import vader_score

__all__ = [
    "CORPUS_NAMES", "Corpus", "CorpusError", "Document", "Story", "gender_pairs", "generate_corpus", "generate_story",
    "load_corpus", "neutral_openings", "pronoun_gender", "read_text_file", "score_sentiment", "sentiment_pairs",
    "shakespeare_path", "vader_score",
]
