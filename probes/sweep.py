"""Layer sweeps: a probe at every layer, scored on held-out texts against a control task.

`probe_layers(model, dataset, hook="resid_post")` extracts the activations of every layer in
one pass (plus the embeddings, `blocks.0.hook_resid_pre`, labelled "embed"), fits one probe per
layer on a training split of the texts, and scores it on the held-out texts. A high score alone
can mean the probe memorised something, so each layer is also probed on a **control task**
(Hewitt & Liang, 2019): the same probe, the same activations, labels that carry no information
about the property. `control="shuffle"` (default) permutes the texts' labels; `control="token"`
gives every token type a random label (drawn from the label distribution), so the control
measures how much the probe can memorise from the token at the reading position alone.
Selectivity = accuracy - control accuracy: a probe that means something has high selectivity.

`plot_probe_layers(df, path)` draws accuracy and control accuracy per layer into a PNG;
`probe_readout(model, probe, text, hook)` applies a fitted probe at every position of a text
(for colouring tokens).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.base import clone
from tqdm.auto import tqdm

from nanolens.files import save_png
from nanolens.models import GPT
from nanolens.models.hook_names import BLOCK_KINDS, block_hook, layer_of, resolve_hooks
from nanolens.tables import text_table

from .activations import Activations, extract_activations
from .datasets import LabelledTexts, split_indices
from .linear import LinearProbe, RidgeProbe

EMBED_HOOK = "blocks.0.hook_resid_pre"
CONTROLS = ("shuffle", "token")


def layer_hooks(model: GPT, hook: str | Sequence[str] = "resid_post", include_embed: bool = True) -> list[tuple[Any, str, str]]:
    """(layer label, full hook name, kind) for every layer a sweep probes.

    A kind (`"resid_post"`, `"attn_out"`, ...) gives one hook per block; the embeddings
    (`blocks.0.hook_resid_pre`, labelled "embed") come first when `include_embed`. Full hook
    names are labelled by their block index.
    """
    hooks = [hook] if isinstance(hook, str) else list(hook)
    out: list[tuple[Any, str, str]] = []
    if include_embed:
        out.append(("embed", EMBED_HOOK, "embed"))
    for h in hooks:
        kind = h[5:] if h.startswith("hook_") and h not in model.hook_dict else h
        if h not in model.hook_dict and kind in BLOCK_KINDS:
            resolve_hooks(model, kind)  # checks every block has it
            for i in range(model.config.n_layer):
                name = block_hook(i, kind)
                if kind == "resid_pre" and i == 0:
                    if not include_embed:
                        out.append(("embed", name, "embed"))
                    continue
                out.append((i, name, kind))
        else:
            name = resolve_hooks(model, h)[0]
            if name in (EMBED_HOOK, "hook_embed"):
                if not any(n == name for _, n, _ in out):
                    out.append(("embed", name, "embed"))
                continue
            layer = layer_of(name)
            kind = re.sub(r"^blocks\.\d+\.", "", name).removeprefix("hook_")
            out.append((name if layer is None else layer, name, kind))
    seen: set[str] = set()
    unique = []
    for row in out:
        if row[1] not in seen:
            seen.add(row[1])
            unique.append(row)
    return unique


def _control_labels(acts: Activations, dataset: LabelledTexts, control: str, rng: np.random.Generator) -> np.ndarray:
    y_text = dataset.labels
    if control == "shuffle":
        return rng.permutation(y_text)[acts.text_index]
    if control == "token":
        if (acts.token < 0).any():
            raise ValueError(
                "control='token' needs one token per row, but these activations are pooled (positions='mean' "
                "or spans); use control='shuffle'"
            )
        types = np.unique(acts.token)
        if dataset.task == "classification" and len(types) < 2:
            raise ValueError(
                f"control='token': every reading position holds the same token ({types[0]}), so a per-token-type "
                "label is one class; use control='shuffle'"
            )
        row_y = y_text[acts.text_index]
        for _ in range(100):
            assignment = dict(zip(types.tolist(), rng.choice(row_y, size=len(types), replace=True)))
            labels = np.array([assignment[t] for t in acts.token.tolist()], dtype=row_y.dtype)
            if dataset.task != "classification" or len(np.unique(labels)) > 1:
                return labels
        return labels
    raise ValueError(f"control={control!r}: use one of {', '.join(CONTROLS)}")


def _fit_score(probe: Any, X_train, y_train, X_test, y_test, task: str) -> tuple[float, float, Any]:
    if task == "classification" and len(np.unique(y_train)) < 2:
        # A control task can leave one class in the training rows; the best probe is a constant.
        only = y_train[0]
        acc = float(np.mean(y_test == only))
        return acc, 1.0, None
    fitted = clone(probe).fit(X_train, y_train)
    return float(fitted.score(X_test, y_test)), float(fitted.score(X_train, y_train)), fitted


def probe_layers(
    model: GPT,
    dataset: LabelledTexts | tuple[Sequence[str], Sequence[Any]],
    hook: str | Sequence[str] = "resid_post",
    *,
    positions: Any = None,
    probe: Any = None,
    test_size: float = 0.25,
    seed: int = 0,
    control: str = "shuffle",
    include_embed: bool = True,
    batch_size: int = 64,
    device: Any = None,
    progress: bool = True,
    truncate: bool = False,
    return_probes: bool = False,
):
    """Fit a probe at every layer; returns a pandas DataFrame with one row per layer.

    Columns: `layer` ("embed", 0, 1, ...), `hook`, `accuracy` (held-out; R² as `r2` for a
    regression dataset), `control_accuracy` (`control_r2`), `selectivity` (the difference),
    `train_accuracy`, `n_train`, `n_test`. `df.attrs` records the metric, the control, the
    chance rate (the majority class of the held-out texts) and the dataset's name.

    `probe`: an unfitted estimator to clone per layer (default `LinearProbe()`, or `RidgeProbe()`
    for regression). `positions`: as in `extract_activations` (default: the dataset's, else the
    last token). The split is by text, stratified by class. `return_probes=True` also returns
    `{hook: fitted probe}`.
    """
    if not isinstance(dataset, LabelledTexts):
        texts, labels = dataset
        dataset = LabelledTexts(texts, labels)
    if control not in CONTROLS:
        raise ValueError(f"control={control!r}: use one of {', '.join(CONTROLS)}")
    task = dataset.task
    if probe is None:
        probe = LinearProbe() if task == "classification" else RidgeProbe()
    layers = layer_hooks(model, hook, include_embed)
    names = [name for _, name, _ in layers]
    acts = extract_activations(
        model, dataset, hooks=names, positions=positions, batch_size=batch_size, device=device,
        progress=progress, truncate=truncate,
    )
    train_texts, test_texts = split_indices(dataset.labels, test_size, seed, stratify=task == "classification")
    train = np.isin(acts.text_index, train_texts)
    test = ~train
    y = acts.labels
    rng = np.random.default_rng(seed + 1)
    y_control = _control_labels(acts, dataset, control, rng)

    metric = "accuracy" if task == "classification" else "r2"
    rows, probes = [], {}
    iterator = layers
    if progress:
        iterator = tqdm(layers, desc="probes", unit="layer", leave=False)
    for layer, name, kind in iterator:
        X = np.asarray(acts[name])
        score, train_score, fitted = _fit_score(probe, X[train], y[train], X[test], y[test], task)
        control_score, _, _ = _fit_score(probe, X[train], y_control[train], X[test], y_control[test], task)
        probes[name] = fitted
        rows.append({
            "layer": layer, "hook": name, "kind": kind, metric: score, f"control_{metric}": control_score,
            "selectivity": score - control_score, f"train_{metric}": train_score,
            "n_train": int(train.sum()), "n_test": int(test.sum()),
        })
    df = pd.DataFrame(rows)
    if task == "classification":
        values, counts = np.unique(y[test], return_counts=True)
        chance = float(counts.max() / counts.sum())
    else:
        chance = 0.0
    df.attrs.update({"metric": metric, "control": control, "chance": chance, "dataset": dataset.name, "positions": acts.positions})
    return (df, probes) if return_probes else df


def probe_table(df: Any) -> str:
    """The sweep as a fixed-width text table (what `nanolens probe` prints), with chance."""
    metric = df.attrs.get("metric", "accuracy")
    lines = [text_table(df, ["layer", "hook", metric, f"control_{metric}", "selectivity"])]
    chance = df.attrs.get("chance")
    if metric == "accuracy" and chance is not None:
        lines.append(f"chance (majority class of the held-out texts): {chance:.3f}; control task: {df.attrs.get('control')}")
    return "\n".join(lines)


def plot_probe_layers(df: Any, path: str | Path, title: str | None = None) -> Path:
    """Accuracy (or R²) and control accuracy per layer, one line per hook kind, as a PNG."""
    metric = df.attrs.get("metric", "accuracy" if "accuracy" in df.columns else "r2")
    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    embed = df[df["kind"] == "embed"] if "kind" in df.columns else df.iloc[:0]
    kinds = [k for k in dict.fromkeys(df["kind"]) if k != "embed"] if "kind" in df.columns else ["all"]
    if not kinds:
        kinds = ["embed"]
    labels: list[str] = []
    for kind in kinds:
        part = df if kind == "all" else (df[df["kind"] == kind] if kind != "embed" else embed)
        if kind not in ("embed", "all") and len(embed):
                    part = pd.concat([embed, part])
        xs = [str(v) for v in part["layer"]]
        for x in xs:
            if x not in labels:
                labels.append(x)
        pos = [labels.index(x) for x in xs]
        line = ax.plot(pos, part[metric], marker="o", label=f"{kind} probe")[0]
        ax.plot(pos, part[f"control_{metric}"], marker="x", linestyle="--", color=line.get_color(), alpha=0.7,
                label=f"{kind} control ({df.attrs.get('control', 'shuffled labels')})")
    chance = df.attrs.get("chance")
    if metric == "accuracy" and chance:
        ax.axhline(chance, color="grey", linewidth=1, linestyle=":", label=f"chance ({chance:.2f})")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_xlabel("layer (embed = token + position embeddings)")
    ax.set_ylabel("held-out accuracy" if metric == "accuracy" else "held-out R²")
    if metric == "accuracy":
        ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"Linear probe per layer: {df.attrs.get('dataset', '')}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_png(fig, path)


def probe_readout(model: GPT, probe: Any, text: str, hook: str, truncate: bool = False):
    """Apply a fitted probe at every position of `text`: a DataFrame with one row per token.

    Columns: `position`, `token` (its string), `score` (P(classes_[1]) for a binary probe, the
    predicted class's probability for more classes, the prediction for a `RidgeProbe`),
    `prediction`, and for a binary probe `logit` (signed, for a diverging colour map).
    """
    acts = extract_activations(model, [text], hooks=[hook], positions="all", progress=False, truncate=truncate)
    X = np.asarray(acts[resolve_hooks(model, hook)[0]])
    ids = model.to_tokens(text)[0].tolist() if isinstance(text, str) else list(text)
    ids = ids[-len(X):]
    tokens = model.to_str_tokens(ids) if getattr(model, "tokenizer", None) is not None else [str(i) for i in ids]
    out = pd.DataFrame({"position": acts.position, "token": tokens})
    prediction = probe.predict(X)
    if hasattr(probe, "predict_proba"):
        proba = probe.predict_proba(X)
        if proba.shape[1] == 2:
            out["score"] = proba[:, 1]
            out["logit"] = probe.decision_function(X)
        else:
            out["score"] = proba.max(axis=1)
            for j, c in enumerate(probe.classes_):
                out[f"p_{c}"] = proba[:, j]
    else:
        out["score"] = prediction
    out["prediction"] = prediction
    return out
