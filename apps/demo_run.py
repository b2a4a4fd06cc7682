"""A small run to explore: train a model on the embedded sentiment corpus for a few iterations,
keeping a checkpoint at every evaluation (so the Across-training page has a time-lapse).

    python -m nanolens.apps.demo_run runs/tiny --iters 200
    nanolens explore --runs runs/

The explorer's tests and benchmark build their runs with `make_run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nanolens.corpora.sentiment import generate_corpus
from nanolens.training import Trainer, TrainConfig, model_and_data


def make_run(
    out: str | Path,
    *,
    iters: int = 30,
    eval_interval: int = 10,
    n_layer: int = 2,
    n_head: int = 4,
    n_embd: int = 32,
    block_size: int = 64,
    batch_size: int = 8,
    corpus_chars: int = 60_000,
    seed: int = 0,
    keep_checkpoints: bool = True,
    progress: bool = False,
    **train: Any,
) -> Path:
    """Train a gpt2-preset model of the given size on the sentiment corpus into the run folder
    `out` (metrics.jsonl, best/, last/, data/ and, with `keep_checkpoints`,
    checkpoints/iter_NNNNNN/ at every evaluation). Returns `out`."""
    out = Path(out)
    text = generate_corpus(corpus_chars, seed=seed).text
    model, data = model_and_data(text, "sentiment", preset="gpt2", overrides=dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                                 block_size=block_size), seed=seed)
    data.save(out / "data")
    settings = dict(max_iters=iters, batch_size=batch_size, eval_interval=eval_interval, eval_iters=2,
                    sample_interval=eval_interval, sample_tokens=40, log_interval=max(1, eval_interval // 2),
                    progress=progress, verbose=progress, plot=False, learning_rate=3e-3, warmup_iters=min(5, iters),
                    seed=seed)
    settings.update(train)
    trainer: Trainer | None = None

    def keep(record: dict[str, Any]) -> None:
        if keep_checkpoints and record.get("kind") == "eval" and trainer is not None:
            trainer.save_checkpoint(f"checkpoints/iter_{int(record['iter']):06d}")

    trainer = Trainer(model, data, TrainConfig(**settings), out, callbacks=[keep])
    trainer.train()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nanolens.apps.demo_run", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the run folder to write (e.g. runs/tiny)")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--eval-interval", type=int, default=25)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=128)
    args = p.parse_args(argv)
    make_run(args.out, iters=args.iters, eval_interval=args.eval_interval, n_layer=args.n_layer, n_embd=args.n_embd,
             block_size=args.block_size, corpus_chars=200_000, progress=True)
    print(f"explore it with: nanolens explore --ckpt {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
