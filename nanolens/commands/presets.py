"""`nanolens presets`: the simple-to-complex ladder of model presets."""

from __future__ import annotations

import argparse

from nanolens.models.presets import LADDER


def run(args: argparse.Namespace) -> int:
    for rung, preset in enumerate(LADDER, 1):
        print(f"{rung}. {preset.name:<13} {preset.description}")
    return 0
