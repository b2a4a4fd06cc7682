"""Plotly figures and small HTML views for the explorer, built from `analysis` results.

Pure functions (data in, `plotly.graph_objects.Figure` or an HTML string out), so they can be
tested and timed without Streamlit. Streamlit ships plotly.js in its own frontend bundle, so
these render offline.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .analysis import AttentionData, LogitLens, Metrics, head_label, show_token, unique_labels

ATTENTION_SCALE = "Blues"


def attention_figure(data: AttentionData, layer: int, selected_head: int | None = None, max_cols: int = 4) -> Any:
    """One heat map per head of `layer` (query position down, key position across)."""
    pattern = data.patterns[layer]
    n_heads = pattern.shape[0]
    cols = min(n_heads, max_cols)
    rows = math.ceil(n_heads / cols)
    titles = [f"<b>head {h} ◀</b>" if h == selected_head else f"head {h}" for h in range(n_heads)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.04,
                        vertical_spacing=0.12 if rows > 1 else 0.08)
    labels = unique_labels(data.tokens)
    for h in range(n_heads):
        z = np.where(np.tril(np.ones_like(pattern[h], dtype=bool)), pattern[h], np.nan)
        fig.add_trace(go.Heatmap(
            z=z, x=labels, y=labels, coloraxis="coloraxis", name=f"head {h}",
            hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra>head " + str(h) + "</extra>",
        ), row=h // cols + 1, col=h % cols + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=len(labels) <= 40, tickfont=dict(size=9))
    fig.update_xaxes(showticklabels=len(labels) <= 40, tickfont=dict(size=9), tickangle=0)
    fig.update_layout(
        coloraxis=dict(colorscale=ATTENTION_SCALE, cmin=0, cmax=1, colorbar=dict(title="weight")),
        height=max(340, 300 * rows + 40), margin=dict(l=10, r=10, t=70, b=10),
        title=dict(text=f"Layer {layer}: attention pattern of each head (query ↓, key →)", font=dict(size=14), y=0.98),
    )
    return fig


def head_grid_figure(scores: Any, score: str, selected: str | None = None) -> Any:
    """A layers x heads grid coloured by one head score; each cell can be clicked to pick the head."""
    layers = sorted(int(x) for x in scores["layer"].unique())
    n_heads = int(scores["head"].max()) + 1 if len(scores) else 0
    z = np.full((len(layers), n_heads), np.nan)
    for _, r in scores.iterrows():
        z[layers.index(int(r["layer"])), int(r["head"])] = r[score]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"H{h}" for h in range(n_heads)], y=[f"L{l}" for l in layers], colorscale="Viridis", zmin=0, zmax=1,
        text=np.round(z, 2), texttemplate="%{text}", hovertemplate="%{y}%{x}: %{z:.3f}<extra>" + score + "</extra>",
        colorbar=dict(title=score.replace("_", " ")),
    ))
    xs, ys, labels = [], [], []
    for l in layers:
        for h in range(n_heads):
            xs.append(f"H{h}")
            ys.append(f"L{l}")
            labels.append(head_label(l, h))
    # Invisible click targets over the cells (heat map cells cannot be selected); the chosen head is outlined.
    widths = [3 if lab == selected else 0 for lab in labels]
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", customdata=labels, hovertemplate="%{customdata}: click to inspect<extra></extra>",
        marker=dict(size=34, symbol="square", color="rgba(0,0,0,0)", line=dict(width=widths, color="#d62728")),
        showlegend=False, name="pick",
    ))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=max(180, 60 * len(layers) + 80), margin=dict(l=10, r=10, t=30, b=10),
                      title=dict(text=f"Head grid: {score.replace('_', ' ')} score (click a head)", font=dict(size=13)),
                      clickmode="event+select", dragmode=False)
    return fig


def _weight_colour(w: float, rgb: tuple[int, int, int] = (31, 119, 180)) -> str:
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{min(max(w, 0.0), 1.0):.3f})"


def token_view_html(tokens: Sequence[str], weights: Sequence[float], focus: int, direction: str = "attends to") -> str:
    """bertviz-style: the prompt's tokens shaded by attention weight; the focus token outlined."""
    weights = np.asarray(weights, dtype=float)
    top = float(np.nanmax(weights)) if len(weights) and np.nanmax(weights) > 0 else 1.0
    spans = []
    for i, (tok, w) in enumerate(zip(tokens, weights)):
        shade = _weight_colour(float(w) / top)
        text = html.escape(show_token(tok) if tok in ("\n", "\t") else tok).replace(" ", "&nbsp;")
        border = "2px solid #d62728" if i == focus else "1px solid #ddd"
        colour = "#fff" if w / top > 0.6 else "#000"
        spans.append(
            f'<span title="position {i}: {w:.3f}" style="background:{shade};color:{colour};border:{border};'
            f'border-radius:3px;padding:1px 2px;margin:1px;font-family:monospace;display:inline-block">{text}</span>'
        )
    what = "what it attends to" if direction == "attends to" else "which positions attend to it"
    return (f'<div class="nanolens-token-view" style="line-height:2.0">{"".join(spans)}</div>'
            f'<div style="font-size:0.8em;color:#666">Outlined: position {focus}; shading shows {what}.</div>')


def logit_lens_figure(lens: LogitLens) -> Any:
    """Rows: layers; columns: positions; colour: the top token's probability; text: the top token."""
    text = [[show_token(lens.top_tokens[r][i][0]) for i in range(len(lens.tokens))] for r in range(len(lens.layers))]
    hover = [["<br>".join(f"{html.escape(show_token(t))}: {p:.3f}" for t, p in zip(lens.top_tokens[r][i], lens.top_probs[r, i]))
              for i in range(len(lens.tokens))] for r in range(len(lens.layers))]
    fig = go.Figure(go.Heatmap(
        z=lens.top_probs[:, :, 0], x=unique_labels(lens.tokens), y=lens.layers, text=text, texttemplate="%{text}",
        customdata=hover, hovertemplate="after %{y}, at %{x}<br>%{customdata}<extra></extra>",
        colorscale="Purples", zmin=0, zmax=1, colorbar=dict(title="top-1 prob"),
    ))
    fig.update_yaxes(autorange="reversed", title="read out after")
    fig.update_xaxes(title="input position (predicting the next token)", tickangle=0, tickfont=dict(size=9))
    fig.update_layout(height=max(260, 36 * len(lens.layers) + 140), margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text="Logit lens: top predicted next token at each layer", font=dict(size=14)))
    return fig


def true_next_figure(lens: LogitLens) -> Any:
    """Probability of the token that really comes next, by layer and position."""
    n = lens.true_next_prob.shape[1]
    x = [f"{show_token(lens.tokens[i])}→{show_token(lens.tokens[i + 1])}·{i}" for i in range(n)]
    fig = go.Figure(go.Heatmap(
        z=lens.true_next_prob, x=x, y=lens.layers, colorscale="Greens", zmin=0, zmax=1,
        customdata=lens.true_next_rank, hovertemplate="after %{y}, %{x}<br>p = %{z:.3f}, rank %{customdata}<extra></extra>",
        colorbar=dict(title="p(true next)"),
    ))
    fig.update_yaxes(autorange="reversed", title="read out after")
    fig.update_xaxes(tickangle=-45, tickfont=dict(size=9))
    fig.update_layout(height=max(260, 36 * len(lens.layers) + 160), margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text="Probability of the true next token, by layer", font=dict(size=14)))
    return fig


def loss_figure(metrics: Metrics) -> Any:
    fig = go.Figure()
    if len(metrics.logs):
        fig.add_trace(go.Scatter(x=metrics.logs["iter"], y=metrics.logs["train_loss"], mode="lines", name="train (per step)",
                                 line=dict(color="rgba(31,119,180,0.45)", width=1)))
    if len(metrics.evals):
        fig.add_trace(go.Scatter(x=metrics.evals["iter"], y=metrics.evals["train_loss"], mode="lines+markers",
                                 name="train (estimate)", line=dict(color="#1f77b4")))
        fig.add_trace(go.Scatter(x=metrics.evals["iter"], y=metrics.evals["val_loss"], mode="lines+markers",
                                 name="val (estimate)", line=dict(color="#ff7f0e")))
    fig.update_layout(xaxis_title="iteration", yaxis_title="cross-entropy loss", height=380,
                      margin=dict(l=10, r=10, t=40, b=10), title=dict(text="Loss", font=dict(size=14)))
    return fig


def lr_figure(metrics: Metrics) -> Any:
    frame = metrics.logs if len(metrics.logs) else metrics.evals
    fig = go.Figure(go.Scatter(x=frame["iter"], y=frame["lr"], mode="lines", name="learning rate", line=dict(color="#2ca02c")))
    fig.update_layout(xaxis_title="iteration", yaxis_title="learning rate", height=220, margin=dict(l=10, r=10, t=30, b=10),
                      title=dict(text="Learning rate", font=dict(size=13)))
    return fig


def probe_figure(df: Any) -> Any:
    metric = df.attrs.get("metric", "accuracy")
    x = [str(v) for v in df["layer"]]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=df[metric], mode="lines+markers", name=f"probe ({metric})"))
    fig.add_trace(go.Scatter(x=x, y=df[f"control_{metric}"], mode="lines+markers", name=f"control task ({df.attrs.get('control', '')})",
                             line=dict(dash="dash")))
    chance = df.attrs.get("chance")
    if metric == "accuracy" and chance:
        fig.add_hline(y=chance, line_dash="dot", line_color="grey", annotation_text=f"chance {chance:.2f}")
    fig.update_xaxes(type="category")  # "embed", "0", "1", ...: labels, not numbers
    fig.update_layout(xaxis_title="layer (embed = the embeddings)", yaxis_title=f"held-out {metric}", height=360,
                      yaxis_range=[0, 1.02] if metric == "accuracy" else None, margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text=f"Linear probe per layer: {df.attrs.get('dataset', '')}", font=dict(size=14)))
    return fig


def _diverging(score: float) -> str:
    """0 -> red, 0.5 -> white, 1 -> green."""
    s = min(max(score, 0.0), 1.0)
    if s >= 0.5:
        a = (s - 0.5) * 2
        return f"rgba(44,160,44,{a:.3f})"
    a = (0.5 - s) * 2
    return f"rgba(214,39,40,{a:.3f})"


def probe_tokens_html(readout: Any, classes: Sequence[Any] | None = None) -> str:
    """The prompt's tokens coloured by the probe's reading at each position."""
    spans = []
    for _, r in readout.iterrows():
        tok = str(r["token"])
        text = html.escape(show_token(tok) if tok in ("\n", "\t") else tok).replace(" ", "&nbsp;")
        score = float(r["score"])
        spans.append(f'<span title="position {int(r["position"])}: {score:.3f} ({html.escape(str(r["prediction"]))})" '
                     f'style="background:{_diverging(score)};border-radius:3px;padding:1px 2px;margin:1px;'
                     f'font-family:monospace;display:inline-block">{text}</span>')
    legend = ""
    if classes is not None and len(classes) == 2:
        legend = (f'<div style="font-size:0.8em;color:#666">red: {html.escape(str(classes[0]))} · '
                  f'green: {html.escape(str(classes[1]))} (the probe\'s probability at each position)</div>')
    return f'<div class="nanolens-probe-view" style="line-height:2.0">{"".join(spans)}</div>{legend}'


def hook_diagram(summary: Any, selected: str | None = None) -> Any:
    """Every hook point as a node: columns embed / block 0 / ... / final, in the order they run."""
    columns = list(dict.fromkeys(summary["component"]))
    xs, ys, labels, names, colours, hovers, sizes = [], [], [], [], [], [], []
    depth: dict[str, int] = {}
    for _, r in summary.iterrows():
        col = r["component"]
        y = depth.get(col, 0)
        depth[col] = y + 1
        short = r["hook"].split(".", 2)[-1] if r["hook"].startswith("blocks.") else r["hook"]
        xs.append(columns.index(col))
        ys.append(y)
        labels.append(short)
        names.append(r["hook"])
        fired = r["status"] == "fired"
        colours.append("#d62728" if r["hook"] == selected else ("#1f77b4" if fired else "#c7c7c7"))
        sizes.append(16 if r["hook"] == selected else 11)
        detail = (f"shape {r['shape']}<br>mean {r['mean']:.3g} · std {r['std']:.3g} · rms {r['rms']:.3g}"
                  if fired else r["status"])
        hovers.append(f"<b>{html.escape(r['hook'])}</b><br>{detail}")
    fig = go.Figure(go.Scatter(
        x=xs, y=ys, mode="markers+text", text=labels, textposition="middle right", textfont=dict(size=10),
        customdata=names, hovertext=hovers, hovertemplate="%{hovertext}<extra></extra>",
        marker=dict(size=sizes, color=colours, line=dict(width=1, color="#333")), showlegend=False,
    ))
    fig.update_xaxes(tickvals=list(range(len(columns))), ticktext=columns, side="top", range=[-0.3, len(columns) - 0.1],
                     showgrid=False, zeroline=False)
    fig.update_yaxes(autorange="reversed", showticklabels=False, showgrid=False, zeroline=False)
    fig.update_layout(height=max(300, 26 * max(depth.values(), default=1) + 80), margin=dict(l=10, r=10, t=40, b=10),
                      clickmode="event+select", dragmode=False)
    return fig


def activation_figure(name: str, act: np.ndarray, tokens: Sequence[str] | None = None) -> Any:
    """An activation as a heat map: [pos, ...] flattened to [pos, features]; patterns per head side by side."""
    a = np.asarray(act)
    if a.ndim == 3 and name.endswith(("hook_pattern", "hook_attn_scores")):  # [head, q, k] -> [q, head*k]
        a = np.concatenate(list(a), axis=1)
        xlabel = "head × key position"
    elif a.ndim >= 2:
        a = a.reshape(a.shape[0], -1)
        xlabel = "feature" if act.ndim == 2 else "head × feature"
    else:
        a = a.reshape(1, -1)
        xlabel = "feature"
    y = unique_labels(tokens) if tokens is not None and len(tokens) == a.shape[0] else None
    fig = go.Figure(go.Heatmap(z=a, y=y, colorscale="RdBu", zmid=0, hovertemplate="%{y}, %{x}: %{z:.3g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="position")
    fig.update_xaxes(title=xlabel)
    fig.update_layout(height=min(700, max(260, 14 * a.shape[0] + 120)), margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text=f"{name} {list(act.shape)}", font=dict(size=13)))
    return fig


def timelapse_figure(tokens: Sequence[str], patterns: Sequence[np.ndarray], labels: Sequence[str], head: str) -> Any:
    """One head's pattern at each checkpoint, as an animation with a slider (plotly frames)."""
    x = unique_labels(tokens)

    def heat(p: np.ndarray) -> Any:
        z = np.where(np.tril(np.ones_like(p, dtype=bool)), p, np.nan)
        return go.Heatmap(z=z, x=x, y=x, colorscale=ATTENTION_SCALE, zmin=0, zmax=1,
                          hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>")

    frames = [go.Frame(data=[heat(p)], name=lab) for p, lab in zip(patterns, labels)]
    fig = go.Figure(data=[heat(patterns[-1])], frames=frames)
    steps = [dict(method="animate", label=lab, args=[[lab], dict(mode="immediate", frame=dict(duration=0, redraw=True))])
             for lab in labels]
    fig.update_layout(
        sliders=[dict(active=len(labels) - 1, steps=steps, currentvalue=dict(prefix="checkpoint: "), pad=dict(t=40))],
        updatemenus=[dict(type="buttons", showactive=False, x=1.0, y=1.14, xanchor="right", yanchor="bottom", buttons=[
            dict(label="▶ play", method="animate",
                 args=[None, dict(frame=dict(duration=700, redraw=True), fromcurrent=False, transition=dict(duration=0))])])],
        height=540, margin=dict(l=10, r=10, t=80, b=10), title=dict(text=f"{head} across training", font=dict(size=14)),
    )
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=9))
    fig.update_xaxes(tickfont=dict(size=9))
    return fig


def head_score_history_figure(history: Any, head: str) -> Any:
    """A head's scores (previous-token, first-token, induction) at each checkpoint."""
    fig = go.Figure()
    for col in ("previous_token", "first_token", "induction"):
        if col in history:
            fig.add_trace(go.Scatter(x=history["iter"], y=history[col], mode="lines+markers", name=col.replace("_", " ")))
    fig.update_layout(xaxis_title="iteration", yaxis_title="score", yaxis_range=[0, 1.02], height=300,
                      margin=dict(l=10, r=10, t=40, b=10), title=dict(text=f"{head}: head scores across training", font=dict(size=13)))
    return fig

