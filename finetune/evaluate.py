"""Measuring a fine-tuned policy the way steering is measured, so both stand in one table.

`evaluate_policy` samples continuations of held-out prompts and reports what the steering
evaluation reports (`nanolens.steering.sweep`):

- ``frac_positive``: the share of responses the scorer scores > 0 (default: the embedded
  corpus' word-count sentiment scorer, the steering evaluation's "words");
- ``perplexity``: exp(mean NLL per token) of the responses under the **base** model, as a
  continuation of the bare prompt (`continuation_nll`, steering's own measure);
- ``follow_rate``: the share of responses that are non-empty and end with the template's end
  marker within `max_new_tokens` (what SFT teaches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from nanolens.corpora.sentiment import score_sentiment
from nanolens.models import GPT
from nanolens.steering.fluency import continuation_nll

from .data import Template, pad
from .policy import sample_responses


def evaluate_policy(
    model: GPT,
    prompts: Sequence[str],
    *,
    template: Template | str | None = None,
    scorer: Callable[[str], float] | None = None,
    base: GPT | None = None,
    samples_per_prompt: int = 4,
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
    steering: Any = None,
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Sample `samples_per_prompt` responses to each prompt (formatted with `template`, default
    the model's own) and measure them; returns (stats, one dict per sample).

    `scorer`: text -> score (default the word-count sentiment scorer); `base`: the model whose
    perplexity measures fluency (default `model`); `steering`: applied while sampling."""
    template = Template.named(template) if template is not None else Template.of(model)
    scorer = scorer or score_sentiment
    base = base if base is not None else model
    tok = base.tokenizer
    samples: list[dict[str, Any]] = []
    for i, prompt in enumerate(tqdm(list(prompts), desc="evaluating", leave=False, disable=not progress)):
        r = sample_responses(model, [prompt], template, samples_per_prompt, max_new_tokens, temperature, top_k,
                             seed=seed + 1009 * i, steering=steering)
        context = tok.encode(prompt)
        conts = [tok.encode(template.as_continuation(text)) for text in r.responses]
        tokens, _ = pad([context + c for c in conts], base.device)
        nll, count = continuation_nll(base, tokens, len(context), [len(c) for c in conts])
        for text, ended, n_ll, n in zip(r.responses, r.ended, nll, count):
            samples.append({"prompt": prompt, "response": text, "score": float(scorer(text)),
                            "follows": bool((ended or not template.end) and text.strip()), "nll": float(n_ll), "n_tokens": int(n)})
    n_tokens = sum(s["n_tokens"] for s in samples)
    stats = {
        "template": template.text, "n": len(samples),
        "follow_rate": sum(s["follows"] for s in samples) / len(samples),
        "frac_positive": sum(s["score"] > 0 for s in samples) / len(samples),
        "mean_sentiment": sum(s["score"] for s in samples) / len(samples),
        "perplexity": math.exp(sum(s["nll"] for s in samples) / n_tokens) if n_tokens else float("nan"),
    }
    return stats, samples
