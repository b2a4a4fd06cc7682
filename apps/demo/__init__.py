"""The demo pipeline (`nanolens demo`): train, probe, find the sentiment direction, steer, report.

Its steps are modules: `plan` (sizes), `model` (training or loading the model), `directions`,
`prompts`, `checks` (confirmation beside random directions, two directions at once),
`report` (report.md) and `pipeline` (`run_demo`, which runs them in order).
"""

from .pipeline import run_demo
from .plan import DemoPlan

__all__ = ["DemoPlan", "run_demo"]
