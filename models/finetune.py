"""Fine-tuning after pre-training: supervised fine-tuning (SFT), and the pieces the preference
methods share (`nanolens.models.reward`, `.ppo`, `.dpo`).

A pre-trained model completes documents; fine-tuning makes it answer in a wanted way. SFT is
pre-training's recipe on prompt/response documents with the loss on the response alone, so it
reuses the `Trainer` whole: `SFTData` is a batch source whose targets are -1 (ignored) on the
prompt. The run directory is a pre-training run's (``best/``, ``last/``, ``metrics.jsonl``,
``loss_curve.png``; ``resume=True`` continues it) plus ``pairs.jsonl`` (the data, for resuming)
and ``summary.json`` (the compute spent). The fine-tuned model keeps its template in
``config.extra["template"]``, so whoever loads it formats prompts the way it was taught.

>>> model = GPT.load("runs/base/best")
>>> summary = sft(model, load_sft_pairs("pairs.jsonl"), TrainConfig(max_iters=300), "runs/sft")

Shared helpers: `forward_with_hidden` (logits and the final residual in one pass, for value and
reward heads), `response_logprobs` (log-probabilities of each row's response tokens), `fit` (the
loop of the reward model and DPO: AdamW, nanoGPT's schedule, progress bar, metrics), `RunLog`,
`count_tokens` (the compute a method spends) and `plot_curves`.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor, nn

from .finetune_data import TEMPLATE_KEY, PromptResponse, SFTData, Template, pad, write_jsonl
from .trainer import METRICS_FILE, Trainer, TrainConfig, configure_optimizer, notify, resolve_device, save_png, stream_seed

if TYPE_CHECKING:
    from .gpt import GPT

SUMMARY_FILE = "summary.json"
PAIRS_FILE = "pairs.jsonl"


# ---------------------------------------------------------------------------------------------
# forward passes over (prompt, response) rows
# ---------------------------------------------------------------------------------------------
def forward_with_hidden(model: "GPT", tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(logits [batch, pos, vocab], the final residual after ln_final [batch, pos, d_model])."""
    hidden = model.ln_final(model(tokens, stop_at_layer=model.config.n_layer))
    return model.unembed(hidden), hidden


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log p(tokens[:, t + 1] | tokens[:, : t + 1]) for every t: [batch, pos - 1]."""
    return torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)


def response_view(values: Tensor, prompt_lens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position values [batch, pos - 1] (position t predicts token t + 1), gathered at each
    row's response tokens and left-aligned: ([batch, longest response], mask)."""
    resp_lens = lengths - prompt_lens
    width = max(int(resp_lens.max()), 1)
    steps = torch.arange(width, device=values.device)
    index = (prompt_lens[:, None] - 1 + steps[None]).clamp(max=values.shape[1] - 1)
    mask = (steps[None] < resp_lens[:, None]).to(values.dtype)
    return values.gather(1, index) * mask, mask


def response_logprobs(model: "GPT", tokens: Tensor, prompt_lens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probabilities of each row's response tokens: ([batch, longest response], mask)."""
    return response_view(token_logprobs(model(tokens), tokens), prompt_lens, lengths)


class Rollouts(NamedTuple):
    tokens: Tensor  # [rows, pos], right-padded: formatted prompt, response, end marker
    prompt_lens: Tensor
    lengths: Tensor
    prompts: list[str]
    responses: list[str]  # the text before the end marker
    ended: list[bool]  # whether the end marker was produced


def cut_response(tokenizer: Any, ids: list[int], template: Template) -> tuple[list[int], str, bool]:
    """(the response's ids through the end marker, its text before the marker, marker found)."""
    text, ended = template.cut(tokenizer.decode(ids))
    if not ended:
        return ids, text, False
    n = next(n for n in range(1, len(ids) + 1) if template.end in tokenizer.decode(ids[:n]))
    return ids[:n], text, True


@torch.no_grad()
def sample_responses(model: "GPT", prompts: Sequence[str], template: Template, samples: int, max_new_tokens: int,
                     temperature: float = 1.0, top_k: int | None = None, seed: int = 0, steering: Any = None) -> Rollouts:
    """`samples` responses to each prompt (formatted with `template`), cut after the end marker."""
    tok, block = model.tokenizer, model.config.block_size
    seqs, prompt_lens, kept_prompts, responses, ended = [], [], [], [], []
    for j, prompt in enumerate(prompts):
        ids = tok.encode(template.format_prompt(prompt))
        room = min(max_new_tokens, block - len(ids))
        if room < 1:
            raise ValueError(f"the prompt {prompt!r} is {len(ids)} tokens formatted, which leaves no room in the "
                             f"context (block_size={block}); shorten it")
        out = model.generate(torch.tensor([ids] * samples, device=model.device), max_new_tokens=room,
                             temperature=temperature, top_k=top_k, seed=seed + 7919 * j, stop=template.end or None,
                             steering=steering)
        for row in out[:, len(ids):].tolist():
            resp_ids, text, done = cut_response(tok, row, template)
            seqs.append(ids + resp_ids)
            prompt_lens.append(len(ids))
            kept_prompts.append(prompt)
            responses.append(text)
            ended.append(done)
    tokens, lengths = pad(seqs, model.device)
    return Rollouts(tokens, torch.tensor(prompt_lens, device=model.device), lengths, kept_prompts, responses, ended)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy that never trains: the reference model of PPO and DPO."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


# ---------------------------------------------------------------------------------------------
# compute, logs, plots
# ---------------------------------------------------------------------------------------------
class TokenCount:
    tokens: int = 0


@contextmanager
def count_tokens(*models: nn.Module) -> Iterator[TokenCount]:
    """Count the token positions every forward pass of `models` processes (rows x positions;
    one per row per step of KV-cached generation): the compute a method spends."""
    count = TokenCount()

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("input")
        if isinstance(x, Tensor):
            count.tokens += x.numel()

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in models]
    try:
        yield count
    finally:
        for h in handles:
            h.remove()


class RunLog:
    """A run's metrics.jsonl, progress bar and callbacks, as the Trainer keeps them: each
    record is written (flushed) and handed to the callbacks; a callback may raise StopTraining."""

    def __init__(self, out_dir: str | Path | None, total: int, desc: str, progress: bool = True,
                 callbacks: Iterable[Callable[[dict[str, Any]], Any]] = ()) -> None:
        from tqdm.auto import tqdm

        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.records: list[dict[str, Any]] = []
        self.callbacks = list(callbacks)
        self.stop = False
        self.start = time.perf_counter()
        self._file = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.out_dir / METRICS_FILE, "w", encoding="utf-8")
        self.bar = tqdm(total=total, desc=desc, unit="it", disable=not progress, dynamic_ncols=True, file=sys.stderr)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def emit(self, record: dict[str, Any], postfix: Sequence[str] = ()) -> None:
        record = {**record, "elapsed": round(self.elapsed, 3)}
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        shown = [f"{k} {record[k]:.3f}" for k in postfix if isinstance(record.get(k), (int, float))]
        if shown:
            self.bar.set_postfix_str(", ".join(shown), refresh=False)
        self.stop |= notify(self.callbacks, record)

    def close(self) -> None:
        self.bar.close()
        if self._file is not None:
            self._file.close()
            self._file = None


def plot_curves(records: Sequence[dict[str, Any]], panels: Sequence[tuple[str, Sequence[str]]], path: str | Path,
                title: str, x: str = "iter") -> Path | None:
    """One panel per (y label, metric keys) against `x`, from metrics records; a PNG (Agg canvas,
    so no display is needed). Returns None when there is nothing to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(label, [k for k in keys if any(r.get(k) is not None for r in records)]) for label, keys in panels]
    panels = [(label, keys) for label, keys in panels if keys]
    if not panels:
        return None
    fig = Figure(figsize=(5.2 * len(panels), 3.8), dpi=110)
    FigureCanvasAgg(fig)
    for i, (label, keys) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        for key in keys:
            points = [(r[x], r[key]) for r in records if r.get(key) is not None and r.get(x) is not None]
            ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=key.replace("_", " "))
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def write_summary(out_dir: str | Path | None, summary: dict[str, Any]) -> dict[str, Any]:
    """Write `summary.json` (the method, its compute in seconds and tokens, its results)."""
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    return summary


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------
# the loop of the reward model and DPO
# ---------------------------------------------------------------------------------------------
def fit(module: nn.Module, batch_loss: Callable[[list[int]], tuple[Tensor, dict[str, float]]], n_train: int,
        config: TrainConfig, log: RunLog, evaluate: Callable[[], dict[str, float]] | None = None,
        postfix: Sequence[str] = ("loss",), stream: str = "fit") -> None:
    """Minimise `batch_loss(indices)` over random batches of `config.batch_size` training items:
    AdamW (weight decay on matrices), warmup + cosine decay, gradient clipping; a "log" record
    every `log_interval` iterations and an "eval" record of `evaluate()` every `eval_interval`
    and at the end. Batches come from a generator seeded by (seed, stream, iteration)."""
    device_type = torch.device(resolve_device(config.device)).type
    optimizer = configure_optimizer(module, config, device_type)
    params = [p for p in module.parameters() if p.requires_grad]
    generator = torch.Generator()

    def run_eval(it: int) -> None:
        if evaluate is not None:
            module.eval()
            with torch.no_grad():
                log.emit({"kind": "eval", "iter": it, **evaluate()}, postfix)
            module.train()

    module.train()
    done = 0
    for it in range(config.max_iters):
        if log.stop:
            break
        lr = config.lr_at(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        generator.manual_seed(stream_seed(config.seed, stream, it))
        indices = torch.randint(n_train, (config.batch_size,), generator=generator).tolist()
        loss, stats = batch_loss(indices)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.bar.update(1)
        done = it + 1
        if done % config.log_interval == 0:
            log.emit({"kind": "log", "iter": done, "loss": loss.item(), "lr": lr, **stats}, postfix)
        if config.eval_interval and done % config.eval_interval == 0 and done < config.max_iters:
            run_eval(done)
    run_eval(done)
    module.eval()


# ---------------------------------------------------------------------------------------------
# supervised fine-tuning
# ---------------------------------------------------------------------------------------------
def sft(
    model: "GPT",
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
