"""The Across training page: a head's pattern, probes and steering at every checkpoint of a run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from nanolens.corpora.sentiment import score_sentiment
from nanolens.steering import Steering
from nanolens.training.runs import Checkpoint, distinct_checkpoints, find_checkpoints

from .. import analysis as A
from .. import common
from .. import figures
from ..cached import cached_attention, cached_contrast, cached_head_scores, cached_probes
from ..sidebar import Context
from ..widgets import checked_tokens, head_options, keep_valid, neutral_openings, plot, prompt_input

ss = st.session_state


def render(ctx: Context) -> None:
    st.header("Across training")
    if ctx.run is None:
        st.info("This checkpoint is not inside a run folder; point the explorer at runs/NAME to compare its checkpoints.")
        return
    checkpoints = distinct_checkpoints(find_checkpoints(ctx.run))
    if len(checkpoints) < 2:
        st.info(f"{ctx.run} has {len(checkpoints)} distinct saved checkpoint(s); a time-lapse needs several. Every "
                "folder inside the run holding config.json and model.safetensors counts (best/, last/, "
                "checkpoints/iter_N/...), ordered by the iteration in its trainer_state.json.")
        return
    model = ctx.model()
    heads = head_options(model)
    if not heads:
        st.info("This model has no attention layers.")
        return
    max_frames = st.slider("Checkpoints shown (at most)", 2, max(2, len(checkpoints)), min(12, len(checkpoints)), key="lapse_max")
    if len(checkpoints) > max_frames:
        pick = np.linspace(0, len(checkpoints) - 1, max_frames).round().astype(int)
        checkpoints = [checkpoints[i] for i in sorted(set(pick.tolist()))]
    keep_valid("lapse_head", heads, heads[0])
    label = st.selectbox("Head", heads, key="lapse_head")
    layer, head = A.parse_head_label(label)
    text = prompt_input("lapse_prompt", model)
    checked = checked_tokens(model, text)
    if checked is None:
        return
    _, tokens = checked
    patterns, labels, history = [], [], []
    for ck in checkpoints:
        try:
            data = cached_attention(common.cache_token(ck.path), str(ck.path), text)
            scores, _ = cached_head_scores(common.cache_token(ck.path), str(ck.path), str(ctx.run), 8)
        except Exception as err:  # e.g. a checkpoint of another architecture inside the run
            st.warning(f"skipped {ck.name}: {err}")
            continue
        if layer not in data.patterns or head >= data.n_heads(layer):
            continue
        patterns.append(data.patterns[layer][head])
        labels.append(f"iter {ck.iter}" if ck.iter is not None else ck.name)
        row = scores[(scores["layer"] == layer) & (scores["head"] == head)]
        if len(row):
            history.append({"iter": ck.iter if ck.iter is not None else len(history), **row.iloc[0][list(A.HEAD_SCORES)].to_dict()})
    if not patterns:
        st.warning("No checkpoint of this run has that head.")
        return
    ss["lapse_frames"] = len(patterns)
    plot(figures.timelapse_figure(tokens, patterns, labels, label), key="lapse_fig")
    if history:
        plot(figures.head_score_history_figure(pd.DataFrame(history), label), key="lapse_scores")
    st.caption(f"{len(patterns)} checkpoints: " + ", ".join(labels) + ". Press ▶ or drag the slider.")

    st.subheader("Probes and steering across training")
    if st.toggle("Probe accuracy at each checkpoint", key="lapse_probes",
                 help="a linear probe per layer on the sentiment stories, fitted at every checkpoint shown"):
        _probes_across(ctx, checkpoints)
    if st.toggle("Steering effect at each checkpoint", key="lapse_steer",
                 help="the same contrast pair, built and applied at every checkpoint shown"):
        _steering_across(checkpoints)


def _probes_across(ctx: Context, checkpoints: list[Checkpoint]) -> None:
    n = st.slider("Texts per probe", 40, 600, 100, 20, key="lapse_probe_n")
    rows = []
    for ck in checkpoints:
        df, _ = cached_probes(common.cache_token(ck.path), str(ck.path), "sentiment:reveal", "", int(n), "resid_post")
        for _, r in df.iterrows():
            rows.append({"iter": ck.iter, "layer": str(r["layer"]), "accuracy": r[df.attrs.get("metric", "accuracy")]})
    table = pd.DataFrame(rows)
    ss["lapse_probe_table"] = table

    fig = go.Figure([go.Scatter(x=part["iter"], y=part["accuracy"], mode="lines+markers", name=f"layer {layer}")
                     for layer, part in table.groupby("layer", sort=False)])
    fig.update_layout(xaxis_title="iteration", yaxis_title="held-out accuracy", yaxis_range=[0, 1.02], height=320,
                      margin=dict(l=10, r=10, t=40, b=10), title=dict(text="Sentiment probe accuracy across training",
                                                                      font=dict(size=13)))
    plot(fig, key="lapse_probe_fig")


def _steering_across(checkpoints: list[Checkpoint]) -> None:
    first = common.load_model(checkpoints[-1].path)
    c1, c2, c3 = st.columns(3)
    with c1:
        positive = st.text_input("Positive prompt", key="lapse_pos", value=A.default_prompt(first, ["She felt happy and calm."]))
    with c2:
        negative = st.text_input("Negative prompt", key="lapse_neg", value=A.default_prompt(first, ["She felt sad and upset."]))
    with c3:
        coeff = st.slider("Coefficient", -10.0, 10.0, 4.0, 0.5, key="lapse_coeff")
    samples = st.slider("Samples per checkpoint", 1, 10, 3, key="lapse_samples")
    prompt = A.default_prompt(first, neutral_openings())
    rows = []
    for ck in checkpoints:
        model = common.load_model(ck.path)
        layer = model.config.n_layer // 2
        try:
            vector = cached_contrast(common.cache_token(ck.path), str(ck.path), positive, negative, layer, "mean")
        except Exception as err:
            st.warning(f"{ck.name}: {err}")
            continue
        scores = {"unsteered": [], "steered": []}
        with common.using(model):
            for seed in range(int(samples)):
                for name, steering in (("unsteered", None), ("steered", Steering(vector, coeff=coeff, relative=bool(vector.scales)))):
                    text = model.generate(prompt, max_new_tokens=60, temperature=0.8, seed=seed, steering=steering)
                    scores[name].append(score_sentiment(text[len(prompt):]))
        rows.append({"iter": ck.iter, **{k: float(np.mean(v)) for k, v in scores.items()}})
    table = pd.DataFrame(rows)
    ss["lapse_steer_table"] = table

    fig = go.Figure([go.Scatter(x=table["iter"], y=table[c], mode="lines+markers", name=c) for c in ("unsteered", "steered")])
    fig.update_layout(xaxis_title="iteration", yaxis_title=f"mean sentiment ({int(samples)} samples)", yaxis_range=[-1.05, 1.05],
                      height=320, margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text=f"Steering at layer n_layer/2, coefficient {coeff:+g}, across training", font=dict(size=13)))
    plot(fig, key="lapse_steer_fig")
    st.caption(f"Prompt: {prompt!r}; the vector is rebuilt from the same prompt pair at each checkpoint.")
