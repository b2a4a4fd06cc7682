"""`nanolens finetune {sft,reward,ppo,dpo,compare}`: the fine-tuning stages from the command line.

Each stage reads a base (or SFT) checkpoint, its data from a JSONL file or the embedded
sentiment tasks, and writes a run directory. Defaults are `ComparePlan`'s budgets; the flags
override them. The parser lives in `nanolens.cli`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nanolens.corpora.sentiment import score_sentiment
from nanolens.finetune import ComparePlan, RewardModel, Template, ppo, run_comparison, sft, train_dpo, train_reward_model
from nanolens.finetune.compare import stage_configs
from nanolens.finetune.data import (FinetuneDataWarning, Preference, fits_context, load_preferences, load_sft_pairs,
                                    read_jsonl, sentiment_preferences, sentiment_prompts, sentiment_sft_pairs)
from nanolens.finetune.sft import PAIRS_FILE
from nanolens.models import GPT
from nanolens.training import TrainConfig, open_model, resolve_device
from nanolens.training.runs import find_checkpoint
from nanolens.training.state import STATE_FILE


# `nanolens finetune` flags that set TrainConfig fields (flag dest -> field), for sft, reward and dpo.
TRAIN_FIELDS = {
    "max_iters": "max_iters", "batch_size": "batch_size", "lr": "learning_rate", "min_lr": "min_lr",
    "warmup_iters": "warmup_iters", "eval_interval": "eval_interval", "eval_iters": "eval_iters",
    "log_interval": "log_interval", "sample_interval": "sample_interval", "val_fraction": "val_fraction", "seed": "seed",
}


PPO_FIELDS = {
    "steps": "steps", "prompts_per_step": "prompts_per_step", "samples_per_prompt": "samples_per_prompt",
    "max_new_tokens": "max_new_tokens", "kl_coef": "kl_coef", "lr": "learning_rate", "ppo_epochs": "ppo_epochs",
    "minibatch_size": "minibatch_size", "temperature": "temperature", "lam": "lam", "seed": "seed",
}


@contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Show data warnings (skipped lines, over-long pairs) as one plain line each."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", FinetuneDataWarning)
        warnings.showwarning = lambda message, *a, **k: print(f"nanolens finetune {command}: warning: {message}", file=sys.stderr)
        yield


def _configs(args: argparse.Namespace) -> dict[str, Any]:
    return stage_configs(ComparePlan(), resolve_device(args.device), args.seed or 0, not args.quiet)


def _train_config(args: argparse.Namespace, stage: str) -> TrainConfig:
    config = _configs(args)[stage]
    return config.replace(**{field: getattr(args, dest) for dest, field in TRAIN_FIELDS.items()
                             if getattr(args, dest, None) is not None})


def _load(path: str, device: str = "auto") -> GPT:
    return open_model(path, device=resolve_device(device))


def _template(args: argparse.Namespace, model: GPT, default: str | None = None) -> Template:
    if args.template is not None:
        return Template.named(args.template.replace("\\n", "\n").replace("\\t", "\t"))  # a typed \n is a newline
    return Template.named(default) if default is not None else Template.of(model)


def cmd_sft(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.resume:
        last = find_checkpoint(out, "last")
        model = _load(str(last), args.device)
        saved = json.loads((last / STATE_FILE).read_text(encoding="utf-8"))["train_config"]
        flags = {field: getattr(args, dest) for dest, field in TRAIN_FIELDS.items() if getattr(args, dest, None) is not None}
        config = TrainConfig.from_dict({**saved, **flags, "progress": not args.quiet})
        pairs = load_sft_pairs(out / PAIRS_FILE)
        template = _template(args, model)
    else:
        if args.ckpt is None:
            raise ValueError("give the model to fine-tune with --ckpt (or continue a run with --resume)")
        if (out / "last").exists():
            raise ValueError(f"{out} already holds a run; continue it with --resume, or choose another --out")
        model = _load(args.ckpt, args.device)
        config = _train_config(args, "sft")
        template = _template(args, model, default="chat")
        if args.data:
            pairs = load_sft_pairs(args.data)
        else:
            fits = fits_context(model.tokenizer, template, config.block_size or model.config.block_size)
            pairs = sentiment_sft_pairs(args.n_pairs, seed=config.seed, template=template, fits=fits)
    summary = sft(model, pairs, config, out, template=template, resume=args.resume)
    print(f"SFT done in {summary['seconds']:.0f} s: val loss on responses {summary['val_loss']:.4f}; model in {out / 'best'}",
          file=sys.stderr)
    return 0


def _preferences(args: argparse.Namespace, model: GPT, template: Template) -> list[Preference]:
    """--data's preference pairs, else the embedded sentiment ones that fit `model`'s context."""
    if args.data:
        return load_preferences(args.data)
    fits = fits_context(model.tokenizer, template, model.config.block_size)
    return sentiment_preferences(args.n_pairs, template=template, fits=fits)


def cmd_reward(args: argparse.Namespace) -> int:
    base = _load(args.ckpt, args.device)
    template = _template(args, base)
    _, summary = train_reward_model(base, _preferences(args, base, template), _train_config(args, "reward"), args.out,
                                    template=template)
    print(f"reward model: held-out accuracy {summary['val_accuracy']:.3f} on {summary['val_pairs']} pairs; "
          f"saved in {Path(args.out) / 'last'}", file=sys.stderr)
    return 0


def cmd_dpo(args: argparse.Namespace) -> int:
    policy = _load(args.ckpt, args.device)
    template = _template(args, policy)
    _, summary = train_dpo(policy, _preferences(args, policy, template), _train_config(args, "dpo"), args.out,
                           beta=args.beta, template=template)
    print(f"DPO: held-out implicit-reward accuracy {summary['val_accuracy']:.3f}, loss {summary['val_loss']:.4f}; "
          f"model in {Path(args.out) / 'last'}", file=sys.stderr)
    return 0


def cmd_ppo(args: argparse.Namespace) -> int:
    policy = _load(args.ckpt, args.device)
    config = _configs(args)["ppo"]
    config = dataclasses.replace(config, **{field: getattr(args, dest) for dest, field in PPO_FIELDS.items()
                                            if getattr(args, dest, None) is not None})
    reward = score_sentiment if args.reward == "words" else RewardModel.load(args.reward, device=config.device)
    prompts = [r["prompt"] for _, r in read_jsonl(args.prompts, ("prompt",))] if args.prompts else sentiment_prompts(args.n_prompts)
    template = _template(args, policy) if args.template is not None else None
    _, summary = ppo(policy, reward, prompts, config, args.out, template=template, metric=score_sentiment)
    final = summary["final"]
    print(f"PPO: last step reward {final['reward']:.3f}, KL {final['kl']:.3f}, positive {final['frac_positive']:.3f}; "
          f"curves in {Path(args.out) / 'ppo_curves.png'}, policy in {Path(args.out) / 'last'}", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    plan = ComparePlan.small() if args.quick else ComparePlan()
    changes = {"n_prompts": args.prompts, "samples_per_prompt": args.samples, "max_new_tokens": args.max_new_tokens}
    plan = dataclasses.replace(plan, **{k: v for k, v in changes.items() if v is not None})
    runs = {stage: getattr(args, stage) for stage in ("sft", "reward", "ppo", "dpo") if getattr(args, stage)}
    steering = None if args.steering == "none" else args.steering
    path = run_comparison(args.ckpt, args.out, plan=plan, runs=runs, steering=steering, device=args.device,
                          seed=args.seed or 0, progress=not args.quiet)
    print(path.read_text(encoding="utf-8").split("\n## ")[0])
    print(f"wrote {path}", file=sys.stderr)
    return 0


COMMANDS = {"sft": cmd_sft, "reward": cmd_reward, "ppo": cmd_ppo, "dpo": cmd_dpo, "compare": cmd_compare}


def run(args: argparse.Namespace) -> int:
    with _warnings_as_lines(args.stage):
        return COMMANDS[args.stage](args)
