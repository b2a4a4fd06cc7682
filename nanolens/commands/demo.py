"""`nanolens demo`: the whole story offline (see `nanolens.apps.demo`)."""

from __future__ import annotations

import argparse

from nanolens.apps.demo import run_demo


def run(args: argparse.Namespace) -> int:
    run_demo(out=args.out, data=args.data, quick=args.quick, seed=args.seed, train_seconds=args.train_seconds,
             iters=args.iters, device=args.device, progress=not args.quiet, preset=args.preset, ckpt=args.ckpt)
    return 0
