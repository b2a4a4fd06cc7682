"""The Steering playground: unsteered and steered continuations side by side, each scored."""

from __future__ import annotations

import streamlit as st

from nanolens.corpora.sentiment import score_sentiment
from nanolens.steering import Steering, SteeringVector, top_tokens

from .. import analysis as A
from .. import common
from ..cached import cached_contrast
from ..sidebar import Context
from ..widgets import as_markdown, neutral_openings

ss = st.session_state


def render(ctx: Context) -> None:
    st.header("Steering playground")
    model = ctx.model()
    n_layer = model.config.n_layer
    if n_layer == 0:
        st.info("This model has no blocks (the bigram rung), so there is no residual stream to steer.")
        return
    source = st.radio("Vector", ("from a positive and a negative prompt", "load a saved vector"), key="steer_source", horizontal=True)
    c1, c2, c3 = st.columns([2, 2, 1])
    if source.startswith("from"):
        with c1:
            positive = st.text_input("Positive prompt", key="steer_pos",
                                     value=A.default_prompt(model, ["She felt happy and calm.", "happy", "love"]))
        with c2:
            negative = st.text_input("Negative prompt", key="steer_neg",
                                     value=A.default_prompt(model, ["She felt sad and upset.", "sad", "hate"]))
        with c3:
            read = st.selectbox("Read at", ("mean", "last", "aligned"), key="steer_read",
                                help="mean: each prompt averaged over its tokens (one direction, added everywhere); "
                                     "last: each prompt's last token; aligned: ActAdd's per-position difference, "
                                     "added at the first positions only")
        layer = st.select_slider("Layer (residual stream entering this block)", options=list(range(n_layer)),
                                 value=n_layer // 2, key="steer_layer")
        for what, text in (("positive", positive), ("negative", negative)):
            try:
                A.prompt_tokens(model, text, crop=False)
            except A.ExplorerError as err:
                st.warning(f"The {what} prompt: {err}")
                return
        vector = cached_contrast(ctx.token, str(ctx.checkpoint), positive, negative, int(layer), read)
    else:
        path = st.text_input("Saved vector (.safetensors written by SteeringVector.save)", key="steer_file")
        if not path:
            st.info("Type the path of a saved steering vector.")
            return
        try:
            vector = SteeringVector.load(path)
            vector.check_model(model)
        except Exception as err:
            st.error(f"Cannot use {path}: {err}")
            return
        layer = vector.layers[0]
    coeff = st.slider("Coefficient (× the layer's typical residual norm)", -10.0, 10.0, 4.0, 0.25, key="steer_coeff")
    g1, g2, g3, g4 = st.columns(4)
    with g1:
        positions = st.selectbox("Positions", ("all", "prompt", "generated"), key="steer_positions")
    with g2:
        max_new = st.slider("New tokens", 10, 300, 80, 10, key="steer_tokens")
    with g3:
        temperature = st.slider("Temperature", 0.0, 1.5, 0.8, 0.05, key="steer_temp")
    with g4:
        seed = int(st.number_input("Seed", 0, 2**31 - 1, 0, 1, key="steer_seed"))
    prompt = st.text_area("Prompt to continue", key="steer_prompt", height=70,
                          value=A.default_prompt(model, neutral_openings()))
    try:
        A.prompt_tokens(model, prompt)
    except A.ExplorerError as err:
        st.warning(str(err))
        return
    relative = bool(vector.scales)
    steering = Steering(vector, coeff=coeff, positions=positions, relative=relative)
    left, right = st.columns(2)
    results: dict[str, str] = {}
    with common.using(model):
        for name, col, steer_arg in (("unsteered", left, None), ("steered", right, steering)):
            with col:
                st.markdown(f"**{'Unsteered' if steer_arg is None else f'Steered: {coeff:+g} × {vector.label} at layer {layer}'}**")
                st.caption(prompt)
                gen = model.generate_stream(prompt, max_new_tokens=int(max_new), temperature=float(temperature),
                                            seed=seed, steering=steer_arg)
                pieces: list[str] = []
                try:
                    st.write_stream(as_markdown(gen, pieces))
                finally:
                    gen.close()  # a rerun mid-stream must not leave the steering hooks attached
                results[name] = "".join(pieces)
                st.metric("Sentiment of the continuation", f"{score_sentiment(results[name]):+.2f}")
    ss["steer_result"] = dict(results, report=str(steering.last_report) if steering.last_report else "")
    if steering.last_report is not None:
        st.caption(str(steering.last_report))
    if results["steered"] == results["unsteered"]:
        st.info("The steered text equals the unsteered one: try a larger coefficient, another layer or other positions.")
    with st.expander("What the direction says through the unembedding"):
        try:
            with common.using(model):
                st.dataframe(top_tokens(model, vector, k=10))
        except Exception as err:
            st.caption(f"(unavailable: {err})")
