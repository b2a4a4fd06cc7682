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

`evaluate_settings` measures named settings (several directions at once, `grid_settings`)
under several scorers. Reading a sweep is `nanolens.steering.selection`, its plots
`nanolens.steering.plots`, the cheap teacher-forced variant `nanolens.steering.margins`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from nanolens.models import GPT
from nanolens.models.hook_names import layer_of

from .apply import RowSteering, Steering, as_steering, check_positions, finite_coeffs
from .fluency import continuation_nll, val_loss_rise
from .scorers import Scorer, get_scorer
from .vector import SteeringError, SteeringVector


def by_layer(method: str, spec: Any) -> dict[Any, SteeringVector]:
    if isinstance(spec, SteeringVector):
        layers = {layer_of(h) for h in spec.hooks}
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


def _check_prompts(model: GPT, prompts: Any) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts or [])
    if not prompts:
        raise SteeringError("no prompts given: the list is empty; give at least one prompt to continue")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p:
            raise SteeringError(f"prompt {i} is empty; every prompt needs at least one token")
        if model.to_tokens(p).shape[1] >= model.config.block_size:
            raise SteeringError(f"prompt {i} is as long as the context ({model.config.block_size} tokens); shorten it")
    return prompts


@torch.no_grad()
def _sample_settings(model: GPT, prompts: Sequence[str], steerings: Sequence[Steering | None], samples_per_prompt: int,
                     scorers: Mapping[str, Scorer], *, max_new_tokens: int, temperature: float, top_k: int | None,
                     top_p: float | None, seed: int, stop: str | None, max_rows: int, progress: bool) -> Any:
    """Every prompt x steering x sample, generated in batches of up to `max_rows` rows (one
    steering per row) and scored: one DataFrame row per continuation, with its NLL under the
    unsteered model. The columns named by `scorers` hold each scorer's score."""
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
    model: GPT,
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
        table = by_layer(method, spec)
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
    model: GPT,
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
