"""The `nanolens` command line. Each subcommand imports torch only when it runs, so
`nanolens --help` answers at once."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

# A fresh model needs some vocabulary to speak in before it has seen a corpus.
DEFAULT_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--stop", default=None, help="end a sample when this string appears")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")


def pick_device(name: str = "auto") -> str:
    """`auto` picks cuda, then mps, then cpu; any other name is used as given."""
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cmd_sample(args: argparse.Namespace) -> int:
    from nanolens.models import GPT, CharTokenizer, preset_config

    device = pick_device(args.device)
    if args.ckpt:
        model = GPT.load(args.ckpt, device=device)
    else:
        tokenizer = CharTokenizer(DEFAULT_CHARS)
        config = preset_config(args.preset, vocab_size=tokenizer.vocab_size).with_overrides(args.set)
        model = GPT(config, tokenizer=tokenizer).to(device).eval()
        print(f"# an untrained {args.preset} model ({model.num_params():,} parameters): it babbles "
              "until trained with `nanolens train`", file=sys.stderr)
    model.to_tokens(args.prompt)  # fail on characters outside the vocabulary before printing anything
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        sys.stdout.write(args.prompt)
        for piece in model.generate_stream(
            args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, seed=args.seed + i, stop=args.stop,
        ):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from nanolens.models.presets import LADDER

    for rung, preset in enumerate(LADDER, 1):
        print(f"{rung}. {preset.name:<13} {preset.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanolens",
        description="Train a GPT yourself, then open it up: hooks, probes and steering vectors.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sample", help="generate text from a checkpoint (or a fresh model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", help="checkpoint directory (e.g. runs/NAME/best)")
    src.add_argument("--preset", default="gpt2", help="fresh untrained model of this preset (default gpt2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field of a fresh model")
    _add_sampling_flags(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("presets", help="list the simple-to-complex ladder of model presets")
    p.set_defaults(func=cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"nanolens {args.command}: error: {err}", file=sys.stderr)
        return 2
