"""The explorer: its pages in order, and `main()`, which draws the sidebar and the chosen page
(`app.py`, the Streamlit entry script, only calls it).

Every page that runs the model does so inside `common.using(model)` (the process-wide model
lock; hooks attached only by scoped context managers), and every page is wrapped by `guarded`,
so bad input shows a warning or an error message, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from nanolens.models import CheckpointError

from . import analysis as A
from . import common
from .pages import across_training, attention, hook_map, logit_lens, model, probes, steering, training
from .sidebar import Context, sidebar

PAGES: dict[str, Callable[[Context], None]] = {
    "Model": model.render, "Attention": attention.render, "Logit lens": logit_lens.render, "Steering": steering.render,
    "Probes": probes.render, "Training": training.render, "Across training": across_training.render,
    "Hook map": hook_map.render,
}
NEEDS_CHECKPOINT = {"Model", "Attention", "Logit lens", "Steering", "Probes", "Hook map"}


def guarded(page: str, ctx: Context) -> None:
    """Run a page; input problems become a warning, anything else an error message (no traceback)."""
    try:
        PAGES[page](ctx)
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
    page, ctx = sidebar(list(PAGES))
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
    guarded(page, ctx)
    leaked = common.attached_hooks()
    if leaked:  # never expected: `using` already removes stragglers
        st.sidebar.error(f"hooks left attached: {leaked}")
