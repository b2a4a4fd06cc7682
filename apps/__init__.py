"""nanolens.apps: the Streamlit explorer and the demo pipeline.

    nanolens explore --runs runs/          # or --ckpt runs/NAME/best
    nanolens demo                          # nanolens.apps.demo.run_demo

`nanolens explore` starts `streamlit run` on `app.py` (this package's entry script), which
calls `explorer.main()`: the sidebar (`sidebar`), the chosen page (one module per page in
`pages/`), shared widgets (`widgets`) and cached computations (`cached`), the shared models and
the hook lock (`common`). Every computation the pages show (attention patterns, head scores,
logit lens, hook summaries) is a plain function in `analysis`, testable and timed without
Streamlit; its figures are in `figures`. Importing this package stays light (no Streamlit or
torch), so `nanolens explore` starts the server at once.
"""

from __future__ import annotations

from pathlib import Path

APP_PATH = Path(__file__).with_name("app.py")

__all__ = ["APP_PATH"]
