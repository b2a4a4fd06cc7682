"""The trainer's checkpoints: writing `best/` and `last/` (model files plus trainer state,
atomically), and reading them back for `--resume`, repairing what a kill left behind.

A mixin of `Trainer`, so `trainer.py` holds the loop and this module the files; the attributes
it reads (`raw_model`, `optimizer`, `scaler`, `out_dir`, the losses and counters) are the
Trainer's.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as load_safetensors_model

from nanolens.files import atomic_directory
from nanolens.models.checkpoint import WEIGHTS_FILE, CheckpointError, write_model_files

from .guard import TrainingDiverged, weights_are_finite
from .runs import recover_checkpoint
from .runtime import stream_seed
from .state import read_state_json, read_trainer_files, restore_random_streams, trainer_state, write_trainer_files


class CheckpointCommit:
    """`save_checkpoint`, `load_checkpoint` and the repairs a resume makes."""

    # Test hook: called as hook(checkpoint_name, temp_dir) inside every checkpoint write, after
    # the model files are written and before the trainer state is (so tests can kill the run there).
    _checkpoint_hook: Callable[[str, Path], None] | None = None

    def state_dict_json(self) -> dict[str, Any]:
        return trainer_state({
            "iter": self.iter_num,
            "best_val_loss": self.best_val_loss,
            "val_loss": self.last_val_loss,
            "train_loss": self.last_train_loss,
            "elapsed": self.elapsed,
            "world_size": self.world_size,
            "train_config": self.config.to_dict(),
        }, self.scaler)

    def save_checkpoint(self, name: str = "last") -> Path:
        """Write `out_dir/name` atomically: model files + optimizer + RNG + trainer state."""
        if self.out_dir is None:
            raise ValueError("this trainer has no out_dir to write checkpoints into")
        if not weights_are_finite(self.raw_model.parameters()):
            raise TrainingDiverged(f"refusing to write {name}/: the weights hold inf or NaN")
        dest = self.out_dir / name
        with atomic_directory(dest) as tmp:
            write_model_files(self.raw_model, tmp)
            if self._checkpoint_hook is not None:  # the class's (a test sets it on Trainer)
                type(self)._checkpoint_hook(name, tmp)
            write_trainer_files(tmp, self.optimizer, self.state_dict_json())
        if name == "last":
            self.checkpoint_iter = self.iter_num
        return dest

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore weights, optimizer, RNG states, iteration and best val loss from a checkpoint."""
        directory = Path(directory)
        state, optimizer_state, rng = read_trainer_files(directory)
        try:
            load_safetensors_model(self.raw_model, str(directory / WEIGHTS_FILE), strict=True, device=str(self.device))
        except RuntimeError as err:
            raise CheckpointError(
                f"{directory / WEIGHTS_FILE} does not fit this model ({str(err).splitlines()[0]}); resume "
                "with the model config saved in the checkpoint (GPT.load(dir))"
            ) from None
        try:
            self.optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{directory}: the optimizer state does not fit this model ({err})") from None
        self.iter_num = self.checkpoint_iter = int(state["iter"])
        self.best_val_loss = state.get("best_val_loss")
        self.last_val_loss = state.get("val_loss")
        self.last_train_loss = state.get("train_loss")
        self.elapsed_before = float(state.get("elapsed", 0.0))
        if state.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["grad_scaler"])
        if self.master and state.get("world_size", 1) == self.world_size:
            restore_random_streams(state, rng)
        else:  # other ranks (whose streams were not saved) get fresh, distinct ones
            torch.manual_seed(stream_seed(self.config.seed, "resume", self.rank, self.iter_num))

    def _check_best(self) -> None:
        """Make the best val loss the one `best/` really holds: a run killed after writing `best/`
        but before `last/` leaves `last/` claiming an older best (and `best/` may be missing
        between its two renames: recovered here)."""
        claimed = self.best_val_loss
        best = recover_checkpoint(self.out_dir, "best")
        state = read_state_json(best) if best is not None else None
        held = state.get("val_loss") if state is not None else None
        if held != claimed:
            if best is None:
                self.notes.append(f"no best/ checkpoint: last/ claimed best val {claimed}; the next evaluation writes one")
            elif held is None:
                self.notes.append(f"{best} holds no readable val loss; the next evaluation replaces it")
            else:
                self.notes.append(f"{best} holds val loss {held:.4f} (iteration {state.get('iter')}), not the {claimed} "
                                  "last/ records (the run was killed between writing them); continuing from best/'s")
            self.best_val_loss = held if isinstance(held, (int, float)) and math.isfinite(held) else None

    def _clean_stale(self) -> None:
        """Remove temporary directories left by a run killed mid-write."""
        if not self.master or self.out_dir is None or not self.out_dir.is_dir():
            return
        for name in ("last", "best"):
            for stale in list(self.out_dir.glob(f".{name}.tmp-*")) + list(self.out_dir.glob(f".{name}.old-*")):
                if (self.out_dir / name).is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
