"""Tables of results, as the terminal shows them and as reports write them: the one table
formatter of nanolens (probe sweeps, steering sweeps, the demo's report, fine-tuning comparisons).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np


def format_cell(value: Any, floatfmt: str = ".3f") -> str:
    """One cell: floats with `floatfmt` ("nan" when not finite), anything else as `str`."""
    if isinstance(value, (float, np.floating)):
        return "nan" if not np.isfinite(value) else format(float(value), floatfmt)
    return str(value)


def _cells(df: Any, columns: Sequence[str] | None, floatfmt: str) -> tuple[list[str], list[list[str]]]:
    cols = list(columns) if columns is not None else [str(c) for c in df.columns]
    rows = [[format_cell(df[c].iloc[r], floatfmt) for c in cols] for r in range(len(df))]
    return cols, rows


def text_table(df: Any, columns: Sequence[str] | None = None, floatfmt: str = ".3f") -> str:
    """A fixed-width text table of a DataFrame's `columns` (all by default), right-aligned."""
    cols, rows = _cells(df, columns, floatfmt)
    widths = [max([len(c)] + [len(row[k]) for row in rows]) for k, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def markdown_table(df: Any, columns: Sequence[str] | None = None, floatfmt: str = ".3f") -> str:
    """A GitHub-flavoured Markdown table of a DataFrame's `columns` (all by default)."""
    cols, rows = _cells(df, columns, floatfmt)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def side_by_side(columns: list[tuple[str, str]], width: int = 38) -> str:
    """Texts next to each other under their titles, each wrapped to `width` characters."""
    wrapped = [[title, "-" * min(width, max(len(title), 8))] + (textwrap.wrap(text.replace("\n", " / "), width) or [""])
               for title, text in columns]
    height = max(len(w) for w in wrapped)
    lines = []
    for i in range(height):
        lines.append(" | ".join((w[i] if i < len(w) else "").ljust(width) for w in wrapped).rstrip())
    return "\n".join(lines)
