"""The Model page: parameters, config, checkpoints and where the model sits on the ladder."""

from __future__ import annotations

import streamlit as st

from .. import analysis as A
from ..sidebar import Context


def render(ctx: Context) -> None:
    st.header("Model")
    model = ctx.model()
    facts = A.model_facts(model, ctx.checkpoint)
    cols = st.columns(4)
    cols[0].metric("Parameters", f"{facts['parameters']:,}")
    cols[1].metric("Val loss", f"{facts['val loss']:.4f}" if facts.get("val loss") is not None else "—")
    cols[2].metric("Iteration", facts.get("iteration") if facts.get("iteration") is not None else "—")
    cols[3].metric("Preset", facts["preset"])
    desc = A.preset_description(model)
    st.markdown(f"**Ladder rung:** {facts['ladder rung']}" + (f" — {desc}" if desc else ""))
    st.caption(f"Checkpoint: `{ctx.checkpoint}`")
    left, right = st.columns(2)
    with left:
        st.subheader("Facts")
        st.dataframe({"fact": list(facts), "value": [str(v) for v in facts.values()]}, hide_index=True)
    with right:
        st.subheader("Config")
        cfg = model.config.to_dict()
        st.dataframe({"field": list(cfg), "value": [str(v) for v in cfg.values()]}, hide_index=True, height=420)
    if ctx.checkpoints:
        st.subheader("Checkpoints of this run")
        st.dataframe({"checkpoint": [c.name for c in ctx.checkpoints], "iter": [c.iter for c in ctx.checkpoints],
                      "val loss": [c.val_loss for c in ctx.checkpoints]}, hide_index=True)
    st.caption(f"{len(model.hook_names())} hook points; the Hook map page lists them.")
