"""The demo's report: `report.md` with its tables, plots and samples side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nanolens.files import atomic_write_text
from nanolens.models import GPT
from nanolens.steering import format_top_tokens
from nanolens.tables import markdown_table, side_by_side

from .plan import DemoPlan


def samples_side_by_side(samples: Any, method: str, layer: Any, neg: float, pos: float, k: int = 3) -> str:
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


def write_report(out: Path, measured: dict, plan: DemoPlan, model: GPT, probe_df: Any, select: Any, result: Any,
                  summary: Any, cos: Any, tops: Any, side: str, scorer: str, report_prompts: list[str],
                  n_select: int, heatmaps: dict, train_info: dict, source: str, contrast: tuple[str, str]) -> None:
    best = measured["best"]
    t = measured["timings"]
    cols = ["method", "layer", "neg_coeff", "frac_pos_at_neg", "frac_pos_unsteered", "pos_coeff", "frac_pos_at_pos",
            "ppl_at_neg", "ppl_unsteered", "ppl_at_pos", "val_rise_at_neg", "val_rise_at_pos", "wrong_way_at_pos", "max_move"]
    probe_cols = [c for c in ("layer", "hook", "accuracy", "control_accuracy", "selectivity") if c in probe_df.columns]
    sweep_cols = ["method", "layer", "coeff", "mean_sentiment", "frac_positive", "frac_negative", "wrong_way",
                  "perplexity", "val_loss_rise"]
    chosen = measured["chosen_layers"]

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
    atomic_write_text(out / "report.md", "\n".join(lines))


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
