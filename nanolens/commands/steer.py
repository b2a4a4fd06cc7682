"""`nanolens steer`: unsteered and steered continuations side by side, or a sweep with its
table and plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nanolens.corpora.sentiment import neutral_openings
from nanolens.models import GPT
from nanolens.probes import LinearProbe, extract_activations
from nanolens.steering import (Steering, SteeringVector, contrast_pair, hook_name, mean_difference, pca_direction,
                               plot_layer_heatmap, plot_sentiment_vs_coeff, probe_direction, random_direction,
                               summarize_sweep, sweep)
from nanolens.steering.datasets import labelled_pairs
from nanolens.tables import side_by_side, text_table
from nanolens.training import open_model, resolve_device
from nanolens.training.runs import output_dir


METHOD_ALIASES = {"contrast": "contrast_pair", "contrast-pair": "contrast_pair", "actadd": "contrast_pair",
                  "mean-diff": "mean_difference", "mean_diff": "mean_difference", "caa": "mean_difference",
                  "pca": "pca", "repe": "pca", "probe": "probe", "random": "random"}


def build_vector(model: GPT, args: argparse.Namespace, layer: int) -> SteeringVector:
    """The steering vector `nanolens steer` asks for, at `layer`."""
    method = METHOD_ALIASES.get(args.method)
    if method is None:
        raise ValueError(f"--method {args.method!r}: use contrast, mean-diff, pca, probe or random")
    if method == "contrast_pair":
        if args.positive is None or args.negative is None:
            raise ValueError("--method contrast needs --positive and --negative prompts (e.g. --positive 'I love' --negative 'I hate')")
        return contrast_pair(model, args.positive, args.negative, layer, position=_read_position(args.read))
    pos, neg, what = labelled_pairs(model, args.dataset, args.n, args.data_seed)
    if method == "mean_difference":
        return mean_difference(model, pos, neg, layer, source=what)
    if method == "pca":
        k = min(len(pos), len(neg))
        return pca_direction(model, pos[:k], neg[:k], layer, source=what)
    md = mean_difference(model, pos, neg, layer, source=what)
    if method == "random":
        return random_direction(like=md, seed=args.seed)

    hook = hook_name(model, layer)
    acts = extract_activations(model, pos + neg, hooks=[hook], progress=False, truncate=True)
    probe = LinearProbe().fit(acts[hook], ["positive"] * len(pos) + ["negative"] * len(neg))
    v = probe_direction(probe, model, layer, source=what)
    v.scales = md.scales
    return v


def _read_position(value: str) -> Any:
    return int(value) if value.lstrip("-").isdigit() else value


def _positions(value: str) -> Any:
    return int(value) if value.isdigit() else value


def run(args: argparse.Namespace) -> int:
    """`nanolens steer`: print unsteered and steered generations side by side, or run a sweep."""
    model = open_model(args.ckpt, device=resolve_device(args.device))
    ckpt = model.loaded_from or args.ckpt
    n = model.config.n_layer
    layer = args.layer if args.layer is not None else n // 2
    if args.vector:
        vector = SteeringVector.load(args.vector)
    else:
        vector = build_vector(model, args, layer)
    if args.save:
        path = vector.save(args.save)
        print(f"# saved the vector to {path} (+ .json)", file=sys.stderr)
    prompts = args.prompt or _default_prompts(model, args)
    if args.relative and not vector.scales:
        texts = prompts if args.dataset not in ("sentiment",) else labelled_pairs(model, "sentiment", 32, 7)[0]
        vector = vector.with_scales(model, texts)
    print(f"# {ckpt}: {vector!r}; {vector.provenance.get('method')} at {', '.join(vector.hooks)}", file=sys.stderr)

    if args.sweep:
        out = Path(args.out) if args.out else output_dir(ckpt, "steering")
        layers = [int(x) for x in args.layers.split(",")] if args.layers else [layer]
        coeffs = [float(x) for x in args.coeffs.split(",")]
        by_layer = {L: (vector if L == layer or args.vector else build_vector(model, args, L)) for L in layers}
        scorer = args.scorer or ("words" if model.config.extra.get("data") == "sentiment" else "vader")
        df = sweep(model, prompts, {vector.label: by_layer}, coeffs, samples_per_prompt=args.num_samples,
                   scorer=scorer, max_new_tokens=args.max_new_tokens, temperature=args.temperature or 0.8,
                   top_k=args.top_k, seed=args.seed, positions=_positions(args.positions), relative=args.relative,
                   check_model=not args.any_model, progress=not args.quiet)
        print(text_table(df, ["method", "layer", "coeff", "mean_sentiment", "frac_positive", "frac_negative",
                                "wrong_way", "perplexity"]))
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "steer_sweep.csv", index=False)
        p1 = plot_sentiment_vs_coeff(df, out / "steer_vs_coeff.png")
        p2 = plot_layer_heatmap(df, out / "steer_heatmap.png", vector.label)
        print(text_table(summarize_sweep(df)), file=sys.stderr)
        print(f"# wrote {out / 'steer_sweep.csv'}, {p1} and {p2}", file=sys.stderr)
        return 0

    steering = Steering(vector, coeff=args.coeff, positions=_positions(args.positions), relative=args.relative,
                        check_model=not args.any_model)
    width = max(30, min(60, (args.width - 3) // 2))
    for p_index, prompt in enumerate(prompts):
        for i in range(args.num_samples):
            seed = args.seed + 1000 * p_index + i
            kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, seed=seed,
                      stop=args.stop)
            plain = model.generate(prompt, **kw)
            steered = model.generate(prompt, steering=steering, **kw)
            print(f"=== prompt {prompt!r}" + (f" (sample {i + 1})" if args.num_samples > 1 else ""))
            print(side_by_side([("unsteered", plain[len(prompt):]),
                                (f"steered: coeff {args.coeff:+g}{' x norm' if args.relative else ''} at {', '.join(vector.hooks)}",
                                 steered[len(prompt):])], width=width))
            print()
    print(f"# {steering.report()}", file=sys.stderr)
    return 0


def _default_prompts(model: GPT, args: argparse.Namespace) -> list[str]:
    if model.config.extra.get("data") == "sentiment" or args.dataset == "sentiment":
        block = model.config.block_size
        return [o if len(o) < block - 16 else o[-(block - 16):] for o in neutral_openings(3, seed=args.seed)]
    return ["\n"]
