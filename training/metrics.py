"""A run's metrics: the records the trainer writes to `metrics.jsonl` and hands to callbacks."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nanolens.fields import INT, LIST_OF_STR, NUMBER, OBJECT, STR, FileFormatError, as_object, field, optional

METRICS_FILE = "metrics.jsonl"

Callback = Callable[[dict[str, Any]], Any]


class StopTraining(Exception):
    """Raise from a callback to end training cleanly: the trainer evaluates, writes its
    checkpoints and returns, and `resume=True` can continue later."""


def notify(callbacks: Iterable[Callback], record: dict[str, Any]) -> bool:
    """Hand each callback its own copy of `record`; True when one asked to stop (StopTraining)."""
    stop = False
    for callback in callbacks:
        try:
            callback(dict(record))
        except StopTraining:
            stop = True
    return stop


def finite_json(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with inf and NaN numbers as None: metrics.jsonl stays strict JSON for every reader
    (a non-finite value's story is told in words, e.g. a `stop` row's `reason`)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


# What each field of a row holds (kind and iter in every row, the others where present); a row
# that breaks one is skipped with a warning naming it.
ROW_FIELDS = (
    ("train_loss", optional(NUMBER)), ("val_loss", optional(NUMBER)),
    ("best_val_loss", optional(NUMBER)), ("lr", optional(NUMBER)), ("tokens_per_s", optional(NUMBER)),
    ("elapsed", optional(NUMBER)), ("sample", STR), ("reason", STR), ("mfu", optional(NUMBER)),
    ("grad_norm", optional(NUMBER)), ("grad_norm_max", optional(NUMBER)), ("clipped", optional(INT)),
    ("watch", optional(OBJECT)), ("flags", optional(LIST_OF_STR)),
)


class MetricsWarning(UserWarning):
    """Rows of a metrics.jsonl were skipped; the message names their lines."""


def check_row(record: Any, where: str) -> dict[str, Any]:
    """One row, every known field's type checked (FileFormatError names the field)."""
    record = as_object(record, where)
    field(record, "kind", STR, where)
    field(record, "iter", INT, where)
    for name, kind in ROW_FIELDS:
        field(record, name, kind, where, default=None)
    return record


def read_metrics_checked(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(the rows of a metrics.jsonl that read cleanly, one problem per skipped row). A torn last
    line (a run killed mid-write, or one being written now) is not a problem, just not a row."""
    path = Path(path)
    if not path.is_file():
        return [], []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines[-1]  # after the last newline: empty, or a row still being written
    records, problems = [], []
    for number, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            records.append(check_row(json.loads(line), where))
        except json.JSONDecodeError as err:
            problems.append(f"{where}: not valid JSON ({err.msg})")
        except FileFormatError as err:
            problems.append(str(err))
    if torn.strip():
        try:
            records.append(check_row(json.loads(torn), f"{path}: line {len(lines)}"))
        except (json.JSONDecodeError, FileFormatError):
            pass
    return records, problems


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file; rows that do not read cleanly are skipped with one
    warning (MetricsWarning) that names their lines."""
    records, problems = read_metrics_checked(path)
    if problems:
        warnings.warn(f"skipped {len(problems)} row(s) of {path}: " + "; ".join(problems[:3])
                      + ("; ..." if len(problems) > 3 else ""), MetricsWarning, stacklevel=2)
    return records
