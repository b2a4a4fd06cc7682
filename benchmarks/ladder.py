"""The simple-to-complex ladder on tiny Shakespeare: every rung, one equal budget, one table.

    python benchmarks/ladder.py                    # every rung of LADDER, 600 iterations each
    python benchmarks/ladder.py --iters 20         # a smoke run
    python benchmarks/ladder.py --rungs bigram,average,one_head
    python benchmarks/ladder.py --lecture          # the lecture's settings, beside its figures (ladder_lecture.py)

Each rung of `nanolens.models.LADDER` (bigram -> average -> one_head -> multi_head ->
feed_forward -> deep -> residual -> layer_norm -> gpt2 -> modern) is built from its preset at the same
width (n_embd 128) and context (block_size 64), initialised from the same seed, and trained by
the same `Trainer` with the same budget: the same iterations, batch 12, AdamW lr 1e-3 with
warmup and cosine decay to 1e-4, weight decay 0.1, grad clip 1.0. Training batches are drawn
from a generator re-seeded from (seed, iteration), so every rung sees exactly the same windows
in the same order.

Every rung is then scored on the same fixed val windows (and train windows), so the gain of a
rung over the one before is a paired difference; its standard error over those windows is
printed with it (it covers the finite evaluation sample, not the luck of one training run).

Writes (default `benchmarks/results/`):

- ``ladder.md``: rung, preset, parameters, val loss, gain over the previous rung, and one
  sentence saying what the rung adds and what that did here, generated from the preset's
  description and the measured difference; then a short sample of each rung. Re-running
  overwrites it (hand-written commentary included).
- ``ladder.png``: val (and train) loss per rung.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from nanolens.corpora import load_corpus
from nanolens.models import LADDER, PRESETS, build_tokenizer, preset_config
from nanolens.training import TokenData, TrainConfig

from bench_train import data_spec  # a sibling script: --data, else $NANOLENS_DATA, else ../shared's copy
import ladder_lecture
from ladder_core import Rung, paired_gain, plot, train_and_score

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# What each rung adds, as a phrase for the generated sentence (the preset's description says more).
ADDS = {
    "bigram": "a lookup table from the current character to the next",
    "average": "a uniform average of every earlier character's embedding",
    "one_head": "one attention head that chooses which earlier characters to read",
    "multi_head": "four smaller heads in place of one, each free to look for something else",
    "feed_forward": "an MLP after attention, per-position computation on what was gathered",
    "deep": "four of those blocks stacked, each replacing the stream (no residual path)",
    "residual": "a residual stream through the same four blocks (each adds its output instead of replacing the stream)",
    "layer_norm": "pre-norm LayerNorm before each sub-layer and at the end",
    "gpt2": "GELU in place of ReLU, which makes the block exactly nanoGPT's",
    "modern": "rotary positions, RMSNorm, a SwiGLU MLP and no biases",
}
# Why a rung may buy nothing (or cost something) at a short, equal budget.
CAVEATS = {
    "average": "a uniform average also blurs the current character, the one a bigram relies on, into its whole past",
    "one_head": "one head of a single layer with no MLP can only copy embeddings from the past, not compute on them",
    "multi_head": "each 32-wide head carries a quarter of the width, so what one head gains in choice it loses in detail",
    "feed_forward": "without a residual path the MLP must rebuild everything it passes on",
    "deep": "without a residual path every gradient must pass through all four blocks, and each must re-encode everything it passes on",
    "residual": "a stream that every block adds to is harder to keep at a steady scale without normalisation",
    "layer_norm": "with a residual stream already in place and a short, clipped schedule there is little instability left to fix",
    "gpt2": "GELU is nearly linear for the small inputs an MLP sees early in training, where ReLU bends at any scale, so over a short budget it can lag",
    "modern": "rotary positions, RMSNorm and SwiGLU pay off mostly at longer contexts and larger scale than this",
}
GAINS = {
    "average": "context beyond the current character is the first information a bigram cannot have",
    "one_head": "choosing which characters to read keeps the useful ones sharp instead of averaging them away",
    "multi_head": "several heads can track the previous character and the start of the word at once",
    "feed_forward": "the MLP turns what attention gathered into features for the prediction",
    "deep": "four blocks can compose what one block computes",
    "residual": "gradients flow straight through the additions, so all four blocks train at once, each refining the stream",
    "layer_norm": "normalised inputs keep every sub-layer at a steady scale, so the same learning rate goes further",
    "gpt2": "GELU's smooth gate passes a little gradient where ReLU passes none",
    "modern": "rotary positions give every head relative offsets from the first step, where learned position vectors must be trained first, and the gated MLP adds capacity",
}


def train_rung(index: int, name: str, data: TokenData, tokenizer, args) -> Rung:
    config = preset_config(name, vocab_size=tokenizer.vocab_size, n_embd=args.n_embd, block_size=args.block_size)
    train_config = TrainConfig(
        batch_size=args.batch_size, block_size=args.block_size, max_iters=args.iters, learning_rate=args.lr,
        min_lr=args.lr / 10, warmup_iters=max(1, args.iters // 20), weight_decay=0.1, grad_clip=1.0,
        eval_interval=0, eval_iters=1, sample_interval=0, log_interval=max(1, args.iters // 10),
        save_checkpoints=False, plot=False, progress=not args.quiet, verbose=False, seed=args.seed, device="cpu", watch=False,
    )
    return train_and_score(index, name, PRESETS[name].description, config, train_config, data, tokenizer, args.eval_batches,
                           (args.batch_size, args.block_size), args.sample_tokens, args.seed)


def explain(rung: Rung, previous: Rung | None) -> str:
    """One sentence from what the rung adds (its preset) and what the measurement says."""
    adds = ADDS.get(rung.name, rung.description.split(":")[0].rstrip("."))
    if previous is None:
        return (f"The baseline, {adds}: with no context at all it can only learn which character tends to "
                f"follow which, and {rung.val_loss:.2f} nats is what that knowledge is worth.")
    gain, se = rung.gain, rung.gain_se
    threshold = max(0.01, 2 * se)
    pct = 100 * gain / previous.val_loss
    if gain > 0.1:
        why = GAINS.get(rung.name, "the new piece adds capacity the previous rung lacked")
        return f"Adds {adds}: val loss falls by {gain:.3f} ({pct:.0f}%), a large gain, because {why}."
    if gain > threshold:
        why = GAINS.get(rung.name, "the new piece adds a little capacity")
        return f"Adds {adds}: a small but measurable gain of {gain:.3f} ({pct:.1f}%), as {why}."
    caveat = CAVEATS.get(rung.name, "the change matters little at this budget")
    if gain >= -threshold:
        return (f"Adds {adds}, yet val loss moves by only {gain:+.3f} (noise level ±{threshold:.3f}): "
                f"{caveat}.")
    return f"Adds {adds}, but val loss rises by {-gain:.3f} ({-pct:.1f}%): {caveat}."


def markdown(rungs: list[Rung], args, spec: str, total_s: float) -> str:
    header = ["#", "rung", "params", "val loss", "train loss", "gain over previous", "time", "what it adds and what it did here"]
    rows = []
    for r in rungs:
        gain = "—" if r.gain is None else f"{r.gain:+.3f} ± {r.gain_se:.3f}"
        rows.append([str(r.index), f"`{r.name}`", f"{r.params:,}", f"{r.val_loss:.3f}", f"{r.train_loss:.3f}", gain,
                     f"{r.seconds:.0f} s", r.sentence])
    lines = [
        "# The simple-to-complex ladder on tiny Shakespeare",
        "",
        f"Every rung trained with one equal budget: {args.iters} iterations of batch {args.batch_size} x block "
        f"{args.block_size} ({args.iters * args.batch_size * args.block_size:,} tokens), n_embd {args.n_embd}, AdamW lr "
        f"{args.lr:g} -> {args.lr / 10:g} (warmup {max(1, args.iters // 20)}, cosine decay), weight decay 0.1, grad clip "
        f"1.0, the same seed ({args.seed}) and the same training batches. Losses are cross-entropy in nats per "
        f"character on the same {args.eval_batches} fixed windows of each split for every rung; the gain is the "
        f"previous rung's val loss minus this one's (positive = better), ± the standard error of that paired "
        "difference over the evaluation windows (it does not cover run-to-run training noise). Params exclude "
        "position embeddings, as nanoGPT counts them.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if h in ("#", "params", "val loss", "train loss", "time") else "---" for h in header) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        f"Total {total_s / 60:.1f} min on {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''}); 1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end (other processes share the cores). Data: {spec}. Plot: `ladder.png`.",
    ]
    if any(r.sample for r in rungs):
        lines += ["", "## A sample from each rung", "",
                  f"{args.sample_tokens} characters after a newline, temperature 0.8, seed {args.seed}.", ""]
        for r in rungs:
            text = r.sample.strip("\n").replace("```", "'''")
            lines += [f"**{r.name}** (val {r.val_loss:.3f})", "", "```", text, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    for mode, run in (("--lecture", ladder_lecture.main),):
        if mode in argv:
            return run([a for a in argv if a != mode])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="tiny Shakespeare (default: $NANOLENS_DATA, else ../shared/data/tinyshakespeare.txt)")
    parser.add_argument("--iters", type=int, default=600, help="training iterations per rung (default 600)")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (decays to a tenth)")
    parser.add_argument("--eval-batches", type=int, default=100, help="fixed windows per split to score each rung on")
    parser.add_argument("--sample-tokens", type=int, default=120, help="characters sampled from each rung (0: none)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--rungs", default=None, help="comma-separated presets (default: the whole LADDER)")
    parser.add_argument("--out-dir", default=str(RESULTS), help="where ladder.md and ladder.png go")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, robust on shared cores; 0: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.rungs.split(",")] if args.rungs else [p.name for p in LADDER]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        parser.error(f"unknown rung(s) {unknown}; the ladder is: {', '.join(PRESETS)}")

    spec = data_spec(args.data)
    text = load_corpus(spec).text
    tokenizer = build_tokenizer("char", text)
    data = TokenData.from_text(text, tokenizer, 0.1)
    data.check_block_size(args.block_size)
    print(f"# ladder on {spec}: {data!r}; {args.iters} iterations per rung", file=sys.stderr)

    start = time.perf_counter()
    rungs: list[Rung] = []
    for i, name in enumerate(names):
        rung = train_rung(i, name, data, tokenizer, args)
        previous = rungs[-1] if rungs else None
        if previous is not None:
            rung.gain, rung.gain_se = paired_gain(previous, rung)
        rung.sentence = explain(rung, previous)
        rungs.append(rung)
        gain = "" if rung.gain is None else f", gain {rung.gain:+.3f}"
        print(f"[{i}] {name:<13} {rung.params:>9,} params  val {rung.val_loss:.3f}  train {rung.train_loss:.3f}"
              f"{gain}  ({rung.seconds:.0f} s, {rung.tokens_per_s:,.0f} tok/s)", file=sys.stderr, flush=True)
    total = time.perf_counter() - start

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown(rungs, args, spec, total)
    (out_dir / "ladder.md").write_text(md, encoding="utf-8")
    png = plot(rungs, out_dir / "ladder.png", f"The ladder on tiny Shakespeare: {args.iters} iterations per rung")
    print(md)
    print(f"wrote {out_dir / 'ladder.md'} and {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
