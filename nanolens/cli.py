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
    from nanolens.models.trainer import resolve_device

    return resolve_device(name)


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


# `nanolens train` flags that set TrainConfig fields (flag dest -> field); they override --config.
TRAIN_FLAGS = {
    "max_iters": "max_iters", "batch_size": "batch_size", "lr": "learning_rate", "min_lr": "min_lr",
    "warmup_iters": "warmup_iters", "lr_decay_iters": "lr_decay_iters", "eval_interval": "eval_interval",
    "eval_iters": "eval_iters", "sample_interval": "sample_interval", "sample_tokens": "sample_tokens",
    "log_interval": "log_interval", "grad_accum_steps": "grad_accum_steps", "weight_decay": "weight_decay",
    "grad_clip": "grad_clip", "beta1": "beta1", "beta2": "beta2", "val_fraction": "val_fraction", "device": "device", "seed": "seed",
    "compile": "compile", "dtype": "dtype",
}


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None,
                   help="shakespeare, sentiment (the embedded default), or a UTF-8 text file / folder of .txt files")
    p.add_argument("--preset", default=None, help="model preset (default gpt2; `nanolens presets` lists them)")
    p.add_argument("--out", required=True, help="run directory: checkpoints last/ and best/, metrics.jsonl, loss_curve.png")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. --set n_layer=4 --set block_size=64")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a .toml or .json file of TrainConfig fields (plus optional data, preset, tokenizer, "
                        "vocab_size and a [model] table); flags override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--tokenizer", choices=("char", "bpe"), default=None, help="char (default) or bpe")
    p.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary size (default 1024)")
    g = p.add_argument_group("training (TrainConfig fields)")
    g.add_argument("--max-iters", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay")
    g.add_argument("--warmup-iters", type=int)
    g.add_argument("--lr-decay-iters", type=int, help="iterations of cosine decay (default max-iters)")
    g.add_argument("--grad-accum-steps", type=int)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--grad-clip", type=float)
    g.add_argument("--beta1", type=float, help="AdamW beta1 (default 0.9)")
    g.add_argument("--beta2", type=float, help="AdamW beta2 (default 0.99)")
    g.add_argument("--val-fraction", type=float)
    g.add_argument("--eval-interval", type=int)
    g.add_argument("--eval-iters", type=int)
    g.add_argument("--log-interval", type=int)
    g.add_argument("--sample-interval", type=int, help="iterations between printed samples (0: none)")
    g.add_argument("--sample-tokens", type=int)
    g.add_argument("--device", default=None, help="auto (default), cpu, cuda, mps")
    g.add_argument("--seed", type=int)
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--dtype", default=None, help="auto (default: bf16/fp16 autocast on CUDA), float32, bfloat16, float16")


def _model_overrides(table: object, source: str) -> dict:
    import dataclasses

    from nanolens.models.config import ConfigError, GPTConfig

    if not isinstance(table, dict):
        raise ConfigError(f"{source}: 'model' must be a table of GPTConfig fields")
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown model field(s) {unknown}; valid fields: {', '.join(sorted(known))}")
    return dict(table)


def cmd_train(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from nanolens.models import GPT, preset_config
    from nanolens.models.batches import TokenData
    from nanolens.models.config import ConfigError
    from nanolens.models.trainer import RUN_KEYS, STATE_FILE, Trainer, TrainConfig, find_checkpoint, read_config_file

    file = read_config_file(args.config) if args.config else {}
    flags = {field: getattr(args, dest) for dest, field in TRAIN_FLAGS.items() if getattr(args, dest) is not None}
    train_fields = {k: v for k, v in file.items() if k not in RUN_KEYS}
    out = Path(args.out)
    data_dir = out / "data"

    if args.resume:
        if args.set or args.preset or args.tokenizer or args.vocab_size is not None:
            raise ConfigError("--resume continues the model saved in the run; drop --set/--preset/--tokenizer/"
                              "--vocab-size (or start a new run with another --out)")
        last = find_checkpoint(out, "last")
        model = GPT.load(last)
        saved = json.loads((last / STATE_FILE).read_text(encoding="utf-8"))["train_config"]
        config = TrainConfig.from_dict({**saved, **train_fields, **flags})
        if (data_dir / "meta.json").is_file():
            data = TokenData.load(data_dir)
            if args.data:
                print(f"# resuming on the run's own token data in {data_dir}; --data is ignored", file=sys.stderr)
        else:
            from nanolens.models.data import load_corpus

            spec = args.data or file.get("data") or model.config.extra.get("data")
            if spec is None:
                raise ConfigError(f"{out} has no saved token data; give the corpus again with --data")
            data = TokenData.from_text(load_corpus(spec).text, model.tokenizer, config.val_fraction, meta={"data": spec})
    else:
        if (out / "last").exists() or (out / "best").exists():
            raise ConfigError(f"{out} already holds a run; continue it with --resume, or choose another --out")
        from nanolens.models.data import load_corpus
        from nanolens.models.tokenizers import build_tokenizer

        config = TrainConfig.from_dict({**train_fields, **flags})
        spec = str(args.data or file.get("data") or "sentiment")
        preset = args.preset or file.get("preset") or "gpt2"
        kind = args.tokenizer or file.get("tokenizer") or "char"
        vocab_size = args.vocab_size if args.vocab_size is not None else file.get("vocab_size")
        overrides = _model_overrides(file.get("model", {}), args.config or "config")
        preset_config(preset)  # an unknown preset fails before the corpus is read
        text = load_corpus(spec).text
        tokenizer = build_tokenizer(kind, text, vocab_size)
        set_keys = {item.partition("=")[0].strip() for item in args.set}
        if config.block_size is not None and "block_size" not in overrides and "block_size" not in set_keys:
            overrides["block_size"] = config.block_size
        model_config = preset_config(preset, **{**overrides, "vocab_size": tokenizer.vocab_size}).with_overrides(args.set)
        model_config.extra = {**model_config.extra, "data": spec, "tokenizer": kind}
        data = TokenData.from_text(text, tokenizer, config.val_fraction, meta={"data": spec})
        data.check_block_size(config.block_size or model_config.block_size)
        torch.manual_seed(config.seed)
        model = GPT(model_config, tokenizer=tokenizer)
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


def cmd_probe(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nanolens.models import GPT
    from nanolens.models.checkpoint import model_dir
    from nanolens.probes import LabelledTexts, LinearProbe, format_table, plot_probe_layers, probe_layers

    ckpt = model_dir(args.ckpt)
    model = GPT.load(ckpt, device=pick_device(args.device))
    block = model.config.block_size
    if args.dataset == "sentiment":
        dataset = LabelledTexts.from_sentiment(args.n or 1000, seed=args.data_seed, position=args.position, max_chars=block)
    elif args.dataset == "shakespeare":
        alphabet = getattr(model.tokenizer, "chars", None)
        dataset = LabelledTexts.from_shakespeare(
            args.data_path, pos_threshold=args.pos_threshold, neg_threshold=args.neg_threshold, n=args.n,
            max_chars=block, alphabet=alphabet, seed=args.data_seed,
        )
    else:
        if not Path(args.dataset).is_file():
            raise FileNotFoundError(f"--dataset {args.dataset!r} is neither sentiment, shakespeare nor an existing .csv/.jsonl file")
        dataset = LabelledTexts.from_file(args.dataset, **({"text_column": args.text_column, "label_column": args.label_column}
                                                           if args.dataset.lower().endswith((".csv", ".tsv")) else
                                                           {"text_key": args.text_column, "label_key": args.label_column}))
        if args.n:
            dataset = dataset.subset(range(min(args.n, len(dataset))))
    hooks = [h.strip() for h in args.hook.split(",") if h.strip()]
    probe = LinearProbe(cv=5) if args.cv else None
    print(f"# {ckpt}: {model.config.n_layer} layers, d_model {model.config.n_embd}; dataset {dataset!r}", file=sys.stderr)
    df = probe_layers(model, dataset, hooks, probe=probe, control=args.control, test_size=args.test_size, seed=args.seed,
                      positions=args.read, batch_size=args.batch_size, truncate=args.truncate, progress=not args.quiet)
    print(format_table(df))
    if args.out:
        out = Path(args.out)
    else:
        run = ckpt.parent if ckpt.name in ("best", "last") else ckpt
        out = run / "probes"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"probe_{Path(args.dataset).stem if args.dataset not in ('sentiment', 'shakespeare') else args.dataset}"
    df.to_csv(out / f"{stem}.csv", index=False)
    png = plot_probe_layers(df, out / f"{stem}.png", title=f"{ckpt}: linear probe per layer ({dataset.name})")
    print(f"wrote {png} and {out / (stem + '.csv')}", file=sys.stderr)
    return 0


def _free_port(host: str, start: int = 8501, tries: int = 50) -> int:
    import socket

    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise ValueError(f"no free port in {start}..{start + tries - 1} on {host}; pass --port")


def explore_command(args: argparse.Namespace) -> tuple[list[str], str]:
    """The `streamlit run` command line for the explorer, and the address it will serve on."""
    import os
    from pathlib import Path

    from nanolens.apps import APP_PATH

    app_args: list[str] = []
    for flag in ("ckpt", "runs"):
        value = getattr(args, flag)
        if value is not None:
            if not Path(value).is_dir():
                raise FileNotFoundError(f"--{flag} {value}: no such folder; train a model first with "
                                        f"`nanolens train --out runs/NAME`, or give an existing run folder")
            app_args += [f"--{flag}", os.path.abspath(value)]
    port = args.port or _free_port(args.address)
    # -P (Python 3.11+): the current folder is not put on sys.path, so a user's own click.py or
    # pandas.py there cannot shadow what streamlit imports.
    python = [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]
    cmd = [*python, "-m", "streamlit", "run", str(APP_PATH), "--server.headless", "true",
           "--server.address", args.address, "--server.port", str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--global.developmentMode", "false", "--client.toolbarMode", "viewer"]
    if app_args:
        cmd += ["--", *app_args]
    shown = "localhost" if args.address in ("0.0.0.0", "::") else args.address
    return cmd, f"http://{shown}:{port}"


def cmd_explore(args: argparse.Namespace) -> int:
    import os
    import subprocess

    cmd, url = explore_command(args)
    if args.dry_run:
        print(" ".join(cmd))
        print(url)
        return 0
    print(f"nanolens explorer: open {url} in your browser (Ctrl+C stops it)", flush=True)
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    if os.name == "posix":  # become the server, so signals (Ctrl+C, kill) reach it directly
        sys.stderr.flush()
        os.execve(cmd[0], cmd, env)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


def cmd_steer(args: argparse.Namespace) -> int:
    from nanolens.steering.demo import steer_command

    return steer_command(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from nanolens.steering.demo import demo_command

    return demo_command(args)


def _add_steer_parsers(sub) -> None:
    p = sub.add_parser("steer", help="add a steering vector while generating: unsteered and steered side by side, or a sweep")
    p.add_argument("--ckpt", required=True, help="checkpoint directory (runs/NAME/best) or run directory (runs/NAME)")
    p.add_argument("--method", default="contrast", help="contrast (ActAdd, needs --positive/--negative), mean-diff, pca, probe, random")
    p.add_argument("--positive", default=None, help="contrast: the positive prompt, e.g. 'I love'")
    p.add_argument("--negative", default=None, help="contrast: the negative prompt, e.g. 'I hate'")
    p.add_argument("--read", default="aligned", help="contrast: aligned (ActAdd: row i at position i), mean, last, or an index")
    p.add_argument("--dataset", default="sentiment",
                   help="mean-diff/pca/probe/random: sentiment (matched story pairs), shakespeare (VADER lines), or a .csv/.jsonl with positive/negative labels")
    p.add_argument("--n", type=int, default=128, help="examples per class for mean-diff/pca/probe")
    p.add_argument("--data-seed", type=int, default=4321, help="seed of the dataset's examples")
    p.add_argument("--layer", type=int, default=None, help="block whose resid_pre is steered (default: the middle one)")
    p.add_argument("--coeff", type=float, default=4.0, help="coefficient (absolute, or x the layer's typical norm with --relative)")
    p.add_argument("--relative", action="store_true", help="coefficients in units of the layer's typical residual norm")
    p.add_argument("--positions", default="all", help="all, prompt, generated, or k (the first k positions)")
    p.add_argument("--vector", default=None, help="load a saved vector (PATH.safetensors + PATH.json) instead of computing one")
    p.add_argument("--save", default=None, metavar="PATH", help="save the vector as PATH.safetensors + PATH.json")
    p.add_argument("--any-model", action="store_true", help="allow a vector computed on other weights (same width)")
    p.add_argument("--sweep", action="store_true", help="generate at several --coeffs (and --layers), write a table and plots")
    p.add_argument("--coeffs", default="-8,-4,0,4,8",
                   help="sweep: comma-separated coefficients (with a leading minus write --coeffs=-8,-4,0,4,8)")
    p.add_argument("--layers", default=None, help="sweep: comma-separated layers (default --layer)")
    p.add_argument("--scorer", default=None, choices=("words", "vader"), help="sweep: sentiment scorer (default words for sentiment models, else vader)")
    p.add_argument("--out", default=None, help="sweep: output folder (default RUN/steering)")
    p.add_argument("--width", type=int, default=110, help="terminal width for the side-by-side columns")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--prompt", action="append", default=None, help="prompt to continue (repeat for several; default held-out story openings)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=120)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--stop", default="\n", help="end a continuation at this string (default a newline)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.set_defaults(func=cmd_steer)

    p = sub.add_parser("demo", help="the whole story offline: train, probe, find the sentiment direction, steer, report")
    p.add_argument("--out", default="runs/demo", help="output folder: report.md, plots, vectors, the run's checkpoints")
    p.add_argument("--data", default="sentiment", choices=("sentiment", "shakespeare"),
                   help="sentiment (the embedded corpus, default) or shakespeare (VADER labels)")
    p.add_argument("--quick", action="store_true", help="a tiny model and few samples (seconds; what the tests run)")
    p.add_argument("--train-seconds", type=float, default=None, help="training budget in seconds (default 150; iterations are calibrated)")
    p.add_argument("--iters", type=int, default=None, help="train exactly this many iterations instead of a time budget")
    p.add_argument("--preset", default=None, help="model preset (default modern: it learns the corpus fastest on a CPU)")
    p.add_argument("--ckpt", default=None, help="skip training: analyse and steer this trained checkpoint (or run directory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


def cmd_finetune(args: argparse.Namespace) -> int:
    from nanolens.models.finetune_cli import finetune_command

    return finetune_command(args)


def _add_finetune_parsers(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a trained model: sft, reward model, ppo, dpo, and compare them with steering")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)

    def stage(name: str, help: str, data: str | None = None) -> argparse.ArgumentParser:
        s = stages.add_parser(name, help=help)
        s.add_argument("--ckpt", required=name not in ("sft",), help="the model to start from: checkpoint or run directory")
        s.add_argument("--out", required=True, help="run directory to write")
        if data:
            s.add_argument("--data", default=None, help=f"{data} (default: the embedded sentiment task)")
            s.add_argument("--n-pairs", type=int, default=2000, help="pairs of the embedded task")
        if name != "compare":
            s.add_argument("--template", default=None,
                           help="chat ('{prompt}\\n{response}\\n\\n'), raw ('{prompt}{response}\\n\\n'), or your own with "
                                "{prompt} and {response} (default: sft chat, others the starting model's own)")
        s.add_argument("--seed", type=int, default=None)
        s.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
        s.add_argument("--quiet", action="store_true", help="no progress bars or samples")
        s.set_defaults(func=cmd_finetune)
        return s

    def train_flags(s: argparse.ArgumentParser) -> None:
        g = s.add_argument_group("training (TrainConfig fields)")
        for flag, kind in (("--max-iters", int), ("--batch-size", int), ("--lr", float), ("--min-lr", float),
                           ("--warmup-iters", int), ("--eval-interval", int), ("--eval-iters", int), ("--log-interval", int),
                           ("--sample-interval", int), ("--val-fraction", float)):
            g.add_argument(flag, type=kind, default=None)

    s = stage("sft", "supervised fine-tuning on prompt/response pairs, loss on the responses", "JSONL of {prompt, response}")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train_flags(s)
    s = stage("reward", "train a reward model on preference pairs (Bradley-Terry)", "JSONL of {prompt, chosen, rejected}")
    train_flags(s)
    s = stage("dpo", "direct preference optimisation on preference pairs", "JSONL of {prompt, chosen, rejected}")
    s.add_argument("--beta", type=float, default=0.1, help="DPO's beta (larger: stay closer to the reference)")
    train_flags(s)
    s = stage("ppo", "PPO against a reward model (or the word-count sentiment scorer) with a KL penalty")
    s.add_argument("--reward", default="words", help="a reward model directory (nanolens finetune reward), or words")
    s.add_argument("--prompts", default=None, help="JSONL of {prompt} (default: the embedded story openings)")
    s.add_argument("--n-prompts", type=int, default=512, help="embedded prompts to draw rollouts from")
    g = s.add_argument_group("PPO (PPOConfig fields)")
    for flag, kind in (("--steps", int), ("--prompts-per-step", int), ("--samples-per-prompt", int), ("--max-new-tokens", int),
                       ("--kl-coef", float), ("--lr", float), ("--ppo-epochs", int), ("--minibatch-size", int),
                       ("--temperature", float), ("--lam", float)):
        g.add_argument(flag, type=kind, default=None)
    s = stage("compare", "one table on held-out prompts: base, steered, SFT, PPO, DPO (trains the stages not given)")
    for name in ("sft", "reward", "ppo", "dpo"):
        s.add_argument(f"--{name}", default=None, metavar="DIR", help=f"a finished {name} run (default: train one into OUT/{name})")
    s.add_argument("--steering", default="auto", help="auto (mean difference, chosen on other openings), a `nanolens demo` "
                                                       "output directory (its best method), or none")
    s.add_argument("--prompts", type=int, default=None, help="held-out openings in the table (default 24)")
    s.add_argument("--samples", type=int, default=None, help="samples per opening (default 4)")
    s.add_argument("--max-new-tokens", type=int, default=None)
    s.add_argument("--quick", action="store_true", help="tiny budgets (seconds; what the tests run)")


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

    p = sub.add_parser("train", help="train a model on a corpus and watch it learn")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("probe", help="fit a linear probe at every layer: where does the model know the label?")
    p.add_argument("--ckpt", required=True, help="checkpoint directory (runs/NAME/best) or run directory (runs/NAME)")
    p.add_argument("--dataset", default="sentiment",
                   help="sentiment (the embedded corpus' story labels), shakespeare (VADER-labelled lines), "
                        "or a .csv/.jsonl file with text and label columns")
    p.add_argument("--hook", default="resid_post",
                   help="hook kind(s) per block (resid_post, resid_mid, attn_out, mlp_out; comma-separated) or full hook names")
    p.add_argument("--out", default=None, help="folder for the table (CSV) and plot (PNG); default RUN/probes")
    p.add_argument("--n", type=int, default=None, help="number of texts (default: 1000 stories; all VADER lines; the whole file)")
    p.add_argument("--position", default="reveal", choices=("reveal", "decision", "end", "random"),
                   help="sentiment: where each story is read (default reveal: the end of the first sentence that shows the label)")
    p.add_argument("--pos-threshold", type=float, default=0.5, help="shakespeare: VADER compound score at or above which a line is positive")
    p.add_argument("--neg-threshold", type=float, default=-0.5, help="shakespeare: VADER compound score at or below which a line is negative")
    p.add_argument("--data-path", default=None, help="shakespeare: path of tinyshakespeare.txt (default: found as `train --data shakespeare` finds it)")
    p.add_argument("--text-column", default="text", help="file datasets: the text column / key")
    p.add_argument("--label-column", default="label", help="file datasets: the label column / key")
    p.add_argument("--read", default=None, choices=("last", "mean"),
                   help="where each text is read: its last token (default; a file's position column if it has one) or the mean over all its tokens")
    p.add_argument("--control", default="shuffle", choices=("shuffle", "token"), help="control task (Hewitt & Liang): shuffled labels or random labels per token type")
    p.add_argument("--cv", action="store_true", help="choose the regularisation C by 5-fold cross-validation")
    p.add_argument("--test-size", type=float, default=0.25, help="held-out fraction of the texts")
    p.add_argument("--truncate", action="store_true", help="crop texts longer than the context to their last block_size tokens")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split and the control labels")
    p.add_argument("--data-seed", type=int, default=1234, help="seed of the stories (sentiment) or of the line sample (shakespeare)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("explore", help="start the Streamlit explorer (attention, logit lens, steering, probes, training)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", help="a checkpoint folder (runs/NAME/best) or one run (runs/NAME)")
    src.add_argument("--runs", help="a folder of runs (default: runs/, or choose in the app's sidebar)")
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: the first free one from 8501)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--dry-run", action="store_true", help="print the streamlit command and the address, start nothing")
    p.set_defaults(func=cmd_explore)

    _add_steer_parsers(sub)
    _add_finetune_parsers(sub)

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
