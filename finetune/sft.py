"""Supervised fine-tuning (SFT): pre-training's recipe on prompt/response documents, the loss
on the responses alone.

A pre-trained model completes documents; fine-tuning makes it answer in a wanted way. SFT is
pre-training's recipe on prompt/response documents with the loss on the response alone, so it
reuses the `Trainer` whole: `SFTData` is a batch source whose targets are -1 (ignored) on the
prompt. The run directory is a pre-training run's (``best/``, ``last/``, ``metrics.jsonl``,
``loss_curve.png``; ``resume=True`` continues it) plus ``pairs.jsonl`` (the data, for resuming)
and ``summary.json`` (the compute spent). The fine-tuned model keeps its template in
``config.extra["template"]``, so whoever loads it formats prompts the way it was taught.

>>> model = GPT.load("runs/base/best")
>>> summary = sft(model, load_sft_pairs("pairs.jsonl"), TrainConfig(max_iters=300), "runs/sft")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from nanolens.models import GPT
from nanolens.training import Trainer, TrainConfig

from .data import TEMPLATE_KEY, PromptResponse, SFTData, Template, write_jsonl
from .loop import read_summary, write_summary
from .policy import count_tokens

PAIRS_FILE = "pairs.jsonl"


def sft(
    model: GPT,
    pairs: Sequence[PromptResponse] | SFTData,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    template: Template | str | None = None,
    resume: bool = False,
    callbacks: Iterable[Callable[[dict[str, Any]], Any]] = (),
) -> dict[str, Any]:
    """Fine-tune `model` on prompt/response pairs, the loss on response tokens only.

    The Trainer runs it, so everything of pre-training holds: progress bar with live loss,
    samples (of a held-out pair's prompt, formatted), metrics.jsonl, best/ and last/
    checkpoints written atomically, `resume=True`. `template`: how a pair becomes one document
    (default ``"{prompt}\\n{response}\\n\\n"``); it is saved in the model's config. Returns the
    trainer's summary plus `seconds`, `tokens` (forward token positions) and `template`, also
    written to `out_dir/summary.json`."""
    config = config or TrainConfig()
    template = Template.named(template)
    model.config.extra = {**model.config.extra, TEMPLATE_KEY: template.text}
    block = config.block_size or model.config.block_size
    if isinstance(pairs, SFTData):
        data = pairs
    else:
        if model.tokenizer is None:
            raise ValueError("SFT needs the model's tokenizer to encode the pairs; load the model with GPT.load")
        data = SFTData.from_pairs(pairs, model.tokenizer, template, block, config.val_fraction, config.seed)
        if out_dir is not None and not resume:
            write_jsonl(Path(out_dir) / PAIRS_FILE, pairs)
    if config.sample_prompt == TrainConfig.sample_prompt and model.tokenizer is not None:
        example = data.splits["val"][0]
        config = config.replace(sample_prompt=model.tokenizer.decode(example.ids[: example.prompt_len]))
    before = read_summary(out_dir).get("tokens", 0) if resume and out_dir is not None else 0
    with count_tokens(model) as count:
        summary = Trainer(model, data, config, out_dir, callbacks=callbacks, resume=resume).train()
    summary.update(method="sft", seconds=summary["elapsed"], tokens=before + count.tokens, template=template.text,
                   train_pairs=len(data.splits["train"]), val_pairs=len(data.splits["val"]))
    return write_summary(out_dir, summary)
