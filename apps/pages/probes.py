"""The Probes page: a linear probe per layer, and a prompt read by one of them."""

from __future__ import annotations

import streamlit as st

from nanolens.probes import probe_readout

from .. import common
from .. import figures
from ..cached import cached_probes
from ..sidebar import Context
from ..widgets import checked_tokens, keep_valid, plot, prompt_input

ss = st.session_state


def render(ctx: Context) -> None:
    st.header("Probes")
    model = ctx.model()
    c1, c2, c3 = st.columns(3)
    with c1:
        dataset = st.selectbox("Labelled dataset", ("sentiment:reveal", "sentiment:decision", "sentiment:end", "file"),
                               key="probe_data", format_func=lambda d: {
                                   "sentiment:reveal": "sentiment stories, read where the label shows",
                                   "sentiment:decision": "sentiment stories, read before the label (chance)",
                                   "sentiment:end": "sentiment stories, read at the end",
                                   "file": "a .csv / .jsonl file"}[d])
    with c2:
        n = st.slider("Texts", 40, 1000, 200, 20, key="probe_n")
    kinds = [k for k in ("resid_post", "resid_mid", "attn_out", "mlp_out") if f"blocks.0.hook_{k}" in model.hook_dict]
    with c3:
        hook = st.selectbox("Hook", kinds or ["resid_post"], key="probe_hook")
    path = ""
    if dataset == "file":
        path = st.text_input("File with text and label columns", key="probe_file")
        if not path:
            st.info("Type the path of a .csv or .jsonl file.")
            return
    if model.config.n_layer == 0:
        st.info("This model has no blocks to probe.")
        return
    df, probes = cached_probes(ctx.token, str(ctx.checkpoint), dataset, path, int(n), hook)
    metric = df.attrs.get("metric", "accuracy")
    plot(figures.probe_figure(df), key="probe_fig")
    shown = df.drop(columns=[c for c in ("kind",) if c in df.columns]).assign(layer=[str(v) for v in df["layer"]])
    st.dataframe(shown, hide_index=True)
    best = df.loc[df[metric].idxmax()]
    st.markdown(f"Best layer: **{best['layer']}** ({metric} {best[metric]:.3f}, selectivity {best['selectivity']:.3f}).")

    st.subheader("Read a prompt with a probe")
    layers = [str(v) for v in df["layer"]]
    keep_valid("probe_layer", layers, str(best["layer"]))
    if "probe_layer" not in ss:
        ss["probe_layer"] = str(best["layer"])
    layer = st.selectbox("Probe of layer", layers, key="probe_layer")
    hook_name = df.loc[[str(v) == layer for v in df["layer"]], "hook"].iloc[0]
    text = prompt_input("probes_prompt", model)
    if checked_tokens(model, text) is None:
        return

    with common.using(model):
        readout = probe_readout(model, probes[hook_name], text, hook_name, truncate=True)
    probe = probes[hook_name]
    st.markdown(figures.probe_tokens_html(readout, list(getattr(probe, "classes_", [])) or None), unsafe_allow_html=True)
    st.line_chart(readout.set_index("position")["score"], height=180)
