"""`nanolens probe`: a linear probe at every layer, beside a control task; a table and a plot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanolens.probes import LabelledTexts, LinearProbe, plot_probe_layers, probe_layers, probe_table
from nanolens.training import open_model, resolve_device
from nanolens.training.runs import output_dir


def run(args: argparse.Namespace) -> int:
    model = open_model(args.ckpt, device=resolve_device(args.device))
    ckpt = model.loaded_from or args.ckpt
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
    print(probe_table(df))
    if args.out:
        out = Path(args.out)
    else:
        out = output_dir(ckpt, "probes")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"probe_{Path(args.dataset).stem if args.dataset not in ('sentiment', 'shakespeare') else args.dataset}"
    df.to_csv(out / f"{stem}.csv", index=False)
    png = plot_probe_layers(df, out / f"{stem}.png", title=f"{ckpt}: linear probe per layer ({dataset.name})")
    print(f"wrote {png} and {out / (stem + '.csv')}", file=sys.stderr)
    return 0
