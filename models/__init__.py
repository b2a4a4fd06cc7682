"""nanolens.models: config, components, the hooked GPT, tokenizers, generation, checkpoints.

Names are imported on first use, so light modules (`config`, `presets`) load without torch or
transformer-lens (this keeps `nanolens --help` fast).
"""

from __future__ import annotations

from nanolens._lazy import lazy_exports

_EXPORTS = {
    "GPT": "gpt", "HookNameError": "gpt",
    "GPTConfig": "config", "ConfigError": "config", "VARIANTS": "config",
    "KVCache": "attention",
    "LADDER": "presets", "PRESETS": "presets", "preset_config": "presets",
    "CharTokenizer": "tokenizers", "BPETokenizer": "tokenizers", "UnknownCharactersError": "tokenizers",
    "load_tokenizer": "tokenizers", "build_tokenizer": "tokenizers", "HFTokenizer": "hf_tokenizer",
    "from_hf": "hf", "to_hf": "hf_export",
    "Corpus": "data", "Story": "data", "CorpusError": "data", "load_corpus": "data",
    "TokenData": "batches", "DataError": "batches",
    "Trainer": "trainer", "TrainConfig": "trainer", "StopTraining": "trainer",
    "CheckpointError": "checkpoint", "load_model": "checkpoint", "save_model": "checkpoint",
    "Template": "finetune_data", "FinetuneDataError": "finetune_data", "SFTData": "finetune_data",
    "sft": "finetune", "RewardModel": "reward", "train_reward_model": "reward", "PPOConfig": "ppo", "PPOTrainer": "ppo",
    "train_dpo": "dpo", "evaluate_policy": "finetune_eval", "run_comparison": "finetune_eval",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
