"""`nanolens import` and `nanolens export`: models in and out of Hugging Face's format.

`import --hf SOURCE --out runs/NAME` opens a Hugging Face checkpoint (a directory, or a hub
name from the cache or the network) and saves it as a nanolens checkpoint, so every command's
`--ckpt runs/NAME` and the explorer open it without `transformers`. `export --ckpt runs/NAME
--hf OUT` writes a model trained here as a checkpoint `transformers` loads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanolens.models import GPT
from nanolens.training import open_model
from nanolens.training.runs import hf_source


def _refuse_existing(out: Path, flag: str) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{flag} {out} already exists and is not empty; choose another folder or remove it first")


def import_model(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _refuse_existing(out, "--out")
    source = hf_source(args.hf) or args.hf
    model = GPT.from_hf(source, dtype=args.dtype)
    model.save(out)
    family = model.config.extra.get("hf", {}).get("architecture") or "a Hugging Face model"
    print(f"imported {source} ({family}, {model.num_params():,} parameters, {model.config.n_layer} layers, "
          f"d_model {model.config.n_embd}) -> {out}", file=sys.stderr)
    print(f"next: nanolens sample --ckpt {out} --prompt 'Hello'   |   nanolens explore --ckpt {out}", file=sys.stderr)
    return 0


def export_model(args: argparse.Namespace) -> int:
    out = Path(args.hf)
    _refuse_existing(out, "--hf")
    if hf_source(args.ckpt) is not None:
        raise ValueError(f"--ckpt {args.ckpt} is already a Hugging Face checkpoint; export a nanolens run or checkpoint")
    model = open_model(args.ckpt)
    model.to_hf(out)
    print(f"exported {model.loaded_from} -> {out}; load it with "
          f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return import_model(args) if args.command == "import" else export_model(args)

