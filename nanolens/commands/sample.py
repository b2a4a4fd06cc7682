"""`nanolens sample`: text from a checkpoint (or an untrained model), streamed as it is sampled."""

from __future__ import annotations

import argparse
import sys

from nanolens.models import GPT, CharTokenizer, preset_config
from nanolens.training import open_model, resolve_device

# A fresh model needs some vocabulary to speak in before it has seen a corpus.
DEFAULT_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if args.ckpt:
        model = open_model(args.ckpt, device=device)
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
