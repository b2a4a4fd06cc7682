"""The Logit lens page: each layer's residual stream read out through ln_final and W_U."""

from __future__ import annotations

import streamlit as st

from .. import figures
from ..cached import cached_lens
from ..sidebar import Context
from ..widgets import checked_tokens, plot, prompt_input


def render(ctx: Context) -> None:
    st.header("Logit lens")
    st.caption("The residual stream after each layer, read out through the final norm (ln_final) and the "
               "unembedding (W_U): what the model would predict if it stopped there.")
    model = ctx.model()
    text = prompt_input("lens_prompt", model)
    if checked_tokens(model, text) is None:
        return
    k = st.slider("Top tokens per cell (hover)", 1, 10, 5, key="lens_k")
    lens = cached_lens(ctx.token, str(ctx.checkpoint), text, int(k))
    plot(figures.logit_lens_figure(lens), key="lens_fig")
    if lens.true_next_prob.shape[1]:
        plot(figures.true_next_figure(lens), key="lens_true")
        final = lens.true_next_prob[-1]
        st.caption(f"Mean probability of the true next token at the output: {final.mean():.3f}; "
                   f"after the embeddings alone: {lens.true_next_prob[0].mean():.3f}.")
    else:
        st.info("Type at least two tokens to see the probability of the true next token.")
    with st.expander("As a table"):
        st.dataframe(lens.table(k=min(3, int(k))))
