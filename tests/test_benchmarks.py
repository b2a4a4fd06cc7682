"""benchmarks/bench_model.py runs end to end (--quick, in a subprocess) and prints its table.

Only the table's shape is checked, never a timing: speed is reported by the benchmark, not
asserted by tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_model_quick_prints_the_five_rows(tmp_path):
    out = tmp_path / "bench_model.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_model.py"), "--quick", "--threads", "1", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("torch ") and "threads" in line and "CPU" in line for line in lines), proc.stdout
    table = [line for line in lines if line.startswith("|")]
    assert table[0].replace(" ", "") == "|what|ours|reference|ratio|goal|met|", table
    rows = table[2:]
    assert len(rows) == 5, table
    for row, words in zip(rows, (("training step", "HookPoints", "nn.Identity"), ("decode", "4L/4H/128", "KV cache"),
                                 ("decode", "6L/6H/384", "shakespeare_char", "KV cache"), ("run_with_cache",),
                                 ("steering vector", "unsteered"))):
        assert all(word in row for word in words), row
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 6 and cells[-1] in ("yes", "no"), row
    written = out.read_text()
    assert all(row in written for row in rows)
