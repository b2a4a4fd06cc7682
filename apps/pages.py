"""The explorer's pages. `main()` draws the sidebar (which run, which checkpoint, which page) and
the chosen page; `app.py` only calls it.

Every page that runs the model does so inside `common.using(model)` (the process-wide model lock;
hooks attached only by scoped context managers), and every page is wrapped by `_guarded`, so bad
input shows a warning or an error message, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from . import analysis as A
from . import common
from . import figures as F

PAGES = ("Model", "Attention", "Logit lens", "Steering", "Probes", "Training", "Across training", "Hook map")
ss = st.session_state


# ---------------------------------------------------------------------------------------------
# where the app was pointed, and what the sidebar chose
# ---------------------------------------------------------------------------------------------
def launch_source(argv: list[str] | None = None) -> str:
    """The folder the app starts on: `--ckpt`/`--runs` after `streamlit run app.py --`, else the
    NANOLENS_CKPT / NANOLENS_RUNS environment variables, else `runs`."""
    argv = sys.argv if argv is None else argv
    if argv and Path(argv[0]).name == "app.py":
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--ckpt")
        parser.add_argument("--runs")
        args, _ = parser.parse_known_args(argv[1:])
        if args.ckpt or args.runs:
            return args.ckpt or args.runs
    return os.environ.get("NANOLENS_CKPT") or os.environ.get("NANOLENS_RUNS") or "runs"


@dataclass
class Context:
    source: A.Source | None
    run: Path | None
    checkpoint: Path | None
    checkpoints: list[A.Checkpoint]
    problem: str | None = None

    def model(self) -> Any:
        if self.checkpoint is None:
            raise A.ExplorerError(self.problem or "no checkpoint is selected")
        return common.load_model(self.checkpoint)

    @property
    def token(self) -> str:
        return common.cache_token(self.checkpoint)


def _keep_valid(key: str, options: list[Any], default: Any) -> None:
    """Reset a widget's remembered value when the options changed under it."""
    if key in ss and ss[key] not in options:
        ss[key] = default


def _page_from_query() -> str:
    wanted = str(st.query_params.get("page", "")).strip().lower().replace("-", " ").replace("_", " ")
    for name in PAGES:
        if name.lower() == wanted:
            return name
    return PAGES[0]


def sidebar() -> tuple[str, Context]:
    st.sidebar.title("nanolens explorer")
    if "page" not in ss:
        ss["page"] = _page_from_query()
    page = st.sidebar.radio("Page", PAGES, key="page")
    if "source" not in ss:
        ss["source"] = launch_source()
    st.sidebar.text_input("Run, checkpoint or folder of runs", key="source",
                          help="runs/ (a folder of runs), runs/NAME (one run) or runs/NAME/best (one checkpoint)")
    try:
        source = A.resolve_source(ss["source"])
    except A.ExplorerError as err:
        st.sidebar.error(str(err))
        return page, Context(None, None, None, [], str(err))
    if source.kind == "runs":
        runs = [str(r) for r in source.runs]
        _keep_valid("run", runs, runs[0])
        run = Path(st.sidebar.selectbox("Run", runs, key="run", format_func=lambda p: Path(p).name))
    else:
        run = source.runs[0]
    if source.kind == "checkpoint":
        ck = A.read_checkpoint(source.path)
        st.sidebar.caption(f"checkpoint {source.path} ({ck.label})")
        checkpoints = A.find_checkpoints(run) if run != source.path else [ck]
        return page, Context(source, run if run != source.path else None, source.path, checkpoints)
    checkpoints = A.find_checkpoints(run)
    if not checkpoints:
        problem = (f"{run} has no checkpoint yet (no best/ or last/ folder): the trainer writes one at its first "
                   "evaluation. The Training page can already show its metrics.")
        st.sidebar.warning(problem)
        return page, Context(source, run, None, [], problem)
    paths = [str(c.path) for c in checkpoints]
    labels = {str(c.path): c.label for c in checkpoints}
    default = next((p for p in paths if Path(p).name == "best"), paths[-1])
    _keep_valid("ckpt", paths, default)
    if "ckpt" not in ss:
        ss["ckpt"] = default
    chosen = st.sidebar.selectbox("Checkpoint", paths, key="ckpt", format_func=lambda p: labels.get(p, p))
    return page, Context(source, run, Path(chosen), checkpoints)


# ---------------------------------------------------------------------------------------------
# shared widgets
# ---------------------------------------------------------------------------------------------
def prompt_input(key: str, model: Any, label: str = "Prompt", default: str | None = None, height: int = 90) -> str:
    """A prompt box whose text carries over between pages (the last prompt typed anywhere)."""
    if key not in ss:
        ss[key] = ss.get("last_prompt") or default or A.default_prompt(model)
    text = st.text_area(label, key=key, height=height)
    ss["last_prompt"] = text
    return text


def checked_tokens(model: Any, text: str) -> tuple[Any, list[str]] | None:
    """Token ids and strings of a prompt, or None after showing a warning that says what is wrong."""
    try:
        tokens, strs, cropped = A.prompt_tokens(model, text)
    except A.ExplorerError as err:
        st.warning(str(err))
        return None
    if cropped:
        st.info(f"The prompt is longer than the model's context; showing its last {model.config.block_size} tokens.")
    return tokens, strs


def head_options(model: Any) -> list[str]:
    labels = []
    for layer, _ in A.pattern_hooks(model):
        attn = model.blocks[layer].attn
        n = getattr(attn, "n_heads", None) or (1 if model.config.attention == "average" else model.config.n_head)
        labels += [A.head_label(layer, h) for h in range(n)]
    return labels


def plot(fig: Any, key: str, **kw: Any) -> Any:
    return st.plotly_chart(fig, key=key, config={"displaylogo": False}, **kw)


# ---------------------------------------------------------------------------------------------
# cached computations (keyed by the checkpoint's path and weights' mtime)
# ---------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def cached_attention(token: str, checkpoint: str, text: str) -> A.AttentionData:
    model = common.load_model(checkpoint)
    with common.using(model):
        return A.attention_patterns(model, text)


@st.cache_data(show_spinner="Scoring every head on corpus text…", max_entries=32)
def cached_head_scores(token: str, checkpoint: str, run: str | None, n_windows: int = 16) -> tuple[Any, str]:
    model = common.load_model(checkpoint)
    ids, where = A.corpus_ids(model, run)
    length = min(model.config.block_size, 64)
    windows = A.corpus_windows(ids, length, n_windows, seed=0)
    with common.using(model):
        return A.head_scores(model, windows), where


@st.cache_data(show_spinner=False, max_entries=64)
def cached_lens(token: str, checkpoint: str, text: str, k: int) -> A.LogitLens:
    model = common.load_model(checkpoint)
    with common.using(model):
        return A.logit_lens(model, text, k=k)


@st.cache_data(show_spinner=False, max_entries=16)
def cached_hook_summary(token: str, checkpoint: str, text: str) -> tuple[Any, dict[str, np.ndarray]]:
    model = common.load_model(checkpoint)
    with common.using(model):
        return A.hook_summary(model, text)


@st.cache_resource(show_spinner="Fitting a probe at every layer…", max_entries=16)
def cached_probes(token: str, checkpoint: str, dataset: str, path: str, n: int, hook: str) -> tuple[Any, dict[str, Any]]:
    from nanolens.probes import LabelledTexts, probe_layers

    model = common.load_model(checkpoint)
    block = model.config.block_size
    if dataset.startswith("sentiment"):
        position = dataset.split(":", 1)[1]
        data = LabelledTexts.from_sentiment(n, position=position, max_chars=block)
    else:
        if not path or not Path(path).is_file():
            raise A.ExplorerError(f"{path or '(no file given)'} is not a file: give a .csv or .jsonl file with text and label columns")
        data = LabelledTexts.from_file(path)
        if n and len(data) > n:
            data = data.subset(range(n))
    with common.using(model):
        return probe_layers(model, data, hook, progress=False, return_probes=True, truncate=True)


@st.cache_resource(show_spinner=False, max_entries=32)
def cached_contrast(token: str, checkpoint: str, positive: str, negative: str, layer: int, position: str) -> Any:
    from nanolens.steering import contrast_pair

    model = common.load_model(checkpoint)
    with common.using(model):
        return contrast_pair(model, positive, negative, layer, position=position)


# ---------------------------------------------------------------------------------------------
# pages
# ---------------------------------------------------------------------------------------------
def page_model(ctx: Context) -> None:
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


def _pick_head_from_grid() -> None:
    event = ss.get("attn_grid")
    points = (event or {}).get("selection", {}).get("points", []) if hasattr(event or {}, "get") else []
    for p in points:
        label = p.get("customdata")
        if isinstance(label, list):
            label = label[0] if label else None
        if not isinstance(label, str) and p.get("x") is not None and p.get("y") is not None:
            label = f"{p['y']}{p['x']}"
        if isinstance(label, str) and label in ss.get("_head_options", []):
            ss["attn_head"] = label
            return


def page_attention(ctx: Context) -> None:
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
    _keep_valid("attn_head", heads, heads[0])
    head_col, view_col = st.columns([1, 2])
    with head_col:
        label = st.selectbox("Head", heads, key="attn_head", help="or click a head in the grid below")
    layer, head = A.parse_head_label(label)
    plot(F.attention_figure(data, layer, selected_head=head), key="attn_fig")

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
    st.markdown(F.token_view_html(tokens, weights, pos, direction), unsafe_allow_html=True)

    st.subheader("Head summary")
    scores, where = cached_head_scores(ctx.token, str(ctx.checkpoint), str(ctx.run) if ctx.run else None)
    score = st.radio("Grid colour", A.HEAD_SCORES, key="attn_score", horizontal=True,
                     format_func=lambda s: s.replace("_", " "))
    plot(F.head_grid_figure(scores, score, selected=label), key="attn_grid", on_select=_pick_head_from_grid,
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


def page_logit_lens(ctx: Context) -> None:
    st.header("Logit lens")
    st.caption("The residual stream after each layer, read out through the final norm (ln_final) and the "
               "unembedding (W_U): what the model would predict if it stopped there.")
    model = ctx.model()
    text = prompt_input("lens_prompt", model)
    if checked_tokens(model, text) is None:
        return
    k = st.slider("Top tokens per cell (hover)", 1, 10, 5, key="lens_k")
    lens = cached_lens(ctx.token, str(ctx.checkpoint), text, int(k))
    plot(F.logit_lens_figure(lens), key="lens_fig")
    if lens.true_next_prob.shape[1]:
        plot(F.true_next_figure(lens), key="lens_true")
        final = lens.true_next_prob[-1]
        st.caption(f"Mean probability of the true next token at the output: {final.mean():.3f}; "
                   f"after the embeddings alone: {lens.true_next_prob[0].mean():.3f}.")
    else:
        st.info("Type at least two tokens to see the probability of the true next token.")
    with st.expander("As a table"):
        st.dataframe(lens.table(k=min(3, int(k))))


def page_steering(ctx: Context) -> None:
    st.header("Steering playground")
    try:
        from nanolens.models.sentiment import score_sentiment
        from nanolens.steering import Steering, SteeringVector
    except Exception as err:  # the steering package is missing or broken
        st.warning(f"Steering needs the nanolens.steering package, which could not be imported ({type(err).__name__}: {err}).")
        return
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
                          value=A.default_prompt(model, _neutral_openings()))
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
                    st.write_stream(_as_markdown(gen, pieces))
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
            from nanolens.steering import top_tokens

            with common.using(model):
                st.dataframe(top_tokens(model, vector, k=10))
        except Exception as err:
            st.caption(f"(unavailable: {err})")


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]<>()#+-.!|~$"})


def _as_markdown(pieces_in: Any, collected: list[str], every: float = 0.05) -> Any:
    """Stream generated text as literal markdown (escaped; newlines kept), collecting the raw text.
    Pieces are sent at most every `every` seconds (one browser update per token would cost more
    than the token)."""
    import time

    pending: list[str] = []
    last = time.perf_counter()
    for piece in pieces_in:
        collected.append(piece)
        pending.append(piece)
        now = time.perf_counter()
        if now - last >= every:
            yield "".join(pending).translate(_MARKDOWN_SPECIAL).replace("\n", "  \n")
            pending.clear()
            last = now
    if pending:
        yield "".join(pending).translate(_MARKDOWN_SPECIAL).replace("\n", "  \n")


@st.cache_data(show_spinner=False)
def _neutral_openings() -> list[str]:
    try:
        from nanolens.models.sentiment import neutral_openings

        return list(neutral_openings(5, seed=0))
    except Exception:
        return []


def page_probes(ctx: Context) -> None:
    st.header("Probes")
    try:
        import nanolens.probes  # noqa: F401
    except Exception as err:
        st.warning(f"Probes need the nanolens.probes package, which could not be imported ({type(err).__name__}: {err}).")
        return
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
    plot(F.probe_figure(df), key="probe_fig")
    shown = df.drop(columns=[c for c in ("kind",) if c in df.columns]).assign(layer=[str(v) for v in df["layer"]])
    st.dataframe(shown, hide_index=True)
    best = df.loc[df[metric].idxmax()]
    st.markdown(f"Best layer: **{best['layer']}** ({metric} {best[metric]:.3f}, selectivity {best['selectivity']:.3f}).")

    st.subheader("Read a prompt with a probe")
    layers = [str(v) for v in df["layer"]]
    _keep_valid("probe_layer", layers, str(best["layer"]))
    if "probe_layer" not in ss:
        ss["probe_layer"] = str(best["layer"])
    layer = st.selectbox("Probe of layer", layers, key="probe_layer")
    hook_name = df.loc[[str(v) == layer for v in df["layer"]], "hook"].iloc[0]
    text = prompt_input("probes_prompt", model)
    if checked_tokens(model, text) is None:
        return
    from nanolens.probes import probe_readout

    with common.using(model):
        readout = probe_readout(model, probes[hook_name], text, hook_name, truncate=True)
    probe = probes[hook_name]
    st.markdown(F.probe_tokens_html(readout, list(getattr(probe, "classes_", [])) or None), unsafe_allow_html=True)
    st.line_chart(readout.set_index("position")["score"], height=180)


def page_training(ctx: Context) -> None:
    st.header("Training")
    if ctx.run is None:
        st.info("This checkpoint is not inside a run folder, so there is no metrics.jsonl to show. "
                "Point the explorer at runs/NAME to see its training.")
        return
    metrics = A.read_run_metrics(ctx.run)
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
        plot(F.loss_figure(m), key="train_loss_fig")
        if len(m.logs) or len(m.evals):
            plot(F.lr_figure(m), key="train_lr_fig")
        st.subheader("Samples over time")
        if not m.samples:
            st.info("No samples yet (the trainer prints one every sample_interval iterations).")
            return
        iters = [it for it, _ in m.samples]
        if len(iters) > 1:
            _keep_valid("train_sample", iters, iters[-1])
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


def page_across_training(ctx: Context) -> None:
    st.header("Across training")
    if ctx.run is None:
        st.info("This checkpoint is not inside a run folder; point the explorer at runs/NAME to compare its checkpoints.")
        return
    checkpoints = A.distinct_checkpoints(A.find_checkpoints(ctx.run))
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
    _keep_valid("lapse_head", heads, heads[0])
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
    plot(F.timelapse_figure(tokens, patterns, labels, label), key="lapse_fig")
    if history:
        import pandas as pd

        plot(F.head_score_history_figure(pd.DataFrame(history), label), key="lapse_scores")
    st.caption(f"{len(patterns)} checkpoints: " + ", ".join(labels) + ". Press ▶ or drag the slider.")

    st.subheader("Probes and steering across training")
    if st.toggle("Probe accuracy at each checkpoint", key="lapse_probes",
                 help="a linear probe per layer on the sentiment stories, fitted at every checkpoint shown"):
        _probes_across(ctx, checkpoints)
    if st.toggle("Steering effect at each checkpoint", key="lapse_steer",
                 help="the same contrast pair, built and applied at every checkpoint shown"):
        _steering_across(checkpoints)


def _probes_across(ctx: Context, checkpoints: list[A.Checkpoint]) -> None:
    import pandas as pd

    try:
        import nanolens.probes  # noqa: F401
    except Exception as err:
        st.warning(f"Probes need nanolens.probes ({type(err).__name__}: {err}).")
        return
    n = st.slider("Texts per probe", 40, 600, 100, 20, key="lapse_probe_n")
    rows = []
    for ck in checkpoints:
        df, _ = cached_probes(common.cache_token(ck.path), str(ck.path), "sentiment:reveal", "", int(n), "resid_post")
        for _, r in df.iterrows():
            rows.append({"iter": ck.iter, "layer": str(r["layer"]), "accuracy": r[df.attrs.get("metric", "accuracy")]})
    table = pd.DataFrame(rows)
    ss["lapse_probe_table"] = table
    go = F._go()
    fig = go.Figure([go.Scatter(x=part["iter"], y=part["accuracy"], mode="lines+markers", name=f"layer {layer}")
                     for layer, part in table.groupby("layer", sort=False)])
    fig.update_layout(xaxis_title="iteration", yaxis_title="held-out accuracy", yaxis_range=[0, 1.02], height=320,
                      margin=dict(l=10, r=10, t=40, b=10), title=dict(text="Sentiment probe accuracy across training",
                                                                      font=dict(size=13)))
    plot(fig, key="lapse_probe_fig")


def _steering_across(checkpoints: list[A.Checkpoint]) -> None:
    import pandas as pd

    try:
        from nanolens.models.sentiment import score_sentiment
        from nanolens.steering import Steering
    except Exception as err:
        st.warning(f"Steering needs nanolens.steering ({type(err).__name__}: {err}).")
        return
    first = common.load_model(checkpoints[-1].path)
    c1, c2, c3 = st.columns(3)
    with c1:
        positive = st.text_input("Positive prompt", key="lapse_pos", value=A.default_prompt(first, ["She felt happy and calm."]))
    with c2:
        negative = st.text_input("Negative prompt", key="lapse_neg", value=A.default_prompt(first, ["She felt sad and upset."]))
    with c3:
        coeff = st.slider("Coefficient", -10.0, 10.0, 4.0, 0.5, key="lapse_coeff")
    samples = st.slider("Samples per checkpoint", 1, 10, 3, key="lapse_samples")
    prompt = A.default_prompt(first, _neutral_openings())
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
    go = F._go()
    fig = go.Figure([go.Scatter(x=table["iter"], y=table[c], mode="lines+markers", name=c) for c in ("unsteered", "steered")])
    fig.update_layout(xaxis_title="iteration", yaxis_title=f"mean sentiment ({int(samples)} samples)", yaxis_range=[-1.05, 1.05],
                      height=320, margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text=f"Steering at layer n_layer/2, coefficient {coeff:+g}, across training", font=dict(size=13)))
    plot(fig, key="lapse_steer_fig")
    st.caption(f"Prompt: {prompt!r}; the vector is rebuilt from the same prompt pair at each checkpoint.")


def _pick_hook_from_diagram() -> None:
    event = ss.get("hooks_diagram")
    points = (event or {}).get("selection", {}).get("points", []) if hasattr(event or {}, "get") else []
    for p in points:
        name = p.get("customdata")
        if isinstance(name, list):
            name = name[0] if name else None
        if isinstance(name, str) and name in ss.get("_hook_options", []):
            ss["hook_pick"] = name
            return


def page_hook_map(ctx: Context) -> None:
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
    _keep_valid("hook_pick", names, default)
    if "hook_pick" not in ss:
        ss["hook_pick"] = default
    plot(F.hook_diagram(summary, selected=ss["hook_pick"]), key="hooks_diagram", on_select=_pick_hook_from_diagram,
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
        plot(F.activation_figure(name, acts[name], tokens), key="hooks_act")
    st.subheader("All hook points")
    st.dataframe(summary, hide_index=True)


PAGE_FUNCS: dict[str, Callable[[Context], None]] = {
    "Model": page_model, "Attention": page_attention, "Logit lens": page_logit_lens, "Steering": page_steering,
    "Probes": page_probes, "Training": page_training, "Across training": page_across_training, "Hook map": page_hook_map,
}
NEEDS_CHECKPOINT = {"Model", "Attention", "Logit lens", "Steering", "Probes", "Hook map"}


def _guarded(page: str, ctx: Context) -> None:
    """Run a page; input problems become a warning, anything else an error message (no traceback)."""
    from nanolens.models.checkpoint import CheckpointError

    try:
        PAGE_FUNCS[page](ctx)
    except A.ExplorerError as err:
        st.warning(str(err))
    except CheckpointError as err:
        st.error(f"Cannot load the checkpoint: {err}")
    except ValueError as err:  # the library's errors name the problem and the fix
        st.error(str(err))
    except Exception as err:  # noqa: BLE001 - the app must never show a traceback
        common.log.exception("page %s failed", page)
        st.error(f"{page} failed: {type(err).__name__}: {err}")


def main() -> None:
    st.set_page_config(page_title="nanolens explorer", layout="wide")
    page, ctx = sidebar()
    if ctx.source is None:
        st.header(page)
        st.error(ctx.problem or "choose a run in the sidebar")
        st.markdown("Start the explorer on a run with `nanolens explore --runs runs/` (or `--ckpt runs/NAME/best`), "
                    "or type a run folder in the sidebar.")
        return
    if page in NEEDS_CHECKPOINT and ctx.checkpoint is None:
        st.header(page)
        st.warning(ctx.problem or "no checkpoint selected")
        return
    _guarded(page, ctx)
    leaked = common.attached_hooks()
    if leaked:  # never expected: `using` already removes stragglers
        st.sidebar.error(f"hooks left attached: {leaked}")
