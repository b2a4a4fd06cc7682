"""The demo's texts besides its corpus: the prompts it steers (held-out openings, or speaker
headers for Shakespeare) and the matched pairs it chooses layers on."""

from __future__ import annotations

import re
from typing import Any

from nanolens.corpora import sentiment_pairs
from nanolens.corpora.sentiment import story_prefix_to_decision
from nanolens.models import GPT
from nanolens.probes import LabelledTexts

from .plan import DemoPlan


def selection_pairs(data: str, plan: DemoPlan, model: GPT, seed: int, probe_set: LabelledTexts | None, rng: Any) -> tuple[list[str], list[str], list[str]]:
    """(prefixes, positive continuations, negative continuations) for choosing layers: matched
    story beginnings from another seed than the directions' (sentiment), or speaker headers
    with VADER-positive / negative lines (Shakespeare)."""
    block = model.config.block_size
    if data == "sentiment":
        pos, neg = sentiment_pairs(plan.select_pairs, seed=9876 + seed)
        prefixes, pc, nc = [], [], []
        for p, q in zip(pos, neg):
            cut = story_prefix_to_decision(p)
            prefixes.append(p[:cut][-(block // 2):])
            pc.append(p[cut:])
            nc.append(q[cut:])
        return prefixes, pc, nc
    labels = [str(y) for y in probe_set.labels]
    pos = [t for t, y in zip(probe_set.texts, labels) if y == "positive"]
    neg = [t for t, y in zip(probe_set.texts, labels) if y == "negative"]
    k = min(plan.select_pairs, len(pos), len(neg))
    return ["\n"] * k, [" " + t[: block // 2] for t in pos[-k:]], [" " + t[: block // 2] for t in neg[-k:]]


def shakespeare_prompts(text: str, n: int, rng: Any) -> list[str]:
    """Speaker headers ("ROMEO:\\n") from the last tenth of the text (the val split), distinct."""
    tail = text[int(len(text) * 0.9):]
    names = list(dict.fromkeys(m.group(0) for m in re.finditer(r"(?m)^[A-Z][A-Za-z ]{2,20}:\n", tail)))
    if not names:
        names = ["\n"]
    return [names[i % len(names)] for i in rng.permutation(max(n, len(names)))[:n]]
