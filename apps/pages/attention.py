"""The Attention page: patterns per layer and head, a token view, and head scores."""

from __future__ import annotations

import streamlit as st

from .. import analysis as A
from .. import figures
from ..cached import cached_attention, cached_head_scores
from ..sidebar import Context
from ..widgets import checked_tokens, head_options, keep_valid, pick_from_chart, plot, prompt_input

ss = st.session_state


def _pick_head_from_grid() -> None:
    pick_from_chart("attn_grid", "attn_head", "_head_options", from_xy=True)


def render(ctx: Context) -> None:
    st.header("Attention")
    model = ctx.model()
    heads = head_options(model)
    if not heads:
        st.info("This model has no attention layers (e.g. the bigram rung of the ladder), so there is nothing to show here.")
        return
    text = prompt_input("attention_prompt", model)
    checked = checked_tokens(model, text)
    if checked is None:
        return
    _, tokens = checked
    data = cached_attention(ctx.token, str(ctx.checkpoint), text)
    ss["_head_options"] = heads
    keep_valid("attn_head", heads, heads[0])
    head_col, view_col = st.columns([1, 2])
    with head_col:
        label = st.selectbox("Head", heads, key="attn_head", help="or click a head in the grid below")
    layer, head = A.parse_head_label(label)
    plot(figures.attention_figure(data, layer, selected_head=head), key="attn_fig")

    st.subheader(f"Token view: {label}")
    n = len(tokens)
    if ss.get("attn_token") not in range(n):
        ss["attn_token"] = n - 1
    c1, c2 = st.columns([3, 1])
    with c1:
        pos = st.slider("Token", 0, max(n - 1, 1) if n > 1 else 1, key="attn_token", disabled=n == 1,
                        help="the position whose attention is shown")
    pos = min(int(pos), n - 1)
    with c2:
        direction = st.radio("Show", ("attends to", "attended by"), key="attn_dir", horizontal=True)
    weights = A.attends_to(data, layer, head, pos) if direction == "attends to" else A.attended_by(data, layer, head, pos)
    st.markdown(f"Token {pos} = `{A.show_token(tokens[pos])}` — " + ("where it looks:" if direction == "attends to" else "who looks at it:"))
    st.markdown(figures.token_view_html(tokens, weights, pos, direction), unsafe_allow_html=True)

    st.subheader("Head summary")
    scores, where = cached_head_scores(ctx.token, str(ctx.checkpoint), str(ctx.run) if ctx.run else None)
    score = st.radio("Grid colour", A.HEAD_SCORES, key="attn_score", horizontal=True,
                     format_func=lambda s: s.replace("_", " "))
    plot(figures.head_grid_figure(scores, score, selected=label), key="attn_grid", on_select=_pick_head_from_grid,
         selection_mode="points")
    st.caption(f"Scored on 16 windows of {where}; induction on random tokens repeated twice. "
               "previous token: attention to the position just before; first token: attention to the window's "
               "first position (a sink); induction: attention to the token after the current token's earlier occurrence.")
    table = scores.copy()
    table.insert(0, "head_label", [A.head_label(int(l), int(h)) for l, h in zip(table["layer"], table["head"])])
    st.dataframe(table, hide_index=True, column_config={
        s: st.column_config.ProgressColumn(s.replace("_", " "), min_value=0.0, max_value=1.0, format="%.3f")
        for s in A.HEAD_SCORES})
    if len(table):
        best = {s: table.loc[table[s].idxmax(), "head_label"] for s in A.HEAD_SCORES}
        st.markdown(" · ".join(f"strongest {s.replace('_', ' ')} head: **{best[s]}** ({table[s].max():.2f})" for s in A.HEAD_SCORES))
