"""Fine-tuning data: prompt/response and preference pairs, the template that joins them, batches.

A *template* turns a (prompt, response) pair into one document the model reads, e.g. the
default ``"{prompt}\\n{response}\\n\\n"``: the prompt, a newline, the response, then an end marker
(here the blank line that separates the stories of the embedded corpus). Only the response and
the end marker are trained on; at generation time the model gets the formatted prompt and its
answer is read up to the end marker. A char-level model only knows the characters of its corpus,
so the template must use those (`Template.check` says which are missing).

Files are JSON Lines: ``{"prompt": ..., "response": ...}`` for supervised fine-tuning,
``{"prompt": ..., "chosen": ..., "rejected": ...}`` for preferences. A malformed line is skipped
with a warning that lists its line number (an error if no line is usable); pairs longer than the
model's context are skipped the same way. Without a file, the embedded tasks build pairs from
the sentiment corpus' generator: a story's neutral opening as the prompt, its positive
continuation as the response (SFT) or preferred over the negative one (preferences), cut at a
sentence end to fit the context. Held-out prompts (`heldout_prompts`) are openings that never
occur in any generated story.
"""

from __future__ import annotations

import json
import random
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from nanolens.corpora.sentiment import generate_story, neutral_openings, score_sentiment, story_prefix_to_decision
from nanolens.models import GPT
from nanolens.training import DataError

DEFAULT_TEMPLATE = "{prompt}\n{response}\n\n"
TEMPLATES = {
    "chat": DEFAULT_TEMPLATE,  # the prompt, a newline, the response, a blank line: what SFT teaches
    "raw": "{prompt}{response}\n\n",  # the response continues the prompt's text: how a base model reads a story
}
TEMPLATE_KEY = "template"  # where a fine-tuned model's config.extra keeps its template


class FinetuneDataError(DataError):
    """Fine-tuning data that cannot be used; the message names the line and the fix."""


class FinetuneDataWarning(UserWarning):
    """Some lines or pairs were skipped; the message lists them."""


class PromptResponse(NamedTuple):
    prompt: str
    response: str
    line: int | None = None  # the line of the JSONL file it came from


class Preference(NamedTuple):
    prompt: str
    chosen: str
    rejected: str
    line: int | None = None


# ---------------------------------------------------------------------------------------------
# the template
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """``prefix + prompt + separator + response + end``, written as one string with the
    placeholders ``{prompt}`` and ``{response}`` (e.g. ``"Q. {prompt}\\nA. {response}\\n\\n"``)."""

    text: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        t = self.text
        if t.count("{prompt}") != 1 or t.count("{response}") != 1 or t.index("{prompt}") > t.index("{response}"):
            raise FinetuneDataError(
                f"template {t!r} must hold '{{prompt}}' once and then '{{response}}' once, e.g. {DEFAULT_TEMPLATE!r}"
            )

    @classmethod
    def named(cls, name_or_text: "str | Template | None", default: str = DEFAULT_TEMPLATE) -> "Template":
        """A template from a name in TEMPLATES (chat, raw), a template string, or None (`default`)."""
        if isinstance(name_or_text, Template):
            return name_or_text
        if name_or_text is None:
            return cls(default)
        return cls(TEMPLATES.get(name_or_text, name_or_text))

    @classmethod
    def of(cls, model: GPT, default: str = TEMPLATES["raw"]) -> "Template":
        """The template a fine-tuned model was trained with (kept in its config), else `default`:
        a base model just continues the text."""
        return cls(model.config.extra.get(TEMPLATE_KEY, default))

    @property
    def prefix(self) -> str:
        return self.text[: self.text.index("{prompt}")]

    @property
    def separator(self) -> str:
        return self.text[self.text.index("{prompt}") + len("{prompt}") : self.text.index("{response}")]

    @property
    def end(self) -> str:
        """The end marker after a response ('' = none: a response runs to the length limit)."""
        return self.text[self.text.index("{response}") + len("{response}") :]

    def format_prompt(self, prompt: str) -> str:
        return self.prefix + prompt + self.separator

    def format_response(self, response: str) -> str:
        return response + self.end

    def format(self, prompt: str, response: str) -> str:
        return self.format_prompt(prompt) + self.format_response(response)

    @property
    def separates(self) -> bool:
        """Whether whitespace stands between the prompt and the response."""
        return self.format_prompt("x")[-1:].isspace()

    def attach(self, continuation: str) -> str:
        """A continuation of the prompt's text (starting with its own space, as the story's next
        sentence does) as this template's response: unchanged when the response follows the
        prompt directly, without its leading whitespace when the template separates them."""
        return continuation.lstrip() if self.separates else continuation

    def as_continuation(self, response: str) -> str:
        """The inverse of `attach`: a response as text that continues the bare prompt."""
        if self.separates and response and not response[0].isspace():
            return " " + response
        return response

    def cut(self, generated: str) -> tuple[str, bool]:
        """(the response: `generated` up to the end marker, whether the marker was produced)."""
        if self.end and self.end in generated:
            return generated[: generated.index(self.end)], True
        return generated, False

    def check(self, tokenizer: Any) -> None:
        """Raise FinetuneDataError if the tokenizer cannot spell the template's fixed text."""
        try:
            tokenizer.encode(self.prefix + self.separator + self.end)
        except ValueError as err:
            raise FinetuneDataError(
                f"the template {self.text!r} cannot be written with this model's vocabulary ({err}); choose a "
                f"template made of characters the model knows, e.g. {TEMPLATES['raw']!r}"
            ) from None


# ---------------------------------------------------------------------------------------------
# JSONL files
# ---------------------------------------------------------------------------------------------
SFT_FIELDS = ("prompt", "response")
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")


def _line_problem(record: Any, fields: Sequence[str]) -> str | None:
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for name in fields:
        if name not in record:
            return f"no {name!r} field"
        if not isinstance(record[name], str) or not (record[name] or name == "rejected"):
            return f"{name!r} is not a non-empty string"
    if "chosen" in fields and record["chosen"] == record["rejected"]:
        return "'chosen' and 'rejected' are the same text"
    return None


def _list_lines(problems: Sequence[tuple[int, str]], limit: int = 10) -> str:
    shown = "; ".join(f"line {n}: {why}" for n, why in problems[:limit])
    return shown + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


def read_jsonl(path: str | Path, fields: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, record) for every usable line of a JSONL file whose objects hold `fields`
    as non-empty strings (a rejected response may be empty). Blank lines are ignored; other bad lines are skipped with a
    FinetuneDataWarning that lists their numbers; no usable line at all is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give a JSONL file with one {dict.fromkeys(fields, '...')} per line")
    records, problems = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append((number, f"not valid JSON ({err.msg})"))
                continue
            problem = _line_problem(record, fields)
            if problem:
                problems.append((number, problem))
            else:
                records.append((number, {name: record[name] for name in fields}))
    wanted = "{" + ", ".join(f'"{name}": "..."' for name in fields) + "}"
    if not records:
        detail = f" ({_list_lines(problems)})" if problems else ""
        raise FinetuneDataError(f"{path} holds no usable line{detail}; each line must be a JSON object {wanted}")
    if problems:
        warnings.warn(FinetuneDataWarning(
            f"{path}: skipped {len(problems)} malformed line(s), kept {len(records)}: {_list_lines(problems)}"
        ), stacklevel=2)
    return records


def load_sft_pairs(path: str | Path) -> list[PromptResponse]:
    """Prompt/response pairs from a JSONL file (fields prompt, response)."""
    return [PromptResponse(r["prompt"], r["response"], n) for n, r in read_jsonl(path, SFT_FIELDS)]


def load_preferences(path: str | Path) -> list[Preference]:
    """Preference pairs from a JSONL file (fields prompt, chosen, rejected)."""
    return [Preference(r["prompt"], r["chosen"], r["rejected"], n) for n, r in read_jsonl(path, PREFERENCE_FIELDS)]


def write_jsonl(path: str | Path, items: Iterable[NamedTuple]) -> Path:
    """Write pairs as JSONL (without their line numbers), e.g. to keep a run's data beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({k: v for k, v in item._asdict().items() if k != "line"}) for item in items]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# the embedded tasks (the sentiment corpus' generator)
# ---------------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=\.) ")


def _story_parts(label: str, seed: str) -> tuple[str, list[str]]:
    """(the neutral opening, the following sentences) of one generated story."""
    story = generate_story(label, random.Random(seed))
    cut = story_prefix_to_decision(story)
    return story[:cut], _SENTENCE_END.split(story[cut:].strip())


def _longest_fit(n: int, fits_k: Callable[[int], bool], limit: int | None) -> int:
    """The most leading sentences (at most `limit`) for which `fits_k(k)` holds; 0 if none."""
    k = n if limit is None else min(limit, n)
    while k > 0 and not fits_k(k):
        k -= 1
    return k


def _response(template: Template, sentences: Sequence[str], k: int) -> str:
    return template.attach(" " + " ".join(sentences[:k]))


def sentiment_sft_pairs(n: int, seed: int = 0, *, label: str = "positive", template: Template | None = None,
                        fits: Callable[[str, str], bool] | None = None, max_sentences: int | None = None) -> list[PromptResponse]:
    """`n` pairs: a story's neutral opening -> its continuation with `label` (the embedded SFT task).

    Each response holds as many whole sentences as `fits(prompt, response)` allows (see
    `fits_context`); a pair whose first sentence does not fit is left out. Openings are the
    corpus' training openings, never those of `heldout_prompts`."""
    template = template or Template()
    pairs = []
    for i in range(n):
        prompt, sentences = _story_parts(label, f"nanolens-sft-{seed}-{i}")
        k = _longest_fit(len(sentences), lambda k: fits is None or fits(prompt, _response(template, sentences, k)), max_sentences)
        if k:
            pairs.append(PromptResponse(prompt, _response(template, sentences, k)))
    return pairs


def sentiment_preferences(n: int, seed: int = 0, *, template: Template | None = None,
                          fits: Callable[[str, str], bool] | None = None, max_sentences: int | None = None,
                          partial: float = 0.5) -> list[Preference]:
    """`n` pairs: one neutral opening continued positively (chosen) and negatively (rejected).

    Both stories come from one random seed, so they share the cast, the opening and the form of
    each sentence and differ in its sentiment words; both keep the same number of sentences.
    A reward model is asked to score what PPO samples, which the length limit often cuts off
    mid-sentence, so in a share `partial` of the pairs both responses are cut at the same
    fraction of their length (where both still show their sentiment). Trained on whole
    responses only, a reward model scores cut-off text almost at random, and PPO learns to
    exploit that (e.g. by ending every answer at once) instead of writing positively."""
    template = template or Template()
    prefs = []
    for i in range(n):
        prompt, good = _story_parts("positive", f"nanolens-prefs-{seed}-{i}")
        _, bad = _story_parts("negative", f"nanolens-prefs-{seed}-{i}")

        def both_fit(k: int) -> bool:
            return fits is None or all(fits(prompt, _response(template, s, k)) for s in (good, bad))

        k = _longest_fit(min(len(good), len(bad)), both_fit, max_sentences)
        if not k:
            continue
        chosen, rejected = _response(template, good, k), _response(template, bad, k)
        rng = random.Random(f"nanolens-prefs-cut-{seed}-{i}")
        if rng.random() < partial:
            chosen, rejected = _cut_matched(chosen, rejected, rng.uniform(0.3, 0.95))
        prefs.append(Preference(prompt, chosen, rejected))
    return prefs


def _cut_matched(chosen: str, rejected: str, fraction: float) -> tuple[str, str]:
    """Both responses cut at `fraction` of their length, if both cuts still show their sentiment."""
    c, r = chosen[: round(len(chosen) * fraction)], rejected[: round(len(rejected) * fraction)]
    return (c, r) if score_sentiment(c) > 0 > score_sentiment(r) else (chosen, rejected)


def sentiment_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` training prompts (neutral openings of generated stories), e.g. for PPO's rollouts."""
    return [_story_parts("positive", f"nanolens-prompts-{seed}-{i}")[0] for i in range(n)]


def heldout_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` neutral openings that never occur in a generated story: the evaluation prompts, the
    same ones the steering evaluation uses (`nanolens.corpora.sentiment.neutral_openings`)."""
    return neutral_openings(n, seed=seed)


# ---------------------------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------------------------
class Example(NamedTuple):
    """One tokenised document: `ids` = formatted prompt then response + end marker."""

    ids: list[int]
    prompt_len: int


class PreferenceExample(NamedTuple):
    prompt: list[int]
    chosen: list[int]  # response + end marker, without the prompt
    rejected: list[int]


def fits_context(tokenizer: Any, template: Template, block_size: int) -> Callable[[str, str], bool]:
    """`fits(prompt, response)`: does the formatted pair fit in `block_size` tokens?"""

    def fits(prompt: str, response: str) -> bool:
        return len(tokenizer.encode(template.format_prompt(prompt))) + len(tokenizer.encode(template.format_response(response))) <= block_size

    return fits


def _where(item: NamedTuple, index: int) -> str:
    return f"line {item.line}" if item.line is not None else f"pair {index}"


def _encode(tokenizer: Any, text: str, item: NamedTuple, index: int, field: str) -> list[int]:
    try:
        return list(tokenizer.encode(text))
    except ValueError as err:  # UnknownCharactersError for a char-level model
        raise FinetuneDataError(f"{_where(item, index)}: the {field} cannot be encoded: {err}") from None


def _report_too_long(too_long: list[str], kept: int, block_size: int, what: str) -> None:
    if not too_long:
        return
    shown = ", ".join(too_long[:10]) + (f" and {len(too_long) - 10} more" if len(too_long) > 10 else "")
    why = (f"longer than the model's context (block_size={block_size} tokens for the formatted prompt, the response "
           f"and the end marker): {shown}")
    if not kept:
        raise FinetuneDataError(f"all {len(too_long)} {what} are {why}; shorten them, or fine-tune a model with a larger block_size")
    warnings.warn(FinetuneDataWarning(f"skipped {len(too_long)} of {len(too_long) + kept} {what}, {why}"), stacklevel=3)


def encode_pairs(pairs: Sequence[PromptResponse], tokenizer: Any, template: Template, block_size: int) -> list[Example]:
    """Tokenise prompt/response pairs; pairs longer than `block_size` are skipped with a warning.

    The formatted prompt and the response are encoded separately and joined, so the prompt's
    tokens are exactly those the model is given at generation time."""
    template.check(tokenizer)
    out, too_long = [], []
    for i, pair in enumerate(pairs):
        prompt = _encode(tokenizer, template.format_prompt(pair.prompt), pair, i, "prompt")
        response = _encode(tokenizer, template.format_response(pair.response), pair, i, "response")
        if len(prompt) + len(response) > block_size:
            too_long.append(_where(pair, i))
        elif not prompt or not response:
            raise FinetuneDataError(f"{_where(pair, i)}: the formatted prompt and the response must each be at least one token")
        else:
            out.append(Example(prompt + response, len(prompt)))
    _report_too_long(too_long, len(out), block_size, "pairs")
    return out


def encode_preferences(prefs: Sequence[Preference], tokenizer: Any, template: Template, block_size: int) -> list[PreferenceExample]:
    """Tokenise preference pairs; a pair whose longer response does not fit is skipped with a warning."""
    template.check(tokenizer)
    out, too_long = [], []
    for i, pref in enumerate(prefs):
        prompt = _encode(tokenizer, template.format_prompt(pref.prompt), pref, i, "prompt")
        chosen = _encode(tokenizer, template.format_response(pref.chosen), pref, i, "chosen response")
        rejected = _encode(tokenizer, template.format_response(pref.rejected), pref, i, "rejected response")
        if len(prompt) + max(len(chosen), len(rejected)) > block_size:
            too_long.append(_where(pref, i))
        elif not prompt:
            raise FinetuneDataError(f"{_where(pref, i)}: the formatted prompt is empty; give a prompt or a template with a prefix")
        else:
            out.append(PreferenceExample(prompt, chosen, rejected))
    _report_too_long(too_long, len(out), block_size, "preference pairs")
    return out


def split_examples(items: Sequence[Any], val_fraction: float, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """A shuffled (train, val) split with at least one item in each."""
    if len(items) < 2:
        raise FinetuneDataError(f"only {len(items)} usable pair(s): at least 2 are needed (one is held out to measure on)")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(items) * val_fraction)), len(items) - 1)
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


def pad(seqs: Sequence[Sequence[int]], device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """Right-padded ids [batch, longest] (padding id 0: causal attention never lets a real token
    see it) and each row's length [batch]."""
    width = max(len(s) for s in seqs)
    tokens = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return tokens.to(device), torch.tensor([len(s) for s in seqs], device=device)


# ---------------------------------------------------------------------------------------------
# batches for the Trainer
# ---------------------------------------------------------------------------------------------
class SFTData:
    """Prompt/response examples as the Trainer's batch source (it reads `get_batch`, `n_train`,
    `n_val`, `vocab_size` and `check_block_size`, as of `TokenData`).

    A batch is `batch_size` random examples, right-padded: x the ids, y the next ids with -1 (the
    loss' ignore index) on every prompt position and on the padding, so the loss is the
    response's alone.
    """

    def __init__(self, train: Sequence[Example], val: Sequence[Example], vocab_size: int, meta: dict[str, Any] | None = None) -> None:
        if not train or not val:
            raise FinetuneDataError("SFTData needs at least one train and one val example")
        self.splits = {"train": list(train), "val": list(val)}
        self.vocab_size = int(vocab_size)
        self.meta = dict(meta or {})

    @classmethod
    def from_pairs(cls, pairs: Sequence[PromptResponse], tokenizer: Any, template: Template, block_size: int,
                   val_fraction: float = 0.1, seed: int = 0) -> "SFTData":
        examples = encode_pairs(pairs, tokenizer, template, block_size)
        train, val = split_examples(examples, val_fraction, seed)
        return cls(train, val, tokenizer.vocab_size, meta={"template": template.text, "pairs": len(examples)})

    @property
    def n_train(self) -> int:
        return sum(len(e.ids) for e in self.splits["train"])

    @property
    def n_val(self) -> int:
        return sum(len(e.ids) for e in self.splits["val"])

    def split(self, name: str) -> np.ndarray:
        """A split's examples end to end, as `TokenData.split` gives a token stream (what the
        trainer's watch reads its windows from)."""
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; use 'train' or 'val'")
        return np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in self.splits[name]])

    def mean_length(self, split: str = "train") -> float:
        examples = self.splits[split]
        return sum(len(e.ids) for e in examples) / len(examples)

    def __repr__(self) -> str:
        return f"SFTData(train={len(self.splits['train'])} pairs, val={len(self.splits['val'])} pairs, vocab_size={self.vocab_size})"

    def check_block_size(self, block_size: int) -> None:
        longest = max(len(e.ids) for split in self.splits.values() for e in split)
        if longest > block_size:
            raise FinetuneDataError(f"an example of {longest} tokens is longer than block_size {block_size}; encode the pairs with block_size={block_size}")

    def get_batch(self, split: str, batch_size: int, block_size: int, generator: torch.Generator | None = None,
                  device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
        examples = self.splits[split]
        picks = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        chosen = [examples[i] for i in picks]
        tokens, lengths = pad([e.ids for e in chosen])
        x, y = tokens[:, :-1].clone(), tokens[:, 1:].clone()
        positions = torch.arange(y.shape[1])
        prompt_lens = torch.tensor([e.prompt_len for e in chosen])
        y[(positions[None] < prompt_lens[:, None] - 1) | (positions[None] >= lengths[:, None] - 1)] = -1
        return x.to(device), y.to(device)
