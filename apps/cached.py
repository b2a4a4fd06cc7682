"""The explorer's computations, cached across reruns and sessions, keyed by the checkpoint's
path and weights' mtime (`token`), each run under the model lock (`common.using`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from nanolens.probes import LabelledTexts, probe_layers
from nanolens.steering import SteeringVector, contrast_pair

from . import analysis as A
from . import common


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
def cached_contrast(token: str, checkpoint: str, positive: str, negative: str, layer: int, position: str) -> SteeringVector:
    model = common.load_model(checkpoint)
    with common.using(model):
        return contrast_pair(model, positive, negative, layer, position=position)
