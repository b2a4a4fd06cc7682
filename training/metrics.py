"""A run's metrics: the records the trainer writes to `metrics.jsonl` and hands to callbacks."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a torn last line, from a killed run, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
