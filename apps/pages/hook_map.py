"""The Hook map page: every hook point in the order it runs, with shapes and a summary."""

from __future__ import annotations

import streamlit as st

from .. import figures
from ..cached import cached_hook_summary
from ..sidebar import Context
from ..widgets import checked_tokens, keep_valid, pick_from_chart, plot, prompt_input

ss = st.session_state


def _pick_hook_from_diagram() -> None:
    pick_from_chart("hooks_diagram", "hook_pick", "_hook_options")


def render(ctx: Context) -> None:
    st.header("Hook map")
    st.caption("Every hook point of the model, in the order they run, with the activation's shape and a summary "
               "for the current prompt. These are the names `run_with_cache`, `run_with_hooks` and `steer` take.")
    model = ctx.model()
    text = prompt_input("hooks_prompt", model)
    checked = checked_tokens(model, text)
    if checked is None:
        return
    _, tokens = checked
    summary, acts = cached_hook_summary(ctx.token, str(ctx.checkpoint), text)
    names = summary["hook"].tolist()
    ss["_hook_options"] = names
    fired = summary.loc[summary["status"] == "fired", "hook"].tolist()
    default = "blocks.0.hook_resid_pre" if "blocks.0.hook_resid_pre" in fired else (fired[0] if fired else names[0])
    keep_valid("hook_pick", names, default)
    if "hook_pick" not in ss:
        ss["hook_pick"] = default
    plot(figures.hook_diagram(summary, selected=ss["hook_pick"]), key="hooks_diagram", on_select=_pick_hook_from_diagram,
         selection_mode="points")
    name = st.selectbox("Hook point", names, key="hook_pick", help="or click a node in the diagram")
    row = summary.loc[summary["hook"] == name].iloc[0]
    if row["status"] != "fired":
        st.info(f"`{name}` did not fire for this model ({row['status']}). "
                + (f"Turn it on with `model.cfg.{row['status'].split('cfg.')[-1]} = True`." if "cfg." in row["status"] else ""))
    else:
        c = st.columns(5)
        c[0].metric("shape", row["shape"])
        c[1].metric("mean", f"{row['mean']:.3g}")
        c[2].metric("std", f"{row['std']:.3g}")
        c[3].metric("rms", f"{row['rms']:.3g}")
        c[4].metric("max |x|", f"{max(abs(row['min']), abs(row['max'])):.3g}")
        st.code(f'logits, cache = model.run_with_cache(prompt, names_filter=["{name}"])\ncache["{name}"].shape  # {row["shape"]}',
                language="python")
        plot(figures.activation_figure(name, acts[name], tokens), key="hooks_act")
    st.subheader("All hook points")
    st.dataframe(summary, hide_index=True)
