"""The course notebook (00_simple_to_complex) runs top to bottom on a quick budget, and is what
its builder script generates."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_simple_to_complex.ipynb"
BUILDER = ROOT / "notebooks" / "build_00.py"
SHARED_DATA = ROOT.parent / "shared" / "data"
RUNGS = ("bigram", "average", "one_head", "multi_head", "feed_forward", "deep", "residual", "layer_norm", "gpt2", "modern")


def load_builder():
    spec = importlib.util.spec_from_file_location("build_00", BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_is_generated_by_its_builder():
    assert NOTEBOOK.is_file(), "run python notebooks/build_00.py"
    assert NOTEBOOK.read_text(encoding="utf-8") == load_builder().render(), (
        "00_simple_to_complex.ipynb is out of date; run python notebooks/build_00.py"
    )


def test_notebook_covers_every_rung_of_the_ladder():
    from nanolens.models import LADDER

    builder = load_builder()
    assert [name for name, _, _ in builder.RUNGS] == [p.name for p in LADDER]
    for name, heading, lesson in builder.RUNGS:
        sentences = [s for s in lesson.replace("e.g.", "eg").split(". ") if s.strip()]
        assert 2 <= len(sentences) <= 3, f"{name}: the lesson should be two sentences, got {len(sentences)}"


@pytest.mark.slow
def test_course_notebook_executes_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOLENS_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if SHARED_DATA.is_dir():
        monkeypatch.setenv("NANOLENS_DATA", str(SHARED_DATA))
    nb = nbformat.read(str(NOTEBOOK), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue")
    text = "".join(o.get("text", "") for o in outputs)
    for name in RUNGS:
        assert f"{name}: " in text and "val loss" in text, f"rung {name} printed no val loss"
    assert text.count("sample:") == len(RUNGS)
    assert "changed from the previous rung" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    attention_rungs = len(RUNGS) - 1  # every rung but the bigram table has attention (average's is uniform)
    assert len(images) >= attention_rungs + 2, "missing pictures: attention per rung, positions, the summary"
    assert "modules this rung adds:" in text and "lecture" in text and "~2.49" in text
    positions = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "SinusoidalPositions" in c.source)
    assert any("image/png" in o.get("data", {}) for o in nb.cells[positions].outputs), "the positional-encoding picture is missing"
    print(f"the quick course notebook ran in {seconds:.0f} s")
