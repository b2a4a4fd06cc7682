"""Where a text is read: one token index, a token span to average, or a mode for every text.

A position is a token index into its text (negative: from the end), a `(start, end)` span to
average (end exclusive, as in Python slices), or None (the last token); for the char-level
tokenizer token indices are character offsets. `"last"`, `"all"` and `"mean"` read every text
the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np

Position = Union[int, tuple[int, int], None]
PositionSpec = Union[str, int, Sequence[Position]]

READ_MODES = ("last", "all", "mean")


def normalise_positions(positions: PositionSpec, n: int) -> str | list[Position]:
    """`'last' | 'all' | 'mean'` stay strings; an int applies to every text; a list has one
    entry per text (an int, a (start, end) span, or None for the last token)."""
    if isinstance(positions, str):
        if positions not in READ_MODES:
            raise ValueError(f"positions={positions!r}: use 'last', 'all', 'mean', an int, or one int / (start, end) span per text")
        return positions
    if isinstance(positions, (int, np.integer)):
        return [int(positions)] * n
    positions = list(positions)
    if len(positions) != n:
        raise ValueError(f"got {len(positions)} positions for {n} texts; give one position (or span) per text")
    out: list[Position] = []
    for i, p in enumerate(positions):
        if p is None or isinstance(p, (int, np.integer)):
            out.append(None if p is None else int(p))
        elif isinstance(p, (tuple, list, np.ndarray)) and len(p) == 2:
            out.append((int(p[0]), int(p[1])))
        else:
            raise ValueError(f"position {i} is {p!r}; a position is an int, a (start, end) span, or None (last token)")
    return out
