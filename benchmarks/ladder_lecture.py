"""The ladder at the lecture's own settings ("Let's build GPT"), rung by rung beside its figures.

    python benchmarks/ladder.py --lecture                 # every rung, seeds 1337,1,2
    python benchmarks/ladder.py --lecture --iters 50      # a smoke run

Each rung is its nanolens preset at the lecture's sizes: block 8, batch 32, n_embd 32, 4 heads
of 8 once there are several, 3 blocks once there is depth, AdamW at a constant learning rate
(torch's default weight decay 0.01, no clipping, no warmup): the bigram at lr 1e-2 for 3,000
iterations, every other rung at 1e-3 for 5,000. Differences from the lecture's code that remain:
our attention always has its output projection (the lecture adds it with the residual rung),
our MLP always has two layers (the lecture's first feed-forward is one layer and ReLU), and the
bigram table is factorised through n_embd = the vocabulary size (the same function, full rank).
Weights start from the lecture's initialisation (PyTorch's defaults, `lecture_init`), not nanoGPT's.
Rungs are scored on 200 fixed batches of each split, as the lecture's `estimate_loss` averages
200 random ones. The scaled-up rung (10.7M parameters, block 256, hours on a GPU) cannot run
on this CPU; the nanoGPT CPU recipe stands in as the last rung, with its recorded val loss.
Detours (rungs that teach by failing) are trained at the same settings and shown beside.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench_train import data_spec  # a sibling script: --data, else $NANOLENS_DATA, else ../shared's copy
from ladder_core import Rung, paired_gain, plot, train_and_score
from nanolens.corpora import load_corpus
from nanolens.models import GPT, PRESETS, build_tokenizer, preset_config
from nanolens.training import TokenData, TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"
# The CPU stand-in for the lecture's scaled-up rung: benchmarks/results/bench_train_seeds.md, 8 seeds.
CPU_RECIPE = {"val": 1.8938, "se": 0.0023, "source": "nanoGPT's CPU recipe (4L/128, block 64, 2,000 iterations), "
              "mean of 8 seeds in benchmarks/results/bench_train_seeds.md"}


@dataclass(frozen=True)
class Step:
    name: str  # the preset
    lecture: float | None  # the lecture's val loss (None: not in the lecture)
    lesson: str
    overrides: dict = field(default_factory=dict)
    lr: float = 1e-3
    iters: int = 5000
    main: bool = True  # on the main line (False: a detour)


LECTURE = (
    Step("bigram", 2.49, "a lookup table: the next character from the current one alone", dict(n_head=1, tie_weights=False),
         lr=1e-2, iters=3000),
    Step("one_head", 2.4, "one self-attention head: each position chooses which earlier characters to read",
         dict(tie_weights=False)),
    Step("multi_head", 2.28, "four heads of 8 in place of one of 32: several things looked for at once",
         dict(n_head=4, tie_weights=False)),
    Step("feed_forward", 2.27, "an MLP after attention: computation on what was gathered", dict(n_head=4, d_mlp=32, tie_weights=False)),
    Step("residual", 2.09, "three blocks adding to a residual stream (MLP 4x wide), so depth trains",
         dict(n_layer=3, n_head=4, tie_weights=False)),
    Step("layer_norm", 2.08, "pre-norm LayerNorm before each sub-layer and at the end", dict(n_layer=3, n_head=4, tie_weights=False)),
    Step("average", None, "detour: a uniform average of the past also blurs the current character, the one a bigram reads",
         dict(tie_weights=False), main=False),
    Step("deep", None, "detour: three blocks stacked without a residual path: every gradient crosses all of them",
         dict(n_layer=3, n_head=4, tie_weights=False), main=False),
)
BLOCK, BATCH, WIDTH, EVAL_BATCHES = 8, 32, 32, 200


@torch.no_grad()
def lecture_init(model: GPT) -> None:
    """The lecture's initialisation, PyTorch's defaults: N(0, 1) embeddings, `nn.Linear`'s
    Kaiming-uniform weights and biases (nanoGPT draws N(0, 0.02) instead). At these sizes it
    matters: one_head reaches 2.56 from nanoGPT's initialisation and 2.40 from the lecture's."""
    model.embed.W_E.normal_(0.0, 1.0)
    if model.pos_embed is not None and hasattr(model.pos_embed, "W_pos") and isinstance(model.pos_embed.W_pos, torch.nn.Parameter):
        model.pos_embed.W_pos.normal_(0.0, 1.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()
    if not model.config.tie_weights:
        model.unembed.weight.copy_(torch.nn.Linear(model.config.n_embd, model.config.vocab_size).weight)


def train_step(index: int, step: Step, data: TokenData, tokenizer, seed: int, args) -> Rung:
    width = tokenizer.vocab_size if step.name == "bigram" else WIDTH
    config = preset_config(step.name, vocab_size=tokenizer.vocab_size, n_embd=width, block_size=BLOCK, **step.overrides)
    iters = args.iters or step.iters
    train = TrainConfig(batch_size=BATCH, max_iters=iters, learning_rate=step.lr, min_lr=step.lr, decay_lr=False, warmup_iters=0,
                        weight_decay=0.01, grad_clip=0.0, eval_interval=0, eval_iters=1, sample_interval=0,
                        log_interval=max(1, iters // 10), save_checkpoints=False, plot=False, progress=not args.quiet,
                        verbose=False, seed=seed, device="cpu", watch=False)
    return train_and_score(index, step.name, step.lesson, config, train, data, tokenizer, args.eval_batches or EVAL_BATCHES,
                           (BATCH, BLOCK), args.sample_tokens, seed, init=lecture_init)


def markdown(results: dict[str, list[Rung]], seeds: list[int], args, spec: str, total_s: float, vocab: int) -> str:
    main = [s for s in LECTURE if s.main]
    lines = [
        "# The ladder at the lecture's settings", "",
        f"Block {BLOCK}, batch {BATCH}, n_embd {WIDTH}, AdamW at a constant learning rate (weight decay 0.01, no clipping); "
        f"the bigram lr 1e-2 for {args.iters or 3000:,} iterations, the others lr 1e-3 for {args.iters or 5000:,}; seeds "
        f"{', '.join(map(str, seeds))}. Val loss: the mean over seeds of each model's loss on {args.eval_batches or EVAL_BATCHES} "
        "fixed val batches (the same windows for every rung). Gain: over the previous main-line rung, the paired "
        "difference on those windows averaged over seeds, ± its standard error (over seeds when there are several, "
        "else over windows). See the module docstring for what still differs from the lecture's code.", "",
        "| rung | params | val loss (ours) | the lecture | ours - lecture | gain over previous | improves by more than its SE | what it adds |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    previous = None
    verdicts = []
    for step in main:
        runs = results[step.name]
        val = statistics.mean(r.val_loss for r in runs)
        gain_cell, ok_cell = "—", "—"
        if previous is not None:
            gains = [paired_gain(p, r) for p, r in zip(results[previous.name], runs)]
            gain = statistics.mean(g for g, _ in gains)
            se = statistics.stdev(g for g, _ in gains) / len(gains) ** 0.5 if len(gains) > 1 else gains[0][1]
            ok = gain > se
            verdicts.append(ok)
            gain_cell, ok_cell = f"{gain:+.3f} ± {se:.3f}", "yes" if ok else "**no**"
        diff = val - step.lecture
        lines.append(f"| `{step.name}` | {runs[0].params:,} | {val:.3f} | ~{step.lecture:g} | {diff:+.3f}{'' if abs(diff) <= 0.05 else ' (> 0.05)'} "
                     f"| {gain_cell} | {ok_cell} | {step.lesson} |")
        previous = step
    last = results[main[-1].name]
    stand_in = statistics.mean(r.val_loss for r in last) - CPU_RECIPE["val"]
    recipe_params = GPT(preset_config("gpt2", vocab_size=vocab, n_layer=4, n_head=4, n_embd=128, block_size=64)).num_params()
    lines.append(f"| CPU recipe (stand-in for the scaled-up rung) | {recipe_params:,} | {CPU_RECIPE['val']:.3f} | ~1.48 (10.7M, GPU) | — | "
                 f"{stand_in:+.3f} | {'yes' if stand_in > CPU_RECIPE['se'] else '**no**'} | {CPU_RECIPE['source']} |")
    lines += ["", "Detours, at the same settings (compared with the main-line rung they branch from):", "",
              "| detour | val loss | against | difference | the lesson |", "|---|---:|---|---:|---|"]
    for step, against in (("average", "bigram"), ("deep", "feed_forward")):
        detour = statistics.mean(r.val_loss for r in results[step])
        base = statistics.mean(r.val_loss for r in results[against])
        lesson = next(s.lesson for s in LECTURE if s.name == step)
        lines.append(f"| `{step}` | {detour:.3f} | `{against}` {base:.3f} | {detour - base:+.3f} | {lesson} |")
    lines += ["", f"Every main-line rung improves on the one before it by more than its standard error: "
              f"{'yes' if all(verdicts) else 'no'}. Total {total_s / 60:.1f} min on {platform.machine()}, {os.cpu_count()} cores, "
              f"torch {torch.__version__} ({torch.get_num_threads()} thread(s)). Data: {spec}. Plot: `ladder_lecture.png`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--seeds", default="1337,1,2", help="comma-separated training seeds (default 1337,1,2)")
    parser.add_argument("--iters", type=int, default=None, help="override every rung's iterations (smoke runs)")
    parser.add_argument("--eval-batches", type=int, default=None)
    parser.add_argument("--sample-tokens", type=int, default=0)
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    spec = data_spec(args.data)
    text = load_corpus(spec).text
    tokenizer = build_tokenizer("char", text)
    data = TokenData.from_text(text, tokenizer, 0.1)
    start = time.perf_counter()
    results: dict[str, list[Rung]] = {}
    for index, step in enumerate(LECTURE):
        assert step.name in PRESETS
        results[step.name] = [train_step(index, step, data, tokenizer, seed, args) for seed in seeds]
        vals = [r.val_loss for r in results[step.name]]
        print(f"[{index}] {step.name:<13} val {statistics.mean(vals):.3f} ({', '.join(f'{v:.3f}' for v in vals)})"
              f"{'' if step.lecture is None else f'  lecture ~{step.lecture}'}", file=sys.stderr, flush=True)
    md = markdown(results, seeds, args, spec, time.perf_counter() - start, tokenizer.vocab_size)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ladder_lecture.md").write_text(md, encoding="utf-8")
    main_line = [results[s.name][0] for s in LECTURE if s.main]
    plot(main_line, out / "ladder_lecture.png", "The ladder at the lecture's settings (seed 1337)")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
