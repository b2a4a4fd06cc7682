"""nanolens.models: config, components, the hooked GPT, tokenizers, generation, checkpoints."""

from .attention import KVCache
from .checkpoint import CheckpointError, load_model, save_model
from .config import VARIANTS, ConfigError, GPTConfig
from .gpt import GPT, HookNameError
from .presets import LADDER, PRESETS, preset_config
from .tokenizers import CharTokenizer, UnknownCharactersError, load_tokenizer

__all__ = [
    "GPT", "GPTConfig", "ConfigError", "VARIANTS", "KVCache", "HookNameError",
    "LADDER", "PRESETS", "preset_config",
    "CharTokenizer", "UnknownCharactersError", "load_tokenizer",
    "CheckpointError", "load_model", "save_model",
]
