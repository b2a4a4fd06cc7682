"""The training benchmarks run end to end (a few iterations, in a subprocess) and print their tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

pytestmark = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"needs tiny Shakespeare at {SHAKESPEARE}")


def run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.slow
def test_bench_train_prints_its_table(tmp_path):
    out = tmp_path / "bench_train.md"
    proc = run("bench_train.py", "--data", str(SHAKESPEARE), "--max-iters", "3", "--eval-iters", "2",
               "--quiet", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("final val loss", "final train loss", "wall time", "tokens/s"):
        assert row in proc.stdout, f"{row!r} missing from:\n{proc.stdout}"
    assert "| metric" in proc.stdout and "n/a (shortened run)" in proc.stdout
    assert out.read_text(encoding="utf-8") in proc.stdout
    assert "done: iter" not in proc.stdout + proc.stderr, "--quiet hides the trainer's messages"


@pytest.mark.slow
def test_bench_train_reports_each_seed_and_their_mean(tmp_path):
    proc = run("bench_train.py", "--data", str(SHAKESPEARE), "--max-iters", "2", "--eval-iters", "2",
               "--seeds", "3,5", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 3 |") or line.startswith("| 5 |")]
    assert len(rows) == 2, proc.stdout
    vals = [float(row.split("|")[2]) for row in rows]
    assert vals[0] != vals[1], "different seeds must train differently"
    mean = float(proc.stdout.split("mean **")[1].split("**")[0])
    assert mean == pytest.approx(sum(vals) / 2, abs=1e-4)
    assert "n/a (shortened run)" in proc.stdout
    assert "done: iter" not in proc.stdout, "the workers' trainer messages stay out of the table"


def test_bench_train_rejects_bad_seeds():
    proc = run("bench_train.py", "--seeds", "1,x", timeout=60)
    assert proc.returncode == 2 and "--seeds takes integers" in proc.stderr


@pytest.mark.slow
def test_ladder_prints_its_table_and_plot(tmp_path):
    proc = run("ladder.py", "--data", str(SHAKESPEARE), "--iters", "2", "--eval-batches", "2", "--n-embd", "32",
               "--block-size", "16", "--sample-tokens", "10", "--quiet", "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "ladder.md").read_text(encoding="utf-8")
    assert md in proc.stdout
    from nanolens.models import LADDER

    rows = [line for line in md.splitlines() if line.startswith("| ") and "`" in line]
    assert [row.split("`")[1] for row in rows] == [p.name for p in LADDER]
    assert all(row.rstrip(" |").endswith(".") for row in rows), "every rung needs its sentence"
    assert (tmp_path / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ladder_rejects_an_unknown_rung(tmp_path):
    proc = run("ladder.py", "--rungs", "bigram,transformer", "--out-dir", str(tmp_path), timeout=120)
    assert proc.returncode == 2 and "unknown rung" in proc.stderr and "transformer" in proc.stderr
