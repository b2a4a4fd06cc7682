"""`nanolens train`: a model on a corpus, watched as it learns; `--resume` continues a run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from nanolens.corpora import load_corpus
from nanolens.models import ConfigError, GPT, GPTConfig, preset_config
from nanolens.training import TokenData, Trainer, TrainConfig, model_and_data
from nanolens.training.recipe import continued_model_and_data
from nanolens.training.config import RUN_KEYS, read_config_file
from nanolens.training.lock import RunLock
from nanolens.training.runs import find_checkpoint
from nanolens.training.state import STATE_FILE

# `nanolens train` flags that set TrainConfig fields (flag dest -> field); they override --config.
TRAIN_FLAGS = {
    "max_iters": "max_iters", "batch_size": "batch_size", "lr": "learning_rate", "min_lr": "min_lr",
    "warmup_iters": "warmup_iters", "lr_decay_iters": "lr_decay_iters", "eval_interval": "eval_interval",
    "eval_iters": "eval_iters", "sample_interval": "sample_interval", "sample_tokens": "sample_tokens",
    "log_interval": "log_interval", "grad_accum_steps": "grad_accum_steps", "weight_decay": "weight_decay",
    "grad_clip": "grad_clip", "beta1": "beta1", "beta2": "beta2", "val_fraction": "val_fraction", "device": "device", "seed": "seed",
    "compile": "compile", "dtype": "dtype", "on_nan": "on_nan",
}


def _train_config(fields: dict, source: str | None) -> TrainConfig:
    """The TrainConfig of a config file's fields and the flags; an error names the file."""
    try:
        return TrainConfig.from_dict(fields)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}" if source else str(err)) from None


def _model_overrides(table: object, source: str) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: 'model' must be a table of GPTConfig fields")
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown model field(s) {unknown}; valid fields: {', '.join(sorted(known))}")
    return dict(table)


def _fresh(args: argparse.Namespace, file: dict, spec: str, config: TrainConfig) -> tuple[GPT, TokenData]:
    """A new model of the preset, with a tokenizer trained on the corpus."""
    preset = args.preset or file.get("preset") or "gpt2"
    kind = args.tokenizer or file.get("tokenizer") or "char"
    vocab_size = args.vocab_size if args.vocab_size is not None else file.get("vocab_size")
    overrides = _model_overrides(file.get("model", {}), args.config or "config")
    preset_config(preset)  # an unknown preset fails before the corpus is read
    text = load_corpus(spec).text
    set_keys = {item.partition("=")[0].strip() for item in args.set}
    if config.block_size is not None and "block_size" not in overrides and "block_size" not in set_keys:
        overrides["block_size"] = config.block_size
    model, data = model_and_data(text, spec, preset=preset, tokenizer=kind, vocab_size=vocab_size, overrides=overrides,
                                 assignments=args.set, val_fraction=config.val_fraction, seed=config.seed)
    return model, data


def _continued(args: argparse.Namespace, file: dict, init_from: str, spec: str, config: TrainConfig) -> tuple[GPT, TokenData]:
    """A trained model to train further (`--init-from`): its architecture and tokenizer are kept."""
    given = {"--preset": args.preset or file.get("preset"), "--tokenizer": args.tokenizer or file.get("tokenizer"),
             "--vocab-size": args.vocab_size or file.get("vocab_size"), "[model]": file.get("model")}
    fixed = [flag for flag, value in given.items() if value]
    if fixed:
        raise ConfigError(f"--init-from {init_from} keeps that model's architecture and tokenizer; drop {', '.join(fixed)}")
    return continued_model_and_data(init_from, load_corpus(spec).text, spec, assignments=args.set,
                                    val_fraction=config.val_fraction)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.resume and not out.is_dir():
        find_checkpoint(out, "last")  # raises: there is no run there to continue
    with RunLock.acquire(out):  # before anything is written: a second start on this --out stops here
        return _train(args, out)


def _train(args: argparse.Namespace, out: Path) -> int:
    file = read_config_file(args.config) if args.config else {}
    flags = {field: getattr(args, dest) for dest, field in TRAIN_FLAGS.items() if getattr(args, dest) is not None}
    train_fields = {k: v for k, v in file.items() if k not in RUN_KEYS}
    data_dir = out / "data"

    if args.resume:
        if args.set or args.preset or args.tokenizer or args.vocab_size is not None or args.init_from:
            raise ConfigError("--resume continues the model saved in the run; drop --set/--preset/--tokenizer/"
                              "--vocab-size/--init-from (or start a new run with another --out)")
        last = find_checkpoint(out, "last")
        model = GPT.load(last)
        saved = json.loads((last / STATE_FILE).read_text(encoding="utf-8"))["train_config"]
        config = _train_config({**saved, **train_fields, **flags}, f"{args.config or last / STATE_FILE}")
        if (data_dir / "meta.json").is_file():
            data = TokenData.load(data_dir)
            if args.data:
                print(f"# resuming on the run's own token data in {data_dir}; --data is ignored", file=sys.stderr)
        else:
            spec = args.data or file.get("data") or model.config.extra.get("data")
            if spec is None:
                raise ConfigError(f"{out} has no saved token data; give the corpus again with --data")
            data = TokenData.from_text(load_corpus(spec).text, model.tokenizer, config.val_fraction, meta={"data": spec})
    else:
        if (out / "last").exists() or (out / "best").exists():
            raise ConfigError(f"{out} already holds a run; continue it with --resume, or choose another --out")

        config = _train_config({**train_fields, **flags}, args.config)
        spec = str(args.data or file.get("data") or "sentiment")
        init_from = args.init_from or file.get("init_from")
        if init_from:
            model, data = _continued(args, file, init_from, spec, config)
        else:
            model, data = _fresh(args, file, spec, config)
        data.check_block_size(config.block_size or model.config.block_size)
        data.save(data_dir)

    trainer = Trainer(model, data, config, out, resume=args.resume)
    try:
        summary = trainer.train()
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: nanolens train --out {out} --resume", file=sys.stderr)
        return 130
    if trainer.master and config.save_checkpoints:
        print(f"sample from it with: nanolens sample --ckpt {out / 'best'}", file=sys.stderr)
    return 0 if summary is not None else 1
