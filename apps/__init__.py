"""nanolens.apps: the Streamlit explorer.

    nanolens explore --runs runs/          # or --ckpt runs/NAME/best

starts `streamlit run` on `app.py` (this package's entry script). The pages live in
`pages.py`, the shared model loading and the hook lock in `common.py`, and every computation the
pages show (attention patterns, head scores, logit lens, hook summaries, run discovery) in
`analysis.py` as plain functions that can be tested and timed without Streamlit.
"""

from __future__ import annotations

from pathlib import Path

APP_PATH = Path(__file__).with_name("app.py")

__all__ = ["APP_PATH"]
