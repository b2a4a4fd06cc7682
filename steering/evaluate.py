"""Measuring steering: sentiment of steered generations against the coefficient, and its cost.

`sweep(model, prompts, vectors, coeffs)` generates `samples_per_prompt` continuations of every
prompt for every (method, layer, coefficient) setting and returns one table row per setting:

- ``mean_sentiment``: the mean score of the continuations (the scorer's scale, [-1, 1]);
- ``frac_positive`` / ``frac_negative``: the share of continuations scored > 0 / < 0;
- ``wrong_way``: the share of prompts whose mean score moved *against* the coefficient's sign
  compared with the same prompt unsteered (NaN at coefficient 0);
- ``perplexity``: the fluency cost, exp(mean NLL) of the continuations under the **unsteered**
  model (the unsteered continuations' perplexity is the coefficient-0 row);
- ``val_loss`` / ``val_loss_rise``: next-token loss on held-out corpus text with the vector
  applied (at every position), and its rise over the unsteered loss (given `val_text`).

Generation is batched across settings: one batch per prompt holds every setting's samples as
rows, each row with its own steering (`RowSteering`), so a sweep of many settings costs a few
large batches instead of many small ones. Scorers are pluggable: ``"words"`` (the embedded
sentiment corpus' word lists, its ground truth), ``"vader"`` (VADER's compound score, for natural
text) or any `callable(text) -> float`.

Plots: `plot_sentiment_vs_coeff` (one line per method, at its best layer) and
`plot_layer_heatmap` (layer x coefficient). `summarize_sweep` picks each method's best layer and
coefficients and reports the positive fraction at negative / zero / positive coefficients with
the perplexity cost there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .apply import RowSteering, Steering, as_steering, check_positions, finite_coeffs
from .vector import SteeringError, SteeringVector, _layer_of

Scorer = Callable[[str], float]


# ---------------------------------------------------------------------------------------------
# scorers
# ---------------------------------------------------------------------------------------------
def words_scorer(text: str) -> float:
    """The embedded corpus' ground truth: (positive - negative) / (positive + negative) words."""
    from nanolens.models.sentiment import score_sentiment

    return score_sentiment(text)


_VADER: Any = None


def vader_scorer(text: str) -> float:
    """VADER's compound score in [-1, 1] (vaderSentiment), for natural English text."""
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    return float(_VADER.polarity_scores(text)["compound"])


SCORERS: dict[str, Scorer] = {"words": words_scorer, "vader": vader_scorer}


def get_scorer(scorer: str | Scorer) -> tuple[str, Scorer]:
    if callable(scorer):
        return getattr(scorer, "__name__", "custom"), scorer
    if scorer not in SCORERS:
        raise SteeringError(f"unknown scorer {scorer!r}; use one of {', '.join(SCORERS)} or a function text -> score")
    return scorer, SCORERS[scorer]


# ---------------------------------------------------------------------------------------------
# fluency
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def continuation_nll(model: Any, tokens: torch.Tensor, prompt_len: int, lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: summed NLL of its continuation tokens `tokens[:, prompt_len : prompt_len + length]`
    under `model` as it is (call it outside any steering), and the token count."""
    block = model.config.block_size
    total = tokens.shape[1]
    nll = np.zeros(tokens.shape[0])
    count = np.asarray(lengths, dtype=np.int64)
    if total <= block:
        logits = model(tokens)
        per = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), tokens[:, 1:], reduction="none")
        for i, n in enumerate(lengths):
            nll[i] = float(per[i, prompt_len - 1 : prompt_len - 1 + n].sum())
        return nll, count
    # longer than the context: score each continuation token with its last `block` tokens of context
    for j in range(prompt_len, total):
        start = max(0, j - block)
        logits = model(tokens[:, start:j])[:, -1]
        lp = torch.log_softmax(logits.float(), -1).gather(1, tokens[:, j : j + 1]).squeeze(1)
        for i, n in enumerate(lengths):
            if j - prompt_len < n:
                nll[i] -= float(lp[i])
    return nll, count


def continuation_perplexity(model: Any, prompt: str, continuations: Sequence[str]) -> list[float]:
    """Perplexity of each continuation of `prompt` under `model` (as it is: unsteered outside
    a steering context). Continuations of unequal length are scored one by one."""
    out = []
    was_training = model.training
    model.eval()
    try:
        for c in continuations:
            if not c:
                out.append(float("nan"))
                continue
            ids = model.to_tokens(prompt + c)
            nll, n = continuation_nll(model, ids, len(model.tokenizer.encode(prompt)), [len(model.tokenizer.encode(c))])
            out.append(math.exp(nll[0] / max(n[0], 1)))
    finally:
        model.train(was_training)
    return out


def _val_windows(model: Any, val_text: str | torch.Tensor, n_windows: int) -> torch.Tensor:
    block = model.config.block_size
    ids = val_text if isinstance(val_text, torch.Tensor) else torch.tensor(model.tokenizer.encode(val_text), dtype=torch.long)
    ids = ids.reshape(-1)
    if len(ids) < 2:
        raise SteeringError("val_text is too short to measure a loss on (needs at least 2 tokens)")
    width = min(block, len(ids))
    starts = np.linspace(0, len(ids) - width, num=max(1, n_windows)).astype(int)
    return torch.stack([ids[s : s + width] for s in np.unique(starts)]).to(model.device)


@torch.no_grad()
def val_loss_rise(model: Any, steerings: Sequence[Steering | None], val_text: str | torch.Tensor,
                  n_windows: int = 8, max_rows: int = 512) -> tuple[float, list[float]]:
    """Next-token loss on windows of held-out text, unsteered and under each steering (applied
    at every position as its mode says; None = unsteered). Returns (unsteered loss, losses)."""
    from .apply import steer

    windows = _val_windows(model, val_text, n_windows)
    W = windows.shape[0]
    was_training = model.training
    model.eval()
    try:
        base = float(model(windows, return_type="loss"))
        losses: list[float] = [base if s is None else float("nan") for s in steerings]
        todo = [i for i, s in enumerate(steerings) if s is not None]
        per_batch = max(1, max_rows // W)
        for k in range(0, len(todo), per_batch):
            chunk = todo[k : k + per_batch]
            rows = [steerings[i] for i in chunk for _ in range(W)]
            tokens = windows.repeat(len(chunk), 1)
            with steer(model, RowSteering(rows)):
                per = model(tokens, return_type="loss", loss_per_token=True)  # [rows, width - 1]
            per = per.float().mean(1).view(len(chunk), W).mean(1)
            for j, i in enumerate(chunk):
                losses[i] = float(per[j])
    finally:
        model.train(was_training)
    return base, losses


# ---------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------
def _by_layer(method: str, spec: Any) -> dict[Any, SteeringVector]:
    if isinstance(spec, SteeringVector):
        layers = {_layer_of(h) for h in spec.hooks}
        layer = layers.pop() if len(layers) == 1 else "+".join(sorted(map(str, layers)))
        return {layer: spec}
    if isinstance(spec, Mapping):
        out = {}
        for layer, v in spec.items():
            if not isinstance(v, SteeringVector):
                raise SteeringError(f"vectors[{method!r}][{layer!r}] is a {type(v).__name__}, not a SteeringVector")
            out[layer] = v
        if not out:
            raise SteeringError(f"vectors[{method!r}] is empty")
        return out
    raise SteeringError(f"vectors[{method!r}] must be a SteeringVector or {{layer: SteeringVector}}, got {type(spec).__name__}")


def _check_prompts(model: Any, prompts: Any) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts or [])
    if not prompts:
        raise SteeringError("no prompts given: the list is empty; give at least one prompt to continue")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p:
            raise SteeringError(f"prompt {i} is empty; every prompt needs at least one token")
        if len(model.tokenizer.encode(p)) >= model.config.block_size:
            raise SteeringError(f"prompt {i} is as long as the context ({model.config.block_size} tokens); shorten it")
    return prompts


@torch.no_grad()
def _sample_settings(model: Any, prompts: Sequence[str], steerings: Sequence[Steering | None], samples_per_prompt: int,
                     scorers: Mapping[str, Scorer], *, max_new_tokens: int, temperature: float, top_k: int | None,
                     top_p: float | None, seed: int, stop: str | None, max_rows: int, progress: bool) -> Any:
    """Every prompt x steering x sample, generated in batches of up to `max_rows` rows (one
    steering per row) and scored: one DataFrame row per continuation, with its NLL under the
    unsteered model. The columns named by `scorers` hold each scorer's score."""
    import pandas as pd
    from tqdm.auto import tqdm

    S = len(steerings)
    rows_per_prompt = S * samples_per_prompt
    samples: list[dict[str, Any]] = []
    bar = tqdm(total=len(prompts) * rows_per_prompt, desc=f"steered samples ({S} settings)", unit="sample",
               leave=False, disable=not progress)
    try:
        for p_index, prompt in enumerate(prompts):
            prompt_ids = model.to_tokens(prompt)
            P = prompt_ids.shape[1]
            row_settings = [i for i in range(S) for _ in range(samples_per_prompt)]
            for k in range(0, rows_per_prompt, max_rows):
                chunk = row_settings[k : k + max_rows]
                rs = RowSteering([steerings[i] for i in chunk])
                out = model.generate(prompt_ids.repeat(len(chunk), 1), max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_k=top_k, top_p=top_p,
                                     seed=seed + 7919 * p_index + k, steering=rs)
                texts, lengths = [], []
                for row in out[:, P:]:
                    text = model.tokenizer.decode(row.tolist())
                    if stop and stop in text:  # score the text before the stop; its NLL includes the stop
                        text = text[: text.index(stop)]
                        n_tokens = len(model.tokenizer.encode(text + stop))
                    else:
                        n_tokens = row.numel()
                    texts.append(text)
                    lengths.append(max(1, min(n_tokens, row.numel())))
                nll, count = continuation_nll(model, out, P, lengths)
                for j, i in enumerate(chunk):
                    samples.append({"prompt_index": p_index, "prompt": prompt, "setting": i, "continuation": texts[j],
                                    **{name: float(fn(texts[j])) for name, fn in scorers.items()},
                                    "nll": float(nll[j]), "n_tokens": int(count[j])})
                bar.update(len(chunk))
    finally:
        bar.close()
    return pd.DataFrame(samples)


def _perplexity(samples: Any) -> float:
    """exp(mean NLL per token) over all the continuations of one setting, pooled by tokens."""
    return float(math.exp(samples["nll"].sum() / max(int(samples["n_tokens"].sum()), 1)))


@torch.no_grad()
def sweep(
    model: Any,
    prompts: Sequence[str],
    vectors: Mapping[str, SteeringVector | Mapping[Any, SteeringVector]],
    coeffs: Sequence[float],
    layers: Sequence[Any] | None = None,
    samples_per_prompt: int = 4,
    *,
    scorer: str | Scorer = "words",
    max_new_tokens: int = 80,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    positions: Any = "all",
    relative: bool = True,
    check_model: bool = True,
    stop: str | None = "\n",
    val_text: str | torch.Tensor | None = None,
    val_windows: int = 8,
    max_rows: int = 512,
    progress: bool = True,
    return_samples: bool = False,
):
    """Steered generation for every (method, layer, coefficient); a pandas DataFrame, one row each.

    `vectors`: method name -> a SteeringVector, or {layer: SteeringVector} (one per layer for a
    layer sweep). `layers`: keep only these layers (default all given). `coeffs`: the
    coefficients (0 = the unsteered baseline, generated once and shared by all methods);
    `relative=True` (default) reads them in units of each layer's typical residual norm.
    `stop`: each continuation is cut where this string first appears (default a newline: the
    end of a story) before it is scored. Sampling: `temperature`, `top_k`, `top_p`, `seed`.
    `val_text`: held-out text for the val-loss rise. `return_samples=True` also returns a
    DataFrame of every continuation with its score.

    Columns: method, layer, coeff, mean_sentiment, std_sentiment, frac_positive, frac_negative,
    wrong_way, perplexity, val_loss, val_loss_rise, n. `df.attrs` records the scorer and the
    sampling settings.
    """
    import pandas as pd

    prompts = _check_prompts(model, prompts)
    coeffs = finite_coeffs(coeffs)
    positions = check_positions(positions)
    if not isinstance(samples_per_prompt, int) or samples_per_prompt < 1:
        raise SteeringError(f"samples_per_prompt must be a positive int, got {samples_per_prompt!r}")
    if not vectors:
        raise SteeringError("no vectors given: pass {method name: SteeringVector or {layer: SteeringVector}}")
    scorer_name, score = get_scorer(scorer)
    model.eval()

    # settings: (method, layer, coeff, Steering | None); coefficient 0 is one shared baseline
    settings: list[tuple[str, Any, float, Steering | None]] = [("unsteered", "-", 0.0, None)]
    for method, spec in vectors.items():
        table = _by_layer(method, spec)
        wanted = [layer for layer in table if layers is None or layer in layers]
        if layers is not None and not wanted:
            raise SteeringError(f"vectors[{method!r}] has layers {list(table)}, none of the requested {list(layers)}")
        for layer in wanted:
            for c in coeffs:
                if c == 0:
                    continue
                s = Steering(table[layer], coeff=c, positions=positions, relative=relative, check_model=check_model)
                s.validate(model)
                settings.append((method, layer, c, s))
    S = len(settings)
    sdf = _sample_settings(model, prompts, [st for *_, st in settings], samples_per_prompt, {"score": score},
                           max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                           stop=stop, max_rows=max_rows, progress=progress)
    sdf.insert(3, "method", [settings[i][0] for i in sdf.setting])
    sdf.insert(4, "layer", pd.Series([settings[i][1] for i in sdf.setting], dtype=object))
    sdf.insert(5, "coeff", [settings[i][2] for i in sdf.setting])

    # per-setting aggregates
    base_by_prompt = sdf[sdf.setting == 0].groupby("prompt_index")["score"].mean()
    val_base, val_losses = None, [float("nan")] * S
    if val_text is not None:
        val_base, val_losses = val_loss_rise(model, [s[3] for s in settings], val_text, val_windows, max_rows)
    table_rows = []
    for i, (method, layer, c, _) in enumerate(settings):
        g = sdf[sdf.setting == i]
        by_prompt = g.groupby("prompt_index")["score"].mean()
        delta = by_prompt - base_by_prompt.reindex(by_prompt.index)
        wrong = float(((delta < 0) if c > 0 else (delta > 0)).mean()) if c != 0 else float("nan")
        table_rows.append({
            "method": method, "layer": layer, "coeff": c,
            "mean_sentiment": float(g["score"].mean()), "std_sentiment": float(g["score"].std(ddof=0)),
            "frac_positive": float((g["score"] > 0).mean()), "frac_negative": float((g["score"] < 0).mean()),
            "wrong_way": wrong,
            "perplexity": _perplexity(g),
            "val_loss": val_losses[i],
            "val_loss_rise": (val_losses[i] - val_base) if val_base is not None else float("nan"),
            "n": int(len(g)),
        })
    df = pd.DataFrame(table_rows)
    df["layer"] = pd.Series([r["layer"] for r in table_rows], dtype=object)  # ints, and "-" for unsteered
    df.attrs.update({
        "scorer": scorer_name, "temperature": temperature, "top_k": top_k, "top_p": top_p,
        "max_new_tokens": max_new_tokens, "samples_per_prompt": samples_per_prompt, "n_prompts": len(prompts),
        "relative": relative, "positions": positions, "stop": stop, "val_loss": val_base,
    })
    return (df, sdf) if return_samples else df


# ---------------------------------------------------------------------------------------------
# several directions at once
# ---------------------------------------------------------------------------------------------
def setting_name(coeffs: Mapping[str, float]) -> str:
    """The name `grid_settings` gives one combination: ``"sentiment=+0.8 gender=-0.4"``, or
    ``"unsteered"`` when every coefficient is 0."""
    if all(c == 0 for c in coeffs.values()):
        return "unsteered"
    return " ".join(f"{n}={c:+g}" for n, c in coeffs.items())


def grid_settings(vectors: Mapping[str, SteeringVector], coeffs: Mapping[str, Sequence[float]], *,
                  relative: bool = True, positions: Any = "all", check_model: bool = True) -> dict[str, Steering | None]:
    """Every combination of one coefficient per named vector, as one Steering each (all added
    together in the same forward pass), named by `setting_name`; the all-zero combination is
    ``"unsteered"`` (None)."""
    import itertools

    if not vectors:
        raise SteeringError("no vectors given: pass {name: SteeringVector}")
    missing = [name for name in vectors if name not in coeffs]
    if missing:
        raise SteeringError(f"no coefficients for {', '.join(missing)}; give coeffs={{name: [..]}} for every vector")
    names = list(vectors)
    axes = [finite_coeffs(coeffs[n]) for n in names]
    out: dict[str, Steering | None] = {}
    for combo in itertools.product(*axes):
        terms = [(vectors[n], c) for n, c in zip(names, combo) if c != 0]
        out[setting_name(dict(zip(names, combo)))] = (
            Steering(terms, relative=relative, positions=positions, check_model=check_model) if terms else None)
    return out


@torch.no_grad()
def evaluate_settings(
    model: Any,
    prompts: Sequence[str],
    settings: Mapping[str, Steering | None],
    scorers: Mapping[str, str | Scorer],
    samples_per_prompt: int = 4,
    *,
    max_new_tokens: int = 80,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop: str | None = "\n",
    max_rows: int = 512,
    progress: bool = True,
    return_samples: bool = False,
):
    """Sampled continuations under each named setting (e.g. `grid_settings`), scored by several
    scorers at once: the way to measure that two directions added together steer two
    properties. One row per setting: for each scorer ``{name}_mean`` and
    ``{name}_frac_positive`` (the share scored > 0), then ``perplexity`` under the unsteered
    model and ``n``. None as a setting is the unsteered model."""
    import pandas as pd

    prompts = _check_prompts(model, prompts)
    if not settings:
        raise SteeringError("no settings given: pass {name: Steering or None}")
    if not scorers:
        raise SteeringError("no scorers given: pass {name: 'words' | 'vader' | a function text -> score}")
    if not isinstance(samples_per_prompt, int) or samples_per_prompt < 1:
        raise SteeringError(f"samples_per_prompt must be a positive int, got {samples_per_prompt!r}")
    score = {name: get_scorer(sc)[1] for name, sc in scorers.items()}
    names = list(settings)
    steerings = [as_steering(settings[n]) if settings[n] is not None else None for n in names]
    for name, st in zip(names, steerings):
        if isinstance(st, RowSteering):
            raise SteeringError(f"setting {name!r} is a RowSteering; a setting is one Steering applied to all its rows")
        if st is not None:
            st.validate(model)
    model.eval()
    sdf = _sample_settings(model, prompts, steerings, samples_per_prompt, score, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=stop, max_rows=max_rows,
                           progress=progress)
    sdf.insert(3, "name", [names[i] for i in sdf.setting])
    rows = []
    for i, name in enumerate(names):
        g = sdf[sdf.setting == i]
        row: dict[str, Any] = {"setting": name}
        for sc in score:
            row[f"{sc}_mean"] = float(g[sc].mean())
            row[f"{sc}_frac_positive"] = float((g[sc] > 0).mean())
        row["perplexity"] = _perplexity(g)
        row["n"] = int(len(g))
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs.update({"scorers": list(score), "temperature": temperature, "max_new_tokens": max_new_tokens,
                     "samples_per_prompt": samples_per_prompt, "n_prompts": len(prompts), "stop": stop})
    return (df, sdf) if return_samples else df


# ---------------------------------------------------------------------------------------------
# teacher-forced: a cheap, low-noise measure for choosing layers and coefficients
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def margin_sweep(
    model: Any,
    prefixes: Sequence[str],
    positive: Sequence[str],
    negative: Sequence[str],
    vectors: Mapping[str, SteeringVector | Mapping[Any, SteeringVector]],
    coeffs: Sequence[float],
    layers: Sequence[Any] | None = None,
    *,
    positions: Any = "all",
    relative: bool = True,
    check_model: bool = True,
    max_rows: int = 512,
    progress: bool = True,
):
    """How much each setting favours a positive over a negative continuation, without sampling.

    For each prefix i (e.g. a neutral story opening) and its matched continuations
    `positive[i]` / `negative[i]`, the **margin** is log P(positive | prefix) - log P(negative |
    prefix) in nats (summed over the continuation's tokens). Its change from the unsteered model
    (`margin_shift`) says how far a setting pushes towards positive text, deterministically and
    at the cost of two forward passes per prefix for all settings together; `nll_shift` is the
    change of the continuations' mean per-token NLL (the fluency cost). One row per setting,
    like `sweep` (coefficient 0 = the unsteered row)."""
    import pandas as pd

    from .apply import steer

    if not (len(prefixes) == len(positive) == len(negative)) or not prefixes:
        raise SteeringError("margin_sweep needs one positive and one negative continuation per prefix (and at least one prefix)")
    coeffs = finite_coeffs(coeffs)
    positions = check_positions(positions)
    settings: list[tuple[str, Any, float, Steering | None]] = [("unsteered", "-", 0.0, None)]
    for method, spec in vectors.items():
        table = _by_layer(method, spec)
        for layer in [layer for layer in table if layers is None or layer in layers]:
            for c in coeffs:
                if c != 0:
                    s = Steering(table[layer], coeff=c, positions=positions, relative=relative, check_model=check_model)
                    s.validate(model)
                    settings.append((method, layer, c, s))
    S = len(settings)
    block = model.config.block_size
    totals = np.zeros((S, 2))  # summed log-probs: positive, negative
    counts = np.zeros(2)
    model.eval()
    from tqdm.auto import tqdm

    for prefix, pos, neg in tqdm(list(zip(prefixes, positive, negative)), desc=f"margins ({S} settings)", leave=False,
                                 disable=not progress):
        P = len(model.tokenizer.encode(prefix))
        for j, cont in enumerate((pos, neg)):
            ids = model.to_tokens(prefix + cont)[:, -block:]
            start = max(P - (len(model.tokenizer.encode(prefix + cont)) - ids.shape[1]), 1)
            for k in range(0, S, max_rows):
                chunk = list(range(k, min(S, k + max_rows)))
                with steer(model, RowSteering([settings[i][3] for i in chunk])):
                    logits = model(ids.repeat(len(chunk), 1))
                lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(2, ids[:, 1:].repeat(len(chunk), 1)[..., None])[..., 0]
                totals[chunk, j] += lp[:, start - 1 :].sum(1).cpu().numpy()
            counts[j] += ids.shape[1] - start
    n = len(prefixes)
    margin = (totals[:, 0] - totals[:, 1]) / n
    nll = -(totals[:, 0] + totals[:, 1]) / counts.sum()
    rows = [{"method": m, "layer": layer, "coeff": c, "margin": float(margin[i]), "margin_shift": float(margin[i] - margin[0]),
             "nll": float(nll[i]), "nll_shift": float(nll[i] - nll[0])} for i, (m, layer, c, _) in enumerate(settings)]
    df = pd.DataFrame(rows)
    df["layer"] = pd.Series([r["layer"] for r in rows], dtype=object)
    df.attrs.update({"relative": relative, "positions": positions, "n_prefixes": n})
    return df


def best_margin_layers(df: Any, max_nll_shift: float = 0.5, layers: Sequence[Any] | None = None) -> dict[str, Any]:
    """Each method's layer with the widest margin swing (value at the largest coefficient minus
    at the most negative one), among settings whose NLL rose by at most `max_nll_shift` nats
    per token (all coefficients if fewer than two qualify). `layers`: the candidates (default
    every layer of the sweep)."""
    out = {}
    for method in [m for m in df.method.unique() if m != "unsteered"]:
        rows = df[df.method == method]
        best, best_swing = None, None
        candidates = [layer for layer in rows.layer.unique() if layers is None or str(layer) in {str(x) for x in layers}]
        for layer in candidates or rows.layer.unique():
            t = rows[rows.layer.astype(str) == str(layer)].sort_values("coeff")
            ok = t[t.nll_shift <= max_nll_shift]
            t = ok if len(ok) >= 2 else t
            swing = float(t.margin.iloc[-1] - t.margin.iloc[0])
            if best_swing is None or swing > best_swing:
                best, best_swing = layer, swing
        out[method] = best
    return out


# ---------------------------------------------------------------------------------------------
# reading a sweep
# ---------------------------------------------------------------------------------------------
def _with_baseline(df: Any, method: str, layer: Any) -> Any:
    """One method's rows at one layer, plus the shared coefficient-0 row."""
    import pandas as pd

    rows = df[(df.method == method) & (df.layer.astype(str) == str(layer))]
    base = df[df.method == "unsteered"].assign(method=method, layer=layer)
    return pd.concat([rows, base]).sort_values("coeff").reset_index(drop=True)


def best_layers(df: Any, metric: str = "frac_positive") -> dict[str, Any]:
    """Each method's layer with the widest swing of `metric` (largest-coefficient value minus
    most-negative-coefficient value; lower perplexity breaks ties)."""
    out = {}
    for method in [m for m in df.method.unique() if m != "unsteered"]:
        best, best_key = None, None
        for layer in df[df.method == method].layer.unique():
            t = _with_baseline(df, method, layer)
            swing = float(t[metric].iloc[-1] - t[metric].iloc[0])
            key = (round(swing, 6), -float(t.perplexity.mean()))
            if best_key is None or key > best_key:
                best, best_key = layer, key
        out[method] = best
    return out


def summarize_sweep(df: Any, target_high: float = 0.9, target_low: float = 0.1, max_ppl_ratio: float | None = None) -> Any:
    """One row per method at its best layer: the positive fraction unsteered, at the chosen
    negative and positive coefficients (the smallest magnitude reaching <= `target_low` /
    >= `target_high`, else the most extreme), the perplexity and val-loss rise there, and the
    largest move of the positive fraction over all coefficients (what the random control must
    keep small). `max_ppl_ratio`: choose only among coefficients whose perplexity stays within
    that many times the unsteered one (when a side has any), so broken text is never chosen."""
    import pandas as pd

    rows = []
    base = df[df.method == "unsteered"].iloc[0]
    for method, layer in best_layers(df).items():
        t = _with_baseline(df, method, layer)
        pos, neg = t[t.coeff > 0], t[t.coeff < 0]
        if max_ppl_ratio is not None:
            fluent_pos, fluent_neg = (side[side.perplexity <= max_ppl_ratio * base.perplexity] for side in (pos, neg))
            pos = fluent_pos if len(fluent_pos) else pos
            neg = fluent_neg if len(fluent_neg) else neg

        def pick(side, ok):
            hit = side[ok(side.frac_positive)]
            if len(hit):  # the smallest coefficient that reaches the target
                return hit.loc[hit.coeff.abs().idxmin()]
            # none does: the best value, and among equals the largest coefficient
            sign = 1.0 if (side.coeff > 0).all() else -1.0
            order = side.assign(_v=sign * side.frac_positive, _c=side.coeff.abs()).sort_values(["_v", "_c"])
            return order.iloc[-1]

        p = pick(pos, lambda f: f >= target_high) if len(pos) else None
        n = pick(neg, lambda f: f <= target_low) if len(neg) else None
        rows.append({
            "method": method, "layer": layer,
            "neg_coeff": n.coeff if n is not None else float("nan"),
            "frac_pos_at_neg": n.frac_positive if n is not None else float("nan"),
            "frac_pos_unsteered": base.frac_positive,
            "pos_coeff": p.coeff if p is not None else float("nan"),
            "frac_pos_at_pos": p.frac_positive if p is not None else float("nan"),
            "ppl_at_neg": n.perplexity if n is not None else float("nan"),
            "ppl_unsteered": base.perplexity,
            "ppl_at_pos": p.perplexity if p is not None else float("nan"),
            "val_rise_at_neg": n.val_loss_rise if n is not None else float("nan"),
            "val_rise_at_pos": p.val_loss_rise if p is not None else float("nan"),
            "wrong_way_at_pos": p.wrong_way if p is not None else float("nan"),
            "max_move": float((t.frac_positive - base.frac_positive).abs().max()),
        })
    return pd.DataFrame(rows)


def format_table(df: Any, columns: Sequence[str] | None = None, floatfmt: str = ".3f") -> str:
    """A fixed-width text table (what the CLI prints); also fine as Markdown-free plain text."""
    cols = list(columns) if columns is not None else list(df.columns)
    cells = [[_fmt(v, floatfmt) for v in df[c]] for c in cols]
    widths = [max(len(c), *(len(x) for x in col)) if len(col) else len(c) for c, col in zip(cols, cells)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    for r in range(len(df)):
        lines.append("  ".join(cells[k][r].rjust(w) for k, w in enumerate(widths)))
    return "\n".join(lines)


def markdown_table(df: Any, columns: Sequence[str] | None = None, floatfmt: str = ".3f") -> str:
    cols = list(columns) if columns is not None else list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    for r in range(len(df)):
        lines.append("| " + " | ".join(_fmt(df[c].iloc[r], floatfmt) for c in cols) + " |")
    return "\n".join(lines)


def _fmt(v: Any, floatfmt: str) -> str:
    if isinstance(v, (float, np.floating)):
        return "nan" if not np.isfinite(v) else format(float(v), floatfmt)
    return str(v)


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------
def plot_sentiment_vs_coeff(df: Any, path: str | Path, metric: str = "frac_positive", layers: Mapping[str, Any] | None = None,
                            title: str | None = None) -> Path:
    """`metric` (and the perplexity) against the coefficient, one line per method at its best
    layer (or at `layers[method]`). Writes a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = dict(layers) if layers is not None else best_layers(df)
    fig = Figure(figsize=(11, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for method, layer in layers.items():
        t = _with_baseline(df, method, layer)
        style = dict(ls="--", color="grey") if method.startswith("random") else {}
        ax.plot(t.coeff, t[metric], marker="o", label=f"{method} (layer {layer})", **style)
        ax2.plot(t.coeff, t.perplexity, marker="o", label=f"{method} (layer {layer})", **style)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("coefficient" + (" (x typical residual norm)" if df.attrs.get("relative") else ""))
    ax.set_ylabel(metric.replace("_", " "))
    if metric.startswith("frac"):
        ax.set_ylim(-0.03, 1.03)
        ax.axhline(0.9, color="g", lw=0.5, ls=":")
        ax.axhline(0.1, color="r", lw=0.5, ls=":")
    ax.legend(fontsize=8)
    ax.set_title(title or f"{metric.replace('_', ' ')} vs coefficient ({df.attrs.get('scorer', '')} scorer)")
    ax2.set_xlabel("coefficient")
    ax2.set_ylabel("perplexity under the unsteered model")
    ax2.set_yscale("log")
    ax2.set_title("fluency cost")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_layer_heatmap(df: Any, path: str | Path, method: str, metric: str = "mean_sentiment", title: str | None = None) -> Path:
    """A layer x coefficient heat map of `metric` for one method (coefficient 0 = unsteered)."""
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = df[df.method == method]
    if rows.empty:
        raise SteeringError(f"the sweep has no rows for method {method!r}; methods: {sorted(set(df.method) - {'unsteered'})}")
    layers = list(dict.fromkeys(rows.layer))
    base = df[df.method == "unsteered"]
    frames = [rows] + [base.assign(method=method, layer=layer) for layer in layers]
    grid = pd.concat(frames).pivot_table(index="layer", columns="coeff", values=metric, aggfunc="mean")
    fig = Figure(figsize=(2.5 + 0.8 * grid.shape[1], 1.6 + 0.55 * grid.shape[0]), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    diverging = "sentiment" in metric or metric.startswith(("frac_pos", "margin"))
    lim = 1.0 if metric == "mean_sentiment" else (float(np.nanmax(np.abs(grid.values))) or 1.0) if metric.startswith("margin") else None
    im = ax.imshow(grid.values, cmap="RdYlGn" if diverging else "viridis", aspect="auto",
                   vmin=-lim if lim else None, vmax=lim)
    ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(layer) for layer in grid.index])
    ax.set_xlabel("coefficient")
    ax.set_ylabel("layer")
    for (r, c), v in np.ndenumerate(grid.values):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label=metric.replace("_", " "))
    ax.set_title(title or f"{method}: {metric.replace('_', ' ')} by layer and coefficient")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
