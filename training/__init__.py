"""nanolens.training: nanoGPT's recipe for your own text, shown while it learns and safe to kill.

    from nanolens.training import TokenData, TrainConfig, Trainer
    trainer = Trainer(model, TokenData.from_text(text, model.tokenizer), TrainConfig(max_iters=2000), "runs/NAME")
    trainer.train()        # progress bar, samples, metrics.jsonl, best/ and last/; resume=True continues

Modules: `config` (TrainConfig, config files), `batches` (TokenData), `trainer` (the loop),
`state` (what a resume needs on disk), `runs` (run and checkpoint folders), `metrics`,
`plots`, `runtime` (device, dtype, data-parallel processes), `recipe` (corpus -> model).
"""

from .batches import DataError, TokenData
from .config import TrainConfig
from .metrics import StopTraining, read_metrics
from .plots import plot_losses
from .recipe import model_and_data
from .runs import find_checkpoints, find_runs, model_dir, open_model, run_of
from .runtime import resolve_device
from .trainer import Trainer

__all__ = [
    "DataError", "StopTraining", "TokenData", "TrainConfig", "Trainer", "find_checkpoints", "find_runs", "model_and_data",
    "model_dir", "open_model", "plot_losses", "read_metrics", "resolve_device", "run_of",
]
