"""`nanolens demo` (the whole story in one command) and `nanolens steer` (steering from the CLI).

`run_demo` works offline on the embedded sentiment corpus: generate the corpus, train the
default small model (progress bar and live samples), probe every layer, find the sentiment
direction five ways (contrast pair, mean difference, PCA, probe, and a random control of equal
norm), steer held-out neutral openings at negative, zero and positive coefficients, and write
`report.md` plus PNGs. Training takes a wall-clock budget (`train_seconds`): a few timed
steps choose the number of iterations, so the whole demo fits in about five minutes on a
laptop CPU whatever its speed. Each method's layer is chosen on matched pairs, the best
method's coefficients on a second set of held-out openings, and the result is confirmed on a
third beside random directions of equal norm, so the reported numbers are not selected on. A
second direction (the hero's gender) is then added to the sentiment one: two properties steered
at once.

Everything heavy is imported inside the functions: `nanolens --help` stays fast.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

METHODS = ("contrast_pair", "mean_difference", "pca", "probe", "random")
SENTIMENT_CONTRAST = ("The sky was bright and she felt happy.", "The sky was grey and she felt sad.")
SHAKESPEARE_CONTRAST = ("I love thee, and my heart is glad.", "I hate thee, and my heart is sad.")


@dataclass
class DemoPlan:
    """Sizes of one demo run (`quick` is what the tests run)."""

    corpus_chars: int = 1_000_000
    preset: str = "modern"  # RoPE + RMSNorm + SwiGLU: on this corpus it learns ~2x faster per token than gpt2
    tokenizer: str = "bpe"  # word-sized tokens: in the same minutes the model learns to carry the sentiment, chars do not
    vocab_size: int | None = 1024
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    block_size: int = 128
    batch_size: int = 16
    learning_rate: float = 3e-3
    min_lr: float = 3e-4
    warmup_iters: int = 30
    train_seconds: float = 150.0  # ~600 iterations on a quiet 2-core CPU; 140 s (~540) steered visibly worse
    min_iters: int = 100
    max_iters: int = 3000
    eval_iters: int = 10
    probe_texts: int = 600
    pairs: int = 128
    select_pairs: int = 10
    select_coeffs: tuple = (0.1, 0.2, 0.4, 0.8)  # relative coefficients tried for the layer choice
    max_nll_shift: float = 0.3  # nats per token the chosen coefficients may cost (median over methods)
    report_prompts: int = 12
    report_samples: int = 4
    max_new_tokens: int = 48  # about three sentences: enough for the mood to show, and a quarter cheaper than 64
    read: str = "sentence"  # where mean-diff / PCA read the pairs: the reveal "sentence" (mean over it) or "last" token
    temperature: float = 0.8
    val_windows: int = 16
    choose_low: float = 0.05  # each method's coefficients: the smallest reaching <= 5% / >= 95% positive
    choose_high: float = 0.95
    max_ppl_ratio: float = 2.5  # ... among coefficients whose perplexity stays within 2.5x the unsteered one
    control_draws: int = 8  # the confirmation's control: random directions of equal norm, pooled (one draw is noisy:
    control_samples: int = 2  # its projection on the sentiment varies), each with fewer samples per opening
    confirm_prompts: int = 24  # fresh held-out openings for the confirmation of the best method
    confirm_samples: int = 4
    gender_pairs: int = 128  # matched stories for the second direction (sentiment corpus only)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> "DemoPlan":
        return cls(corpus_chars=60_000, vocab_size=400, n_layer=2, n_embd=32, n_head=2, block_size=64, batch_size=16,
                   learning_rate=3e-3, min_lr=3e-4, warmup_iters=5, train_seconds=0, min_iters=40, max_iters=40,
                   eval_iters=2, probe_texts=80, pairs=16, select_pairs=4, select_coeffs=(0.2, 0.4), report_prompts=3,
                   report_samples=2, max_new_tokens=24, val_windows=4, control_draws=2, control_samples=1, confirm_prompts=2,
                   confirm_samples=2, gender_pairs=8)


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def side_by_side(columns: list[tuple[str, str]], width: int = 38) -> str:
    """Texts next to each other under their titles, each wrapped to `width` characters."""
    wrapped = [[title, "-" * min(width, max(len(title), 8))] + (textwrap.wrap(text.replace("\n", " / "), width) or [""])
               for title, text in columns]
    height = max(len(w) for w in wrapped)
    lines = []
    for i in range(height):
        lines.append(" | ".join((w[i] if i < len(w) else "").ljust(width) for w in wrapped).rstrip())
    return "\n".join(lines)


def torch_no_grad_lazy(fn: Callable) -> Callable:
    """`torch.no_grad()` around `fn`, importing torch only when it runs."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


def _say(msg: str) -> None:
    print(msg, flush=True)


def _step_seconds(model: Any, data: Any, plan: DemoPlan, device: str, steps: int = 8) -> float:
    """The median time of a training step of a copy of `model` (after one warm-up step)."""
    import torch

    probe = copy.deepcopy(model).to(device).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 1):
        x, y = data.get_batch("train", plan.batch_size, plan.block_size, gen, device)
        t = time.perf_counter()
        _, loss = probe(x, targets=y, return_type="both")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def calibrate_iters(model: Any, data: Any, plan: DemoPlan, seconds: float, device: str) -> tuple[int, float]:
    """Time a few training steps of a copy of `model`; the iterations that fit in `seconds`.

    On a CPU with several threads, one thread is timed too and kept if it is faster: when other
    processes share the cores, several threads spin-wait and can be many times slower."""
    import torch

    step = _step_seconds(model, data, plan, device)
    threads = torch.get_num_threads()
    if device == "cpu" and threads > 1:
        torch.set_num_threads(1)
        single = _step_seconds(model, data, plan, device)
        if single < step:
            step = single  # keep one thread for the rest of the run
        else:
            torch.set_num_threads(threads)
    # evaluations (2 splits x eval_iters forward passes ~ 1/3 of a step each, 5 of them) and samples
    overhead = 5 * 2 * plan.eval_iters * step / 3 + 4.0
    iters = int(max(seconds - overhead, 0) / step)
    return max(plan.min_iters, min(plan.max_iters, iters)), step


# ---------------------------------------------------------------------------------------------
# training the demo model
# ---------------------------------------------------------------------------------------------
def train_demo_model(text: str, plan: DemoPlan, out_dir: Path | None, device: str = "cpu", seed: int = 0,
                     iters: int | None = None, progress: bool = True, sample_prompt: str = "\n",
                     data_name: str = "sentiment") -> tuple[Any, dict[str, Any]]:
    """Train the model of `plan` (its preset and sizes) on `text` with the Trainer; returns (model, info)."""
    import torch

    from nanolens.models import GPT, preset_config
    from nanolens.models.batches import TokenData
    from nanolens.models.tokenizers import build_tokenizer
    from nanolens.models.trainer import Trainer, TrainConfig

    tokenizer = build_tokenizer(plan.tokenizer, text, plan.vocab_size if plan.tokenizer == "bpe" else None)
    config = preset_config(plan.preset, vocab_size=tokenizer.vocab_size, n_layer=plan.n_layer, n_embd=plan.n_embd,
                           n_head=plan.n_head, block_size=plan.block_size)
    config.extra = {"data": data_name, "tokenizer": plan.tokenizer}
    torch.manual_seed(seed)
    model = GPT(config, tokenizer=tokenizer)
    data = TokenData.from_text(text, tokenizer, 0.1, meta={"data": data_name})
    step_s = None
    if iters is None:
        if plan.train_seconds > 0:
            iters, step_s = calibrate_iters(model, data, plan, plan.train_seconds, device)
        else:
            iters = plan.max_iters
    eval_interval = max(1, iters // 4)
    cfg = TrainConfig(
        batch_size=plan.batch_size, max_iters=iters, learning_rate=plan.learning_rate, min_lr=plan.min_lr,
        warmup_iters=min(plan.warmup_iters, max(1, iters // 5)), eval_interval=eval_interval, eval_iters=plan.eval_iters,
        log_interval=max(1, min(10, iters // 10)), sample_interval=max(1, iters // 2), sample_tokens=160,
        sample_prompt=sample_prompt, seed=1337 + seed, device=device, progress=progress, verbose=progress,
        save_checkpoints=out_dir is not None, plot=out_dir is not None,
    )
    t = time.perf_counter()
    trainer = Trainer(model, data, cfg, out_dir)
    summary = trainer.train()
    if out_dir is not None and (Path(out_dir) / "best" / "config.json").is_file():
        model = GPT.load(Path(out_dir) / "best", device=device)  # what `--ckpt RUN` picks up later
    info = {"iters": iters, "seconds": time.perf_counter() - t, "step_seconds": step_s, "val_loss": summary.get("best_val_loss") or summary.get("val_loss"),
            "train_loss": summary.get("train_loss"), "params": model.num_params(), "tokens": iters * plan.batch_size * plan.block_size,
            "val_text": text[len(text) - int(round(len(text) * 0.1)):]}
    model.eval()
    return model, info


@torch_no_grad_lazy
def sentiment_consistency(model: Any, n_contexts: int = 4) -> dict[str, float]:
    """Does the model carry a story's sentiment forward? After "The sky was {sky} and he felt ",
    the probability that the mood word is a positive one (summed over the corpus' mood words,
    normalised over positive + negative), for positive and for negative sky words. A model that
    keeps the sentiment gives high / low values; one that does not gives about the same for both,
    and then no direction can steer what it does not represent."""
    import torch

    from nanolens.models.sentiment import LEXICON

    def word_prob(ctx: str, word: str) -> float:
        n_ctx = len(model.tokenizer.encode(ctx))
        ids = model.to_tokens(ctx + word)
        lp = torch.log_softmax(model(ids)[0, :-1].float(), -1).gather(1, ids[0, 1:, None])[:, 0]
        return float(lp[n_ctx - 1 :].sum().exp())

    out = {}
    for label in ("positive", "negative"):
        values = []
        for sky in LEXICON["sky"][label][:n_contexts]:
            ctx = f"One morning, Tom walked to the park. The sky was {sky} and he felt"
            p = sum(word_prob(ctx, " " + w) for w in LEXICON["mood"]["positive"])
            n = sum(word_prob(ctx, " " + w) for w in LEXICON["mood"]["negative"])
            values.append(p / (p + n) if p + n > 0 else 0.5)
        out[f"p_positive_mood_after_{label}_sky"] = sum(values) / len(values)
    return out


# ---------------------------------------------------------------------------------------------
# directions
# ---------------------------------------------------------------------------------------------
def find_directions(model: Any, layers: list[int], pos: list[str], neg: list[str], contrast: tuple[str, str],
                    probes: dict[str, Any] | None, norm_texts: list[str], positions: Any = "last",
                    source: str = "") -> tuple[dict[str, dict[int, Any]], list[str]]:
    """({method: {layer: SteeringVector}}, notes) for the five methods at `layers` (resid_pre).

    Every vector at a layer gets the same typical norm (measured once on `norm_texts`), so
    relative coefficients mean the same for every method. A method that finds no direction at
    a layer (e.g. a probe on identical activations) is left out there, with a note."""
    from .directions import contrast_pair, hook_name, mean_difference, pca_direction, probe_direction, random_direction
    from .vector import SteeringError, measure_scales

    hooks = [hook_name(model, layer) for layer in layers]
    scales = measure_scales(model, hooks, norm_texts)
    out: dict[str, dict[int, Any]] = {m: {} for m in METHODS}
    notes: list[str] = []
    for layer, hook in zip(layers, hooks):
        makers: dict[str, Callable[[], Any]] = {
            "contrast_pair": lambda: contrast_pair(model, contrast[0], contrast[1], layer, position="mean", norm_texts=norm_texts[:1]),
            "mean_difference": lambda: mean_difference(model, pos, neg, layer, position=positions, norm_texts=norm_texts[:1], source=source),
            "pca": lambda: pca_direction(model, pos, neg, layer, position=positions, norm_texts=norm_texts[:1], source=source),
        }
        if probes is not None and probes.get(hook) is not None:
            makers["probe"] = lambda: probe_direction(probes[hook], model, layer, source=source)
        for name, make in makers.items():
            try:
                v = make()
                if v.norm == 0:
                    raise SteeringError("the direction is zero")
            except (SteeringError, ValueError) as err:
                notes.append(f"{name} at layer {layer}: no direction ({err})")
                continue
            v.scales = {hook: scales[hook]}  # one typical norm per layer, for every method
            out[name][layer] = v
        like = out["mean_difference"].get(layer) or out["pca"].get(layer) or out["contrast_pair"].get(layer)
        if like is not None:
            out["random"][layer] = random_direction(like=like, seed=1000 + layer)
    return {m: v for m, v in out.items() if v}, notes


def reveal_spans(texts: list[str], tokenizer: Any = None) -> list[tuple[int, int]]:
    """The span of each text's last sentence (the reveal sentence of a `sentiment_pairs` text),
    for reading the mean activation over it: token positions under `tokenizer` (character
    positions when it is None, which is the same for the char tokenizer)."""
    from nanolens.models.tokenizers import char_span_to_tokens

    spans = []
    for t in texts:
        start = t.rfind(". ", 0, len(t) - 1)
        span = (start + 2 if start >= 0 else 0, len(t))
        spans.append(span if tokenizer is None else char_span_to_tokens(tokenizer, t, *span))
    return spans


# ---------------------------------------------------------------------------------------------
# the demo
# ---------------------------------------------------------------------------------------------
def run_demo(out: str | Path = "runs/demo", data: str = "sentiment", quick: bool = False, seed: int = 0,
             train_seconds: float | None = None, iters: int | None = None, device: str = "auto",
             progress: bool = True, preset: str | None = None, ckpt: str | Path | None = None) -> dict[str, Any]:
    """The whole story; returns a dict of what it measured (also written to `out/summary.json`)."""
    import numpy as np
    import torch

    from nanolens.models.trainer import resolve_device
    from nanolens.probes import LabelledTexts, format_table as probe_table, plot_probe_layers, probe_layers

    from .evaluate import (best_margin_layers, format_table, margin_sweep, plot_layer_heatmap, plot_sentiment_vs_coeff,
                           summarize_sweep, sweep)
    from .inspect import cosine_table, format_top_tokens, top_tokens

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
        from nanolens.models.sentiment import generate_corpus, neutral_openings

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
        from nanolens.models.data import load_corpus

        text = load_corpus("shakespeare").text
        if quick:
            text = text[: plan.corpus_chars]
        _say(f"# 1/6 corpus: tiny Shakespeare, {len(text):,} characters; sentiment labels come from VADER")
        scorer, stop = "vader", "\n\n"
        openings = _shakespeare_prompts(text, plan.report_prompts, rng)
        refine_openings = _shakespeare_prompts(text, plan.confirm_prompts, rng)
        confirm_openings = _shakespeare_prompts(text, plan.confirm_prompts, rng)
        sample_prompt = openings[0]
    room = plan.block_size - 16  # a prompt must leave the context room to continue
    report_prompts, refine_prompts, confirm_prompts = (
        [o if len(o) < room else o[-room:] for o in group] for group in (openings, refine_openings, confirm_openings))
    lap("corpus")

    # 2. training -----------------------------------------------------------------------------
    if ckpt is not None:
        model, train_info = _load_demo_model(ckpt, text, device)
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
        from .directions import sentiment_pairs

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
    prefixes, pos_c, neg_c = _selection_pairs(data, plan, model, seed, probe_set if data != "sentiment" else None, rng)
    grid = sorted({s * c for c in plan.select_coeffs for s in (-1.0, 1.0)})
    margins = margin_sweep(model, prefixes, pos_c, neg_c, vectors, grid, relative=True, progress=progress)
    chosen = best_margin_layers(margins, max_nll_shift=plan.max_nll_shift, layers=middle_layers(model.config.n_layer))
    c_max = _coefficient_range(margins, chosen, plan.select_coeffs, plan.max_nll_shift)
    swings = {m: _swing(margins, m, chosen[m], plan.max_nll_shift) for m in chosen if m != "random"}
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
         f"{plan.control_draws} random directions of equal norm:\n" + format_table(confirm))
    # 5e. vector arithmetic: the sentiment plus a second, independent direction (the hero's gender)
    both, both_info = None, {}
    if data == "sentiment":
        g_layer = model.config.n_layer - 1  # which pronoun comes next is decided late: the last block's input
        there = vectors.get(best_method, {}).get(g_layer) or vectors["mean_difference"][g_layer]
        both, both_info = two_directions(model, report_prompts, best_vec, there, g_layer, neg_c, pos_c,
                                         plan.gender_pairs, plan.report_samples, scorer, seed=seed + 3, **sampling)
        _say(f"   two directions at once (sentiment at layer {best_layer}, the hero's gender at layer {g_layer}):\n"
             + format_table(both))
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
    side = _samples_side_by_side(samples, best_method, best_layer, best["neg_coeff"], best["pos_coeff"], k=3)
    _say("   steering held-out neutral openings (coefficients x the layer's typical residual norm):")
    _say(format_table(summary, ["method", "layer", "neg_coeff", "frac_pos_at_neg", "frac_pos_unsteered", "pos_coeff",
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
    _write_report(out, measured, plan, model, probe_df, select, result, summary, cos, tops, side, scorer,
                  report_prompts, len(prefixes), heatmaps, train_info, source, contrast)
    result.to_csv(out / "steering_sweep.csv", index=False)
    select.to_csv(out / "layer_selection.csv", index=False)
    samples.to_csv(out / "steering_samples.csv", index=False)
    probe_df.to_csv(out / "probes.csv", index=False)
    (out / "summary.json").write_text(json.dumps(measured, indent=1, default=str) + "\n", encoding="utf-8")
    _say(f"# 6/6 wrote {out / 'report.md'} and its plots in {total:.0f} s "
         f"(training {timings['training']:.0f} s, steering sweeps {timings['steering']:.0f} s)")
    return measured


def _load_demo_model(ckpt: str | Path, text: str, device: str) -> tuple[Any, dict[str, Any]]:
    """A trained checkpoint instead of training (`nanolens demo --ckpt`); its val loss on the
    corpus' last tenth."""
    import torch

    from nanolens.models import GPT
    from nanolens.models.checkpoint import model_dir

    path = model_dir(ckpt)
    model = GPT.load(path, device=device).eval()
    val_text = text[len(text) - int(round(len(text) * 0.1)):]
    ids = torch.tensor(model.tokenizer.encode(val_text[:200_000]), dtype=torch.long)
    block = model.config.block_size
    n = min(64, len(ids) // block)
    with torch.no_grad():
        loss = float(model(ids[: n * block].view(n, block).to(model.device), return_type="loss"))
    info = {"iters": 0, "seconds": 0.0, "step_seconds": None, "val_loss": loss, "train_loss": None,
            "params": model.num_params(), "tokens": 0, "val_text": val_text, "checkpoint": str(path)}
    return model, info


def _selection_pairs(data: str, plan: DemoPlan, model: Any, seed: int, probe_set: Any, rng: Any) -> tuple[list[str], list[str], list[str]]:
    """(prefixes, positive continuations, negative continuations) for choosing layers: matched
    story beginnings from another seed than the directions' (sentiment), or speaker headers
    with VADER-positive / negative lines (Shakespeare)."""
    block = model.config.block_size
    if data == "sentiment":
        from nanolens.models.sentiment import story_prefix_to_decision

        from .directions import sentiment_pairs

        pos, neg = sentiment_pairs(plan.select_pairs, seed=9876 + seed)
        prefixes, pc, nc = [], [], []
        for p, q in zip(pos, neg):
            cut = story_prefix_to_decision(p)
            prefixes.append(p[:cut][-(block // 2):])
            pc.append(p[cut:])
            nc.append(q[cut:])
        return prefixes, pc, nc
    labels = [str(y) for y in probe_set.labels]
    pos = [t for t, y in zip(probe_set.texts, labels) if y == "positive"]
    neg = [t for t, y in zip(probe_set.texts, labels) if y == "negative"]
    k = min(plan.select_pairs, len(pos), len(neg))
    return ["\n"] * k, [" " + t[: block // 2] for t in pos[-k:]], [" " + t[: block // 2] for t in neg[-k:]]


def confirm_with_control(model: Any, prompts: list[str], vector: Any, neg: float, pos: float, draws: int,
                         samples: int, control_samples: int, scorer: str, **sampling: Any) -> tuple[Any, float]:
    """The best method at its two chosen coefficients beside `draws` random directions of equal
    norm at the same coefficients, on fresh prompts: the check that the effect belongs to the
    direction and not to the size of the push. Returns the table (one row per setting, the
    random draws also pooled into a ``random (mean of k)`` row) and how far that pooled control
    moves the positive fraction at either coefficient. Each random direction gets
    `control_samples` per prompt (many draws with few samples each: what varies most between
    draws is their chance projection on the sentiment), and the unsteered row as many samples as
    the pooled control, so their difference is not mostly sampling noise."""
    import pandas as pd

    from .apply import Steering
    from .directions import random_direction
    from .evaluate import evaluate_settings

    score = {"sentiment": scorer}
    baseline = evaluate_settings(model, prompts, {"unsteered": None}, score,
                                 samples_per_prompt=control_samples * max(1, draws), **sampling)
    best = {f"{vector.label} {c:+g}": Steering(vector, coeff=c, relative=True) for c in (neg, pos)}
    steered = evaluate_settings(model, prompts, best, score, samples_per_prompt=samples, **sampling)
    randoms = [random_direction(like=vector, seed=7919 * k + 1, label=f"random_{k}") for k in range(1, draws + 1)]
    controls = {f"{r.label} {c:+g}": Steering(r, coeff=c, relative=True) for r in randoms for c in (neg, pos)}
    control = evaluate_settings(model, prompts, controls, score, samples_per_prompt=control_samples, **sampling)
    df = pd.concat([baseline, steered, control], ignore_index=True)
    df.insert(1, "coeff", [0.0, neg, pos] + [neg, pos] * draws)
    is_random = df.setting.str.startswith("random_")
    pooled = df[is_random].groupby("coeff", as_index=False).mean(numeric_only=True)
    pooled["n"] = df[is_random].groupby("coeff")["n"].sum().values
    pooled.insert(0, "setting", f"random (mean of {draws})")
    df = pd.concat([df, pooled[df.columns]], ignore_index=True)
    base = df.sentiment_frac_positive.iloc[0]
    move = float((pooled.sentiment_frac_positive - base).abs().max()) if len(pooled) else float("nan")
    return df, move


def two_directions(model: Any, prompts: list[str], sentiment: Any, sentiment_there: Any, layer: int, neg: float,
                   pos: float, pairs: int, samples: int, scorer: str, **sampling: Any) -> tuple[Any, dict[str, float]]:
    """Vector arithmetic on the embedded corpus: the sentiment direction plus a second,
    independent one, every combination of signs, each continuation scored for both properties.

    The second direction is the hero's gender (mean difference over `gender_pairs`, read over
    whole stories, cropped to the context) at `layer`, minus its component along
    `sentiment_there` (the sentiment direction at that layer), so it carries no sentiment of its
    own. The sentiment goes in at `neg` / `pos`, the gender at +-g, g the mean of their sizes.
    Returns the table and the gender direction's cosine with the sentiment before and after."""
    from nanolens.models.sentiment import pronoun_gender

    from .directions import gender_pairs, mean_difference
    from .evaluate import evaluate_settings, grid_settings, setting_name

    women, men = gender_pairs(pairs)
    raw = mean_difference(model, women, men, layer, position="mean", label="gender")
    gender = raw.without(sentiment_there)
    gender.label = "gender"
    g = round((abs(neg) + abs(pos)) / 2, 6)
    info = {"layer": layer, "coeff": g, "cos_before": raw.cosine(sentiment_there), "cos_after": gender.cosine(sentiment_there)}
    settings = grid_settings({"sentiment": sentiment, "gender": gender}, {"sentiment": [neg, 0.0, pos], "gender": [-g, 0.0, g]})
    df = evaluate_settings(model, prompts, settings, {"positive": scorer, "female": pronoun_gender},
                           samples_per_prompt=samples, **sampling)
    frac = df.set_index("setting")

    def at(cs: float, cg: float, column: str) -> float:
        return float(frac.loc[setting_name({"sentiment": cs, "gender": cg}), column])

    # each direction's own effect with the other held at each of its values
    info["swings"] = [{"held": f"sentiment {cs:+g}", "moved": f"gender {-g:+g} -> {g:+g}", "property": "female fraction",
                       "change": at(cs, g, "female_frac_positive") - at(cs, -g, "female_frac_positive")}
                      for cs in (neg, 0.0, pos)]
    info["swings"] += [{"held": f"gender {cg:+g}", "moved": f"sentiment {neg:+g} -> {pos:+g}", "property": "positive fraction",
                        "change": at(pos, cg, "positive_frac_positive") - at(neg, cg, "positive_frac_positive")}
                       for cg in (-g, 0.0, g)]
    return df, info


def middle_layers(n_layer: int) -> list[int]:
    """The layers the demo steers at: not the embedding (layer 0) nor the last block's input
    when there are three or more layers. Steering the last block's input raises the
    teacher-forced margin most (it pushes sentiment words straight into the logits), but
    sampled text does not keep that sentiment once it has drifted the other way; from the
    middle layers the model's own later blocks carry it (on the demo model, +0.4 x norm:
    81% positive continuations at layer 3 of 4, 92-94% at layers 1-2)."""
    return list(range(1, n_layer - 1)) if n_layer >= 3 else list(range(n_layer))


def _swing(margins: Any, method: str, layer: Any, max_nll_shift: float) -> float:
    t = margins[(margins.method == method) & (margins.layer.astype(str) == str(layer))].sort_values("coeff")
    ok = t[t.nll_shift <= max_nll_shift]
    t = ok if len(ok) >= 2 else t
    return float(t.margin.iloc[-1] - t.margin.iloc[0]) if len(t) else 0.0


def _coefficient_range(margins: Any, chosen: dict, coeffs: tuple, max_nll_shift: float) -> float:
    """The largest coefficient whose NLL rise (the median over the methods at their chosen
    layers, the worse of the two signs) stays within `max_nll_shift`."""
    import numpy as np

    best = min(coeffs)
    for c in sorted(coeffs):
        rises = []
        for method, layer in chosen.items():
            rows = margins[(margins.method == method) & (margins.layer.astype(str) == str(layer)) & (margins.coeff.abs() == c)]
            if len(rows):
                rises.append(float(rows.nll_shift.max()))
        if rises and float(np.median(rises)) <= max_nll_shift:
            best = c
    return best


def _shakespeare_prompts(text: str, n: int, rng: Any) -> list[str]:
    """Speaker headers ("ROMEO:\\n") from the last tenth of the text (the val split), distinct."""
    import re

    tail = text[int(len(text) * 0.9):]
    names = list(dict.fromkeys(m.group(0) for m in re.finditer(r"(?m)^[A-Z][A-Za-z ]{2,20}:\n", tail)))
    if not names:
        names = ["\n"]
    return [names[i % len(names)] for i in rng.permutation(max(n, len(names)))[:n]]


def _samples_side_by_side(samples: Any, method: str, layer: Any, neg: float, pos: float, k: int = 3) -> str:
    blocks = []
    for p_index in list(dict.fromkeys(samples.prompt_index))[:k]:
        s = samples[samples.prompt_index == p_index]

        def first(rows):
            return rows.continuation.iloc[0] if len(rows) else "(none)"

        prompt = s.prompt.iloc[0]
        neg_rows = s[(s.method == method) & (s.layer.astype(str) == str(layer)) & (s.coeff == neg)]
        pos_rows = s[(s.method == method) & (s.layer.astype(str) == str(layer)) & (s.coeff == pos)]
        base_rows = s[s.method == "unsteered"]
        blocks.append(f"prompt: {prompt!r}\n" + side_by_side([
            (f"coeff {neg:+g} (score {neg_rows.score.iloc[0]:+.2f})" if len(neg_rows) else f"coeff {neg:+g}", first(neg_rows)),
            (f"unsteered (score {base_rows.score.iloc[0]:+.2f})" if len(base_rows) else "unsteered", first(base_rows)),
            (f"coeff {pos:+g} (score {pos_rows.score.iloc[0]:+.2f})" if len(pos_rows) else f"coeff {pos:+g}", first(pos_rows)),
        ]))
    return "\n\n".join(blocks)


def _write_report(out: Path, measured: dict, plan: DemoPlan, model: Any, probe_df: Any, select: Any, result: Any,
                  summary: Any, cos: Any, tops: Any, side: str, scorer: str, report_prompts: list[str],
                  n_select: int, heatmaps: dict, train_info: dict, source: str, contrast: tuple[str, str]) -> None:
    import pandas as pd

    from .evaluate import markdown_table
    from .inspect import format_top_tokens

    best = measured["best"]
    t = measured["timings"]
    cols = ["method", "layer", "neg_coeff", "frac_pos_at_neg", "frac_pos_unsteered", "pos_coeff", "frac_pos_at_pos",
            "ppl_at_neg", "ppl_unsteered", "ppl_at_pos", "val_rise_at_neg", "val_rise_at_pos", "wrong_way_at_pos", "max_move"]
    probe_cols = [c for c in ("layer", "hook", "accuracy", "control_accuracy", "selectivity") if c in probe_df.columns]
    sweep_cols = ["method", "layer", "coeff", "mean_sentiment", "frac_positive", "frac_negative", "wrong_way",
                  "perplexity", "val_loss_rise"]
    chosen = measured["chosen_layers"]
    import numpy as np

    keep = np.array([m == "unsteered" or str(layer) == str(chosen.get(m)) for m, layer in zip(select.method, select.layer)])
    at_chosen = select[keep]
    lines = [
        "# nanolens demo report", "",
        f"Data: **{measured['data']}**{' (quick mode)' if measured['quick'] else ''}. Total wall time: "
        f"**{measured['seconds']:.0f} s** (" + ", ".join(f"{k} {v:.0f} s" for k, v in t.items() if k != "total") + ").", "",
        "## Model and training", "",
        f"{model.config.preset} preset, {model.config.n_layer} layers, d_model {model.config.n_embd}, {model.config.n_head} heads, context "
        f"{model.config.block_size}, {train_info['params']:,} parameters. "
        + (f"Loaded from `{train_info['checkpoint']}` (`--ckpt`; not trained by this run); val loss on the corpus' last tenth "
           f"{train_info['val_loss']:.3f}." if train_info.get("checkpoint") else
           f"Trained {train_info['iters']} iterations ({train_info['tokens']:,} tokens, batch {plan.batch_size}) in "
           f"{train_info['seconds']:.0f} s; best val loss {train_info['val_loss']:.3f} (best/, the checkpoint analysed here). "
           f"Checkpoints: `{out / 'run'}`."), "",
        *(["![loss curve](run/loss_curve.png)", ""] if not train_info.get("checkpoint") else []),
        *([f"Does the model carry a story's sentiment forward? After \"The sky was <sky word> and he felt \", the "
           f"probability that the mood word is positive is **{measured['consistency']['p_positive_mood_after_positive_sky']:.2f}** "
           f"after a positive sky word and **{measured['consistency']['p_positive_mood_after_negative_sky']:.2f}** after a "
           "negative one (in the corpus: 1.00 and 0.00). Steering can only move what the model represents: when these two "
           "numbers are close, the model has not yet learned to keep the sentiment, and no direction will steer it much "
           "(train longer: `--train-seconds`).", ""] if measured.get("consistency") else []),
        "## Probes: where is the sentiment?", "",
        "A logistic-regression probe on the residual stream entering each block (resid_pre; `embed` = layer 0's input), "
        + ("read at the end of the first sentence that reveals a story's label, scored on held-out stories, against a "
         "shuffled-label control." if measured["data"] == "sentiment" else
         "read at the last character of each VADER-labelled line, scored on held-out lines, against a shuffled-label "
         "control."), "",
        markdown_table(probe_df, probe_cols), "", "![probe accuracy](probe_accuracy.png)", "",
        "## Directions", "",
        f"Five ways at every layer's resid_pre: **contrast_pair** (ActAdd, one pair: {contrast[0]!r} vs {contrast[1]!r}, "
        "mean over each prompt's tokens), **mean_difference** (CAA) and **pca** (first principal component of the paired "
        "differences, *not* centred: the mean difference is the shared signal; see `pca_direction`) over "
        f"{source}, **probe** (the layer's probe weights), and **random** (a random direction with the mean difference's "
        "norm: the control; the confirmation below uses several).", "",
        *([f"Not found: {'; '.join(measured['notes'])}.", ""] if measured.get("notes") else []),
        f"Cosine similarity at layer {best['layer']}:", "", markdown_table(cos.reset_index().rename(columns={"index": "vs"})), "",
        f"The best direction ({best['method']}, layer {best['layer']}) read through ln_final and the unembedding "
        "(the tokens it promotes and demotes):", "", "```", format_top_tokens(tops), "```", "",
        "## Steering held-out openings", "",
        f"Prompts: neutral story openings held out from the corpus (never in the training text, and not used to find "
        f"any direction). Each method's layer and the coefficient range were chosen beforehand on {n_select} other "
        "matched pairs (below); the table reports "
        f"{len(report_prompts)} openings x {plan.report_samples} samples each, {plan.max_new_tokens} new "
        f"tokens at temperature {plan.temperature}, cut at the end of the story, scored with the `{scorer}` "
        "scorer. Coefficients are in units of the layer's typical residual-stream norm (relative), added at every "
        "position (prompt and generated). `frac_pos_*` is the share of continuations scored positive at the "
        "chosen negative coefficient / unsteered / the chosen positive coefficient (the smallest reaching <= 10% / "
        ">= 90%, else the most extreme); `ppl_*` is the perplexity of the continuations under the unsteered model; "
        "`val_rise_*` the rise in val loss on held-out corpus text with the vector applied; `max_move` the largest "
        "change of the positive fraction over all coefficients (the random control should keep it small).", "",
        markdown_table(summary, cols), "",
        f"Best method (the widest swing): **{best['method']}** at layer **{best['layer']}**.", "",
        "### Its coefficients, from a finer sweep on other openings", "",
        f"On {plan.confirm_prompts} other held-out openings x {plan.confirm_samples} samples, the smallest coefficients "
        f"reaching <= {plan.choose_low:.0%} / >= {plan.choose_high:.0%} positive (a margin over the 10% / 90% target: "
        f"one grid point of a few dozen samples is noisy) among those whose perplexity stays within {plan.max_ppl_ratio:g}x "
        f"the unsteered one, else the closest of those: **{best['neg_coeff']:+g}** / **{best['pos_coeff']:+g}**.", "",
        markdown_table(pd.DataFrame(measured["refine"]), ["coeff", "mean_sentiment", "frac_positive", "perplexity", "n"]), "",
        "![steering vs coefficient](steering_vs_coeff.png)", "",
        "### Confirmation on fresh openings, beside the random control", "",
        f"The best method at its two chosen coefficients, on {plan.confirm_prompts} other held-out openings x "
        f"{plan.confirm_samples} samples (not the ones its coefficients were read from), beside {plan.control_draws} random "
        f"directions of the same norm at the same layer and coefficients ({plan.control_samples} samples per opening each; "
        "the unsteered row has as many samples as the pooled draws). `sentiment_frac_positive` is the share of "
        "continuations scored positive; the last rows pool the random draws.", "",
        markdown_table(pd.DataFrame(measured["confirmation"])), "",
        f"The pooled random control moves the positive fraction by at most **{measured['control_move_at_best_coeffs']:.3f}** "
        "from the unsteered row (single draws vary more: a random direction is not orthogonal to everything the model "
        "cares about).", "",
        _verdict(measured["confirmation"], measured["control_move_at_best_coeffs"]), "",
        *(_two_directions_section(measured["two_directions"], best) if measured.get("two_directions") else []),
        "All settings (report prompts):", "", markdown_table(result, sweep_cols), "",
        "### Choosing the layer and the coefficients", "",
        f"On {n_select} matched pairs (a story opening, continued once positively and once negatively; never used to find a "
        "direction), the margin log P(positive continuation) - log P(negative continuation) in nats, for every method, layer "
        "and coefficient, without sampling. `margin_shift` is its change from the unsteered model, `nll_shift` the rise of the "
        f"continuations' per-token NLL. Each method's layer is the one with the widest margin swing among coefficients costing "
        f"at most {plan.max_nll_shift} nats per token; the coefficient range is the largest whose median cost stays within it "
        f"(here {max(measured['coefficients']) / 2:g}); the sampled sweep goes to twice that ({max(measured['coefficients']):g}), "
        "since the teacher-forced cost is a cautious proxy. Candidate layers are the middle ones (`middle_layers`). The random "
        "control is evaluated at the layer of the method with the widest swing. At the chosen layers:", "",
        markdown_table(at_chosen, ["method", "layer", "coeff", "margin", "margin_shift", "nll_shift"]), "",
        "Margin shift by layer and coefficient for each method:", "",
        *[f"![{m}]({p.name})" for m, p in heatmaps.items()], "",
        "### Samples", "", "```", side, "```", "",
        "## Reproduce", "",
        "```", f"nanolens demo --out {out}" + (" --quick" if measured["quick"] else "") +
        (f" --data {measured['data']}" if measured["data"] != "sentiment" else ""),
        f"nanolens steer --ckpt {out / 'run'} --vector {out / 'vectors' / (best['method'] + '_L' + str(best['layer']))} "
        f"--coeff {best['pos_coeff']:g} --relative", "```", "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


def _verdict(confirmation: list[dict], control_move: float) -> str:
    """The steering targets, judged on the confirmation rows: the best method at its negative
    coefficient (row 1) and positive one (row 2), and the pooled random control."""
    neg, pos = confirmation[1]["sentiment_frac_positive"], confirmation[2]["sentiment_frac_positive"]
    checks = [(f"positive fraction at {confirmation[1]['coeff']:+g}", neg, "<= 0.10", neg <= 0.10),
              (f"positive fraction at {confirmation[2]['coeff']:+g}", pos, ">= 0.90", pos >= 0.90),
              ("random control's largest move", control_move, "<= 0.10", control_move <= 0.10)]
    parts = [f"{what} {value:.3f} ({goal}: {'met' if ok else 'missed'})" for what, value, goal, ok in checks]
    return "Targets on these fresh openings: " + "; ".join(parts) + "."


def _two_directions_section(two: dict, best: dict) -> list[str]:
    import pandas as pd

    from .evaluate import markdown_table

    return [
        "## Vector arithmetic: two directions at once", "",
        f"A second direction, independent of the sentiment: the hero's gender (mean difference over "
        f"`gender_pairs`, the same stories told with a heroine and with a hero), at layer {two['layer']}, minus its "
        f"component along the sentiment direction there (`gender.without(sentiment)`: cosine {two['cos_before']:+.3f} "
        f"before, {two['cos_after']:+.3f} after). Both are added together, the sentiment at {best['neg_coeff']:+g} / 0 / "
        f"{best['pos_coeff']:+g} and the gender at {-two['coeff']:+g} / 0 / {two['coeff']:+g} (the mean size of the "
        "sentiment's two), every combination; each continuation is scored for its sentiment "
        "(`positive_*`) and for the gender of its first pronoun (`female_*`: +1 she/her, -1 he/him/his).", "",
        markdown_table(pd.DataFrame(two["table"])), "",
        "Each direction's own effect, with the other held at each of its values (the change of the property it "
        "steers between its two coefficients):", "",
        markdown_table(pd.DataFrame(two["swings"])), "",
    ]


# ---------------------------------------------------------------------------------------------
# `nanolens steer`
# ---------------------------------------------------------------------------------------------
METHOD_ALIASES = {"contrast": "contrast_pair", "contrast-pair": "contrast_pair", "actadd": "contrast_pair",
                  "mean-diff": "mean_difference", "mean_diff": "mean_difference", "caa": "mean_difference",
                  "pca": "pca", "repe": "pca", "probe": "probe", "random": "random"}


def _labelled_pairs(model: Any, dataset: str, n: int, seed: int) -> tuple[list[str], list[str], str]:
    """(positive texts, negative texts, description) for mean-diff / PCA / probe."""
    import numpy as np

    block = model.config.block_size
    if dataset == "sentiment":
        from .directions import sentiment_pairs

        pos, neg = sentiment_pairs(n, seed=seed, max_chars=block)
        return pos, neg, f"sentiment_pairs({n}, seed={seed})"
    from nanolens.probes import LabelledTexts

    if dataset == "shakespeare":
        ds = LabelledTexts.from_shakespeare(n=2 * n, max_chars=block, alphabet=getattr(model.tokenizer, "chars", None), seed=seed)
    else:
        if not Path(dataset).is_file():
            raise FileNotFoundError(f"--dataset {dataset!r} is neither sentiment, shakespeare nor an existing .csv/.jsonl file")
        ds = LabelledTexts.from_file(dataset)
    labels = np.asarray([str(y).lower() for y in ds.labels])
    pos_names, neg_names = {"positive", "pos", "1", "true"}, {"negative", "neg", "0", "false"}
    pos = [t[-block:] for t, y in zip(ds.texts, labels) if y in pos_names][:n]
    neg = [t[-block:] for t, y in zip(ds.texts, labels) if y in neg_names][:n]
    if not pos or not neg:
        raise ValueError(f"--dataset {dataset}: needs labels positive/negative (or 1/0); got {sorted(set(labels))[:5]}")
    return pos, neg, f"{dataset} ({len(pos)} positive, {len(neg)} negative)"


def build_vector(model: Any, args: argparse.Namespace, layer: int) -> Any:
    """The steering vector `nanolens steer` asks for, at `layer`."""
    from .directions import contrast_pair, mean_difference, pca_direction, probe_direction, random_direction

    method = METHOD_ALIASES.get(args.method)
    if method is None:
        raise ValueError(f"--method {args.method!r}: use contrast, mean-diff, pca, probe or random")
    if method == "contrast_pair":
        if args.positive is None or args.negative is None:
            raise ValueError("--method contrast needs --positive and --negative prompts (e.g. --positive 'I love' --negative 'I hate')")
        return contrast_pair(model, args.positive, args.negative, layer, position=_read_position(args.read))
    pos, neg, what = _labelled_pairs(model, args.dataset, args.n, args.data_seed)
    if method == "mean_difference":
        return mean_difference(model, pos, neg, layer, source=what)
    if method == "pca":
        k = min(len(pos), len(neg))
        return pca_direction(model, pos[:k], neg[:k], layer, source=what)
    md = mean_difference(model, pos, neg, layer, source=what)
    if method == "random":
        return random_direction(like=md, seed=args.seed)
    from nanolens.probes import LinearProbe, extract_activations
    from .directions import hook_name

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


def steer_command(args: argparse.Namespace) -> int:
    """`nanolens steer`: print unsteered and steered generations side by side, or run a sweep."""
    import torch

    from nanolens.models import GPT
    from nanolens.models.checkpoint import model_dir
    from nanolens.models.trainer import resolve_device

    from .apply import Steering
    from .evaluate import format_table, plot_layer_heatmap, plot_sentiment_vs_coeff, summarize_sweep, sweep
    from .vector import SteeringVector

    ckpt = model_dir(args.ckpt)
    model = GPT.load(ckpt, device=resolve_device(args.device)).eval()
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
        texts = prompts if args.dataset not in ("sentiment",) else _labelled_pairs(model, "sentiment", 32, 7)[0]
        vector = vector.with_scales(model, texts)
    print(f"# {ckpt}: {vector!r}; {vector.provenance.get('method')} at {', '.join(vector.hooks)}", file=sys.stderr)

    if args.sweep:
        out = Path(args.out) if args.out else (ckpt.parent if ckpt.name in ("best", "last") else ckpt) / "steering"
        layers = [int(x) for x in args.layers.split(",")] if args.layers else [layer]
        coeffs = [float(x) for x in args.coeffs.split(",")]
        by_layer = {L: (vector if L == layer or args.vector else build_vector(model, args, L)) for L in layers}
        scorer = args.scorer or ("words" if model.config.extra.get("data") == "sentiment" else "vader")
        df = sweep(model, prompts, {vector.label: by_layer}, coeffs, samples_per_prompt=args.num_samples,
                   scorer=scorer, max_new_tokens=args.max_new_tokens, temperature=args.temperature or 0.8,
                   top_k=args.top_k, seed=args.seed, positions=_positions(args.positions), relative=args.relative,
                   check_model=not args.any_model, progress=not args.quiet)
        print(format_table(df, ["method", "layer", "coeff", "mean_sentiment", "frac_positive", "frac_negative",
                                "wrong_way", "perplexity"]))
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "steer_sweep.csv", index=False)
        p1 = plot_sentiment_vs_coeff(df, out / "steer_vs_coeff.png")
        p2 = plot_layer_heatmap(df, out / "steer_heatmap.png", vector.label)
        print(format_table(summarize_sweep(df)), file=sys.stderr)
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


def _default_prompts(model: Any, args: argparse.Namespace) -> list[str]:
    if model.config.extra.get("data") == "sentiment" or args.dataset == "sentiment":
        from nanolens.models.sentiment import neutral_openings

        block = model.config.block_size
        return [o if len(o) < block - 16 else o[-(block - 16):] for o in neutral_openings(3, seed=args.seed)]
    return ["\n"]


def demo_command(args: argparse.Namespace) -> int:
    run_demo(out=args.out, data=args.data, quick=args.quick, seed=args.seed, train_seconds=args.train_seconds,
             iters=args.iters, device=args.device, progress=not args.quiet, preset=args.preset, ckpt=args.ckpt)
    return 0
