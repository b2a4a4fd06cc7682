"""`run_demo`: the whole story offline, in one command (`nanolens demo`).

On the embedded sentiment corpus: generate the corpus, train the default small model
(progress bar and live samples), probe every layer, find the sentiment direction five ways
(contrast pair, mean difference, PCA, probe, and a random control of equal norm), steer
held-out neutral openings at negative, zero and positive coefficients, and write `report.md`
plus PNGs. Each method's layer is chosen on matched pairs, the best method's coefficients on a
second set of held-out openings, and the result is confirmed on a third beside random
directions of equal norm, so the reported numbers are not selected on. A second direction (the
hero's gender) is then added to the sentiment one: two properties steered at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanolens.corpora import load_corpus, sentiment_pairs
from nanolens.corpora.sentiment import generate_corpus, neutral_openings
from nanolens.files import atomic_write_text
from nanolens.probes import LabelledTexts, plot_probe_layers, probe_layers, probe_table
from nanolens.steering import (best_margin_layers, cosine_table, format_top_tokens, margin_sweep, plot_layer_heatmap,
                               plot_sentiment_vs_coeff, summarize_sweep, sweep, top_tokens)
from nanolens.tables import text_table
from nanolens.training import resolve_device

from .checks import coefficient_range, confirm_with_control, margin_swing, two_directions
from .directions import find_directions, middle_layers, reveal_spans
from .model import load_demo_model, sentiment_consistency, train_demo_model
from .plan import SENTIMENT_CONTRAST, SHAKESPEARE_CONTRAST, DemoPlan
from .prompts import selection_pairs, shakespeare_prompts
from .report import samples_side_by_side, write_report


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(out: str | Path = "runs/demo", data: str = "sentiment", quick: bool = False, seed: int = 0,
             train_seconds: float | None = None, iters: int | None = None, device: str = "auto",
             progress: bool = True, preset: str | None = None, ckpt: str | Path | None = None) -> dict[str, Any]:
    """The whole story; returns a dict of what it measured (also written to `out/summary.json`)."""
    if data not in ("sentiment", "shakespeare"):
        raise ValueError(f"--data {data!r}: the demo runs on 'sentiment' (the embedded corpus) or 'shakespeare'")
    t_start = time.perf_counter()
    plan = DemoPlan.quick() if quick else DemoPlan()
    if train_seconds is not None:
        plan.train_seconds = float(train_seconds)
    if preset is not None:
        plan.preset = preset
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    if device == "cpu" and quick:
        torch.set_num_threads(1)
    timings: dict[str, float] = {}
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        timings[name] = now - tick
        tick = now

    # 1. the corpus ---------------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    if data == "sentiment":
        corpus = generate_corpus(plan.corpus_chars, seed=seed)
        text = corpus.text
        _say(f"# 1/6 corpus: the embedded sentiment stories, {len(text):,} characters, {len(corpus.stories):,} stories "
             "(each opens with a neutral sentence; its label decides every later word)")
        scorer, stop = "words", "\n"
        openings = neutral_openings(plan.report_prompts, seed=seed + 1)
        fresh = [o for o in neutral_openings(2 * plan.confirm_prompts + len(openings), seed=seed + 2) if o not in openings]
        refine_openings = fresh[: plan.confirm_prompts]
        confirm_openings = fresh[plan.confirm_prompts : 2 * plan.confirm_prompts]
        sample_prompt = openings[0]
    else:
        text = load_corpus("shakespeare").text
        if quick:
            text = text[: plan.corpus_chars]
        _say(f"# 1/6 corpus: tiny Shakespeare, {len(text):,} characters; sentiment labels come from VADER")
        scorer, stop = "vader", "\n\n"
        openings = shakespeare_prompts(text, plan.report_prompts, rng)
        refine_openings = shakespeare_prompts(text, plan.confirm_prompts, rng)
        confirm_openings = shakespeare_prompts(text, plan.confirm_prompts, rng)
        sample_prompt = openings[0]
    room = plan.block_size - 16  # a prompt must leave the context room to continue
    report_prompts, refine_prompts, confirm_prompts = (
        [o if len(o) < room else o[-room:] for o in group] for group in (openings, refine_openings, confirm_openings))
    lap("corpus")

    # 2. training -----------------------------------------------------------------------------
    if ckpt is not None:
        model, train_info = load_demo_model(ckpt, text, device)
        plan.block_size = model.config.block_size
        _say(f"# 2/6 using the trained model in {train_info['checkpoint']} (no training): val loss {train_info['val_loss']:.3f}")
    else:
        _say(f"# 2/6 training a {plan.n_layer}-layer, {plan.n_embd}-wide {plan.preset}-preset model (context {plan.block_size}) "
             + (f"for about {plan.train_seconds:.0f} s" if iters is None and plan.train_seconds > 0 else f"for {iters or plan.max_iters} iterations"))
        model, train_info = train_demo_model(text, plan, out / "run", device=device, seed=seed, iters=iters,
                                             progress=progress, sample_prompt=sample_prompt, data_name=data)
        _say(f"   trained {train_info['iters']} iterations ({train_info['tokens']:,} tokens) in {train_info['seconds']:.0f} s: "
             f"val loss {train_info['val_loss']:.3f}")
    lap("training")
    block = model.config.block_size
    consistency = sentiment_consistency(model) if data == "sentiment" else {}
    if consistency:
        _say(f"   does it carry the sentiment? P(positive mood word) after a positive sky word "
             f"{consistency['p_positive_mood_after_positive_sky']:.2f}, after a negative one "
             f"{consistency['p_positive_mood_after_negative_sky']:.2f} (the corpus: 1.00 / 0.00)")

    # 3. probes -------------------------------------------------------------------------------
    if data == "sentiment":
        probe_set = LabelledTexts.from_sentiment(plan.probe_texts, position="reveal", max_chars=block)
    else:
        probe_set = LabelledTexts.from_shakespeare(n=plan.probe_texts, max_chars=block, alphabet=getattr(model.tokenizer, "chars", None))
    probe_df, probes = probe_layers(model, probe_set, hook="resid_pre", progress=False, return_probes=True)
    plot_probe_layers(probe_df, out / "probe_accuracy.png", title="Where does the model know the sentiment? (resid_pre)")
    _say("# 3/6 a linear probe at every layer (held-out accuracy vs a shuffled-label control):\n" + probe_table(probe_df))
    lap("probes")

    # 4. directions ---------------------------------------------------------------------------
    layers = list(range(model.config.n_layer))
    if data == "sentiment":
        pos, neg = sentiment_pairs(plan.pairs, seed=4321 + seed, max_chars=block)
        contrast = SENTIMENT_CONTRAST
        source = (f"sentiment_pairs({plan.pairs}): matched story beginnings (one opening, continued positively and "
                  "negatively), read " + ("as the mean over the sentence that reveals the label" if plan.read == "sentence"
                                          else "at the last token of the sentence that reveals the label"))
        norm_texts = [corpus.story_text(i)[-block:] for i in range(min(64, len(corpus.stories)))]
    else:
        labels = np.asarray(probe_set.labels)
        pos = [t for t, y in zip(probe_set.texts, labels) if y == "positive"]
        neg = [t for t, y in zip(probe_set.texts, labels) if y == "negative"]
        k = min(len(pos), len(neg), plan.pairs)
        pos, neg = pos[:k], neg[:k]
        contrast, source = SHAKESPEARE_CONTRAST, f"{k} VADER-positive and {k} VADER-negative lines (paired at random for PCA)"
        norm_texts = [text[i : i + block] for i in rng.integers(0, len(text) - block, 64)]
    if plan.read != "sentence":
        read = plan.read
    elif data == "sentiment":
        read = reveal_spans(pos, model.tokenizer) + reveal_spans(neg, model.tokenizer)
    else:
        read = "mean"  # a labelled Shakespeare line is its own sentence
    vectors, notes = find_directions(model, layers, pos, neg, contrast, probes, norm_texts, positions=read, source=source)
    for note in notes:
        _say(f"   note: {note}")
    vec_dir = out / "vectors"
    for method, by_layer in vectors.items():
        for layer, v in by_layer.items():
            v.save(vec_dir / f"{method}_L{layer}")
    _say(f"# 4/6 directions at every layer's resid_pre, five ways ({', '.join(vectors)}); saved to {vec_dir}")
    lap("directions")

    # 5. steering ------------------------------------------------------------------------------
    # 5a. each method's layer and the coefficient range, from the teacher-forced margin
    #     log P(positive continuation) - log P(negative one) on matched pairs no direction was
    #     found on: deterministic and cheap, so the choice is not made on sampling noise.
    prefixes, pos_c, neg_c = selection_pairs(data, plan, model, seed, probe_set if data != "sentiment" else None, rng)
    grid = sorted({s * c for c in plan.select_coeffs for s in (-1.0, 1.0)})
    margins = margin_sweep(model, prefixes, pos_c, neg_c, vectors, grid, relative=True, progress=progress)
    chosen = best_margin_layers(margins, max_nll_shift=plan.max_nll_shift, layers=middle_layers(model.config.n_layer))
    c_max = coefficient_range(margins, chosen, plan.select_coeffs, plan.max_nll_shift)
    swings = {m: margin_swing(margins, m, chosen[m], plan.max_nll_shift) for m in chosen if m != "random"}
    lead = max(swings, key=swings.get) if swings else next(iter(chosen))
    if "random" in vectors and chosen[lead] in vectors["random"]:
        chosen["random"] = chosen[lead]  # the control at the same layer and coefficients as the strongest method
    _say(f"# 5/6 layer choice by the log-prob margin on {len(prefixes)} held-out matched pairs: "
         + ", ".join(f"{m} layer {layer}" for m, layer in chosen.items()) + f"; coefficients up to {c_max:g} x the typical norm")
    # 5b. sampled continuations of held-out neutral openings at those layers
    # up to twice the range: the teacher-forced cost is a cautious proxy, and the table should
    # show where sampled text reaches the target and where it breaks
    coeffs = [c_max * f for f in (-2.0, -1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0)]
    report_vectors = {m: {chosen[m]: vectors[m][chosen[m]]} for m in vectors if chosen.get(m) in vectors[m]}
    sampling = dict(max_new_tokens=plan.max_new_tokens, temperature=plan.temperature, stop=stop, progress=progress)
    result, samples = sweep(model, report_prompts, report_vectors, coeffs, samples_per_prompt=plan.report_samples,
                            scorer=scorer, seed=seed + 1, val_text=train_info["val_text"], val_windows=plan.val_windows,
                            return_samples=True, **sampling)
    summary = summarize_sweep(result)
    steered = summary[summary.method != "random"]
    swing = steered.frac_pos_at_pos - steered.frac_pos_at_neg
    best = steered.loc[swing.idxmax()] if len(steered) else summary.iloc[0]
    best_method, best_layer = str(best["method"]), int(best["layer"])
    best_vec = vectors[best_method][best_layer]
    # 5c. the best method's coefficients, from a finer sweep on other openings: one grid point of a
    #     few dozen samples that reaches a target is often luck, so aim for 5% / 95% there
    fine = [c_max * f for f in (-2.0, -1.75, -1.5, -1.25, -1.0, -0.75, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)]
    refine = sweep(model, refine_prompts, {best_method: {best_layer: best_vec}}, fine,
                   samples_per_prompt=plan.confirm_samples, scorer=scorer, seed=seed + 4, **sampling)
    picked = summarize_sweep(refine, target_high=plan.choose_high, target_low=plan.choose_low,
                             max_ppl_ratio=plan.max_ppl_ratio).iloc[0]
    neg_c, pos_c = round(float(picked["neg_coeff"]), 6), round(float(picked["pos_coeff"]), 6)
    # 5d. the best method at those coefficients on fresh openings, beside random directions of equal norm
    confirm, control_move = confirm_with_control(model, confirm_prompts, best_vec, neg_c, pos_c, plan.control_draws,
                                                 plan.confirm_samples, plan.control_samples, scorer, seed=seed + 2,
                                                 **sampling)
    _say(f"   confirmed on {len(confirm_prompts)} fresh openings x {plan.confirm_samples} samples, beside "
         f"{plan.control_draws} random directions of equal norm:\n" + text_table(confirm))
    # 5e. vector arithmetic: the sentiment plus a second, independent direction (the hero's gender)
    both, both_info = None, {}
    if data == "sentiment":
        g_layer = model.config.n_layer - 1  # which pronoun comes next is decided late: the last block's input
        there = vectors.get(best_method, {}).get(g_layer) or vectors["mean_difference"][g_layer]
        both, both_info = two_directions(model, report_prompts, best_vec, there, g_layer, neg_c, pos_c,
                                         plan.gender_pairs, plan.report_samples, scorer, seed=seed + 3, **sampling)
        _say(f"   two directions at once (sentiment at layer {best_layer}, the hero's gender at layer {g_layer}):\n"
             + text_table(both))
    lap("steering")

    # 6. report -------------------------------------------------------------------------------
    plot_sentiment_vs_coeff(result, out / "steering_vs_coeff.png", layers={m: chosen[m] for m in report_vectors if m in chosen},
                            title=f"held-out openings: positive fraction vs coefficient ({scorer} scorer)")
    heatmaps = {}
    for method in vectors:
        heatmaps[method] = plot_layer_heatmap(margins, out / f"heatmap_{method}.png", method, metric="margin_shift",
                                              title=f"{method}: log-prob margin shift (nats) by layer and coefficient")
    tops = top_tokens(model, best_vec, k=8, ln_final=True)
    cos = cosine_table({m: vectors[m][best_layer] for m in vectors if best_layer in vectors[m]}, hook=best_vec.hook)
    select = margins
    side = samples_side_by_side(samples, best_method, best_layer, best["neg_coeff"], best["pos_coeff"], k=3)
    _say("   steering held-out neutral openings (coefficients x the layer's typical residual norm):")
    _say(text_table(summary, ["method", "layer", "neg_coeff", "frac_pos_at_neg", "frac_pos_unsteered", "pos_coeff",
                                "frac_pos_at_pos", "ppl_at_neg", "ppl_unsteered", "ppl_at_pos", "max_move"]))
    _say(f"random control ({plan.control_draws} directions of equal norm, averaged) at the best method's coefficients: "
         f"the positive fraction moves by at most {control_move:.3f}")
    _say(f"\nbest: {best_method} at layer {best_layer}. Its direction through the unembedding:\n{format_top_tokens(tops)}")
    _say("\n" + side)
    timings["report"] = 0.0
    total = time.perf_counter() - t_start
    timings["total"] = total
    measured = {
        "data": data, "quick": quick, "seconds": total, "timings": timings,
        "train": {k: v for k, v in train_info.items() if k != "val_text"},
        "consistency": consistency,
        "best": {"method": best_method, "layer": int(best_layer), "neg_coeff": neg_c, "pos_coeff": pos_c},
        "refine": json.loads(refine.to_json(orient="records")),
        "control_move_at_best_coeffs": control_move,
        "confirmation": json.loads(confirm.to_json(orient="records")),
        "two_directions": {**both_info, "table": json.loads(both.to_json(orient="records"))} if both is not None else None,
        "summary": json.loads(summary.to_json(orient="records")),
        "chosen_layers": {m: int(v) for m, v in chosen.items()},
        "coefficients": coeffs,
        "notes": notes,
    }
    write_report(out, measured, plan, model, probe_df, select, result, summary, cos, tops, side, scorer,
                  report_prompts, len(prefixes), heatmaps, train_info, source, contrast)
    result.to_csv(out / "steering_sweep.csv", index=False)
    select.to_csv(out / "layer_selection.csv", index=False)
    samples.to_csv(out / "steering_samples.csv", index=False)
    probe_df.to_csv(out / "probes.csv", index=False)
    atomic_write_text(out / "summary.json", json.dumps(measured, indent=1, default=str) + "\n")
    _say(f"# 6/6 wrote {out / 'report.md'} and its plots in {total:.0f} s "
         f"(training {timings['training']:.0f} s, steering sweeps {timings['steering']:.0f} s)")
    return measured
