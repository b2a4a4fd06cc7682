"""Positive and negative texts for direction finding, from a dataset name: the embedded corpus'
matched pairs, VADER-labelled Shakespeare lines, or a labelled CSV/JSONL file of your own."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nanolens.corpora import sentiment_pairs
from nanolens.models import GPT
from nanolens.probes import LabelledTexts

POSITIVE_LABELS, NEGATIVE_LABELS = {"positive", "pos", "1", "true"}, {"negative", "neg", "0", "false"}


def labelled_pairs(model: GPT, dataset: str, n: int, seed: int) -> tuple[list[str], list[str], str]:
    """(positive texts, negative texts, description) for mean-diff / PCA / probe."""
    block = model.config.block_size
    if dataset == "sentiment":
        pos, neg = sentiment_pairs(n, seed=seed, max_chars=block)
        return pos, neg, f"sentiment_pairs({n}, seed={seed})"

    if dataset == "shakespeare":
        ds = LabelledTexts.from_shakespeare(n=2 * n, max_chars=block, alphabet=getattr(model.tokenizer, "chars", None), seed=seed)
    else:
        if not Path(dataset).is_file():
            raise FileNotFoundError(f"--dataset {dataset!r} is neither sentiment, shakespeare nor an existing .csv/.jsonl file")
        ds = LabelledTexts.from_file(dataset)
    labels = np.asarray([str(y).lower() for y in ds.labels])
    pos = [t[-block:] for t, y in zip(ds.texts, labels) if y in POSITIVE_LABELS][:n]
    neg = [t[-block:] for t, y in zip(ds.texts, labels) if y in NEGATIVE_LABELS][:n]
    if not pos or not neg:
        raise ValueError(f"--dataset {dataset}: needs labels positive/negative (or 1/0); got {sorted(set(labels))[:5]}")
    return pos, neg, f"{dataset} ({len(pos)} positive, {len(neg)} negative)"
