"""The Training page: loss curves, learning rate and samples, refreshed while a run trains."""

from __future__ import annotations

import streamlit as st

from .. import analysis as A
from .. import figures
from ..sidebar import Context
from ..widgets import keep_valid, plot

ss = st.session_state


def render(ctx: Context) -> None:
    st.header("Training")
    if ctx.run is None:
        st.info("This checkpoint is not inside a run folder, so there is no metrics.jsonl to show. "
                "Point the explorer at runs/NAME to see its training.")
        return
    metrics = A.read_run_metrics(ctx.run)
    if metrics.skipped:
        st.warning(f"Showing the {metrics.records} rows of metrics.jsonl that read cleanly; {len(metrics.skipped)} "
                   "did not and are left out: " + "; ".join(metrics.skipped[:3]) + ("; ..." if len(metrics.skipped) > 3 else ""))
    if metrics.empty:
        st.info(f"{ctx.run} has no metrics.jsonl records yet; they appear as soon as the trainer logs.")
        return
    live_default = A.is_training(ctx.run, metrics)
    live = st.toggle("Refresh while training", value=live_default, key="train_live",
                     help="re-read metrics.jsonl every 3 seconds")

    @st.fragment(run_every=3 if live else None)
    def body() -> None:
        m = A.read_run_metrics(ctx.run)
        cols = st.columns(4)
        last_iter = max([int(x) for x in m.logs["iter"].tolist() + m.evals["iter"].tolist()] or [0])
        cols[0].metric("Iteration", last_iter)
        if len(m.logs):
            cols[1].metric("Train loss (last step)", f"{m.logs['train_loss'].iloc[-1]:.4f}")
            tps = m.logs["tokens_per_s"].dropna()
            if len(tps):
                cols[3].metric("Tokens / s", f"{tps.iloc[-1]:,.0f}")
        if len(m.evals) and m.evals["val_loss"].notna().any():
            cols[2].metric("Best val loss", f"{m.evals['val_loss'].min():.4f}")
        plot(figures.loss_figure(m), key="train_loss_fig")
        if len(m.logs) or len(m.evals):
            plot(figures.lr_figure(m), key="train_lr_fig")
        st.subheader("Samples over time")
        if not m.samples:
            st.info("No samples yet (the trainer prints one every sample_interval iterations).")
            return
        iters = [it for it, _ in m.samples]
        if len(iters) > 1:
            keep_valid("train_sample", iters, iters[-1])
            if "train_sample" not in ss:
                ss["train_sample"] = iters[-1]
            chosen = st.select_slider("Sample at iteration", options=iters, key="train_sample")
        else:
            chosen = iters[0]
        st.code(dict(m.samples)[chosen], language=None)
        with st.expander(f"All {len(m.samples)} samples"):
            for it, text in m.samples:
                st.markdown(f"**iter {it}**")
                st.code(text, language=None)

    body()
