"""The notebooks run top to bottom (on a tiny model trained for a few seconds), so they never rot."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
# The probing notebooks (the course notebook 00 has its own test, test_notebook_course.py).
NOTEBOOKS = [ROOT / "notebooks" / name for name in ("01_hooks_and_cache.ipynb", "02_probing_sentiment.ipynb")]
SHARED_DATA = ROOT.parent / "shared" / "data"


def test_the_notebooks_are_there():
    for path in NOTEBOOKS:
        assert path.is_file(), path
        nbformat.validate(nbformat.read(str(path), as_version=4))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Shared by the notebooks: the first trains the tiny model there, the next reuses it."""
    return tmp_path_factory.mktemp("notebook_run")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOLENS_NOTEBOOK_QUICK", "1")
    monkeypatch.delenv("NANOLENS_CKPT", raising=False)
    monkeypatch.setenv("NANOLENS_NOTEBOOK_RUN", str(run_dir))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if SHARED_DATA.is_dir():
        monkeypatch.setenv("NANOLENS_DATA", str(SHARED_DATA))
    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook should draw its plots"
    text = "".join(o.get("text", "") for o in outputs)
    if path.stem.startswith("02"):
        assert "selectivity" in text and "blocks.1.hook_resid_post" in text
    else:
        assert "hook points" in text and "did you mean" in text
