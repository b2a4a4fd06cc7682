"""The explorer's sidebar: where the app was pointed (a run, a checkpoint or a folder of runs),
and which run, checkpoint and page are chosen. Its answer is a `Context` every page reads."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from nanolens.models import GPT
from nanolens.training.runs import Checkpoint, find_checkpoints, read_checkpoint

from . import analysis as A
from . import common
from .widgets import keep_valid

ss = st.session_state


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
    checkpoints: list[Checkpoint]
    problem: str | None = None

    def model(self) -> GPT:
        if self.checkpoint is None:
            raise A.ExplorerError(self.problem or "no checkpoint is selected")
        return common.load_model(self.checkpoint)

    @property
    def token(self) -> str:
        return common.cache_token(self.checkpoint)


def _page_from_query(pages: Sequence[str]) -> str:
    wanted = str(st.query_params.get("page", "")).strip().lower().replace("-", " ").replace("_", " ")
    for name in pages:
        if name.lower() == wanted:
            return name
    return pages[0]


def sidebar(pages: Sequence[str]) -> tuple[str, Context]:
    st.sidebar.title("nanolens explorer")
    if "page" not in ss:
        ss["page"] = _page_from_query(pages)
    page = st.sidebar.radio("Page", pages, key="page")
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
        keep_valid("run", runs, runs[0])
        run = Path(st.sidebar.selectbox("Run", runs, key="run", format_func=lambda p: Path(p).name))
    else:
        run = source.runs[0]
    if source.kind == "checkpoint":
        ck = read_checkpoint(source.path)
        st.sidebar.caption(f"checkpoint {source.path} ({ck.label})")
        checkpoints = find_checkpoints(run) if run != source.path else [ck]
        return page, Context(source, run if run != source.path else None, source.path, checkpoints)
    checkpoints = find_checkpoints(run)
    if not checkpoints:
        problem = (f"{run} has no checkpoint yet (no best/ or last/ folder): the trainer writes one at its first "
                   "evaluation. The Training page can already show its metrics.")
        st.sidebar.warning(problem)
        return page, Context(source, run, None, [], problem)
    paths = [str(c.path) for c in checkpoints]
    labels = {str(c.path): c.label for c in checkpoints}
    default = next((p for p in paths if Path(p).name == "best"), paths[-1])
    keep_valid("ckpt", paths, default)
    if "ckpt" not in ss:
        ss["ckpt"] = default
    chosen = st.sidebar.selectbox("Checkpoint", paths, key="ckpt", format_func=lambda p: labels.get(p, p))
    return page, Context(source, run, Path(chosen), checkpoints)
