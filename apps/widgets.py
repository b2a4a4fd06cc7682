"""Widgets the explorer's pages share: a prompt box that carries over between pages, token
checks with a clear warning, head labels, plotly charts, and streamed text."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import streamlit as st

from nanolens.corpora.sentiment import neutral_openings as held_out_openings
from nanolens.models import GPT

from . import analysis as A

ss = st.session_state


def keep_valid(key: str, options: list[Any], default: Any) -> None:
    """Reset a widget's remembered value when the options changed under it."""
    if key in ss and ss[key] not in options:
        ss[key] = default


def prompt_input(key: str, model: GPT, label: str = "Prompt", default: str | None = None, height: int = 90) -> str:
    """A prompt box whose text carries over between pages (the last prompt typed anywhere)."""
    if key not in ss:
        ss[key] = ss.get("last_prompt") or default or A.default_prompt(model)
    text = st.text_area(label, key=key, height=height)
    ss["last_prompt"] = text
    return text


def checked_tokens(model: GPT, text: str) -> tuple[Any, list[str]] | None:
    """Token ids and strings of a prompt, or None after showing a warning that says what is wrong."""
    try:
        tokens, strs, cropped = A.prompt_tokens(model, text)
    except A.ExplorerError as err:
        st.warning(str(err))
        return None
    if cropped:
        st.info(f"The prompt is longer than the model's context; showing its last {model.config.block_size} tokens.")
    return tokens, strs


def head_options(model: GPT) -> list[str]:
    labels = []
    for layer, _ in A.pattern_hooks(model):
        attn = model.blocks[layer].attn
        n = getattr(attn, "n_heads", None) or (1 if model.config.attention == "average" else model.config.n_head)
        labels += [A.head_label(layer, h) for h in range(n)]
    return labels


def plot(fig: Any, key: str, **kw: Any) -> Any:
    return st.plotly_chart(fig, key=key, config={"displaylogo": False}, **kw)


_MARKDOWN_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]<>()#+-.!|~$"})


def as_markdown(pieces_in: Iterator[str], collected: list[str], every: float = 0.05) -> Iterator[str]:
    """Stream generated text as literal markdown (escaped; newlines kept), collecting the raw text.
    Pieces are sent at most every `every` seconds (one browser update per token would cost more
    than the token)."""
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
def neutral_openings() -> list[str]:
    """Five held-out story openings: default prompts to steer."""
    return list(held_out_openings(5, seed=0))


def pick_from_chart(chart_key: str, widget_key: str, options_key: str, from_xy: bool = False) -> None:
    """`on_select` of a plotly chart: the clicked point's `customdata` (or, with `from_xy`, its
    y and x labels joined, as the head grid names a head) becomes the value of the select box
    `widget_key` when it is one of its options (kept in `ss[options_key]`)."""
    event = ss.get(chart_key)
    points = (event or {}).get("selection", {}).get("points", []) if hasattr(event or {}, "get") else []
    for p in points:
        label = p.get("customdata")
        if isinstance(label, list):
            label = label[0] if label else None
        if from_xy and not isinstance(label, str) and p.get("x") is not None and p.get("y") is not None:
            label = f"{p['y']}{p['x']}"
        if isinstance(label, str) and label in ss.get(options_key, []):
            ss[widget_key] = label
            return
