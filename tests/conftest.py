"""Shared tiny fixtures for the model tests: models small enough to run in milliseconds."""

from __future__ import annotations

import pytest
import torch

from nanolens.models import GPT, CharTokenizer, GPTConfig

# Test models are tiny: one intra-op thread is fastest for them, and several threads spin-wait
# badly (tens of times slower) when other processes share the cores.
torch.set_num_threads(1)

TEXT = "to be or not to be, that is the question.\n"

# A tiny base: every test config overrides from here (n_embd 16 / 4 heads: d_head 4, even for RoPE).
TINY = dict(vocab_size=13, block_size=16, n_layer=2, n_head=4, n_embd=16)


def scramble(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Re-draw every parameter with a larger spread, so logits are far apart (no argmax near-ties
    that float rounding between two equivalent code paths could flip) and no bias or norm
    weight sits at a special value (0 or 1) that would hide a bug."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * std
            p.copy_(noise + 1.0 if name.endswith(".w") else noise)  # norm gains stay near 1
    return model


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one intra-op thread (a test that changes it gets it back afterwards):
    results independent of the thread count, and fast on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer.from_text(TEXT)


@pytest.fixture
def make_model():
    """Factory: `make_model(config=None, seed=0, tokenizer=None, std=0.3, **overrides)` -> a scrambled
    GPT in eval mode (built from TINY plus overrides, or from `config` plus overrides)."""

    def make(config: GPTConfig | None = None, seed: int = 0, tokenizer=None, std: float = 0.3, **overrides) -> GPT:
        if tokenizer is not None:
            overrides["vocab_size"] = tokenizer.vocab_size
        config = GPTConfig(**{**TINY, **overrides}) if config is None else config.replace(**overrides)
        torch.manual_seed(seed)
        model = GPT(config, tokenizer=tokenizer)
        return scramble(model, seed, std).eval()

    return make


@pytest.fixture
def tokens() -> torch.Tensor:
    """A fixed batch of 2 sequences of 12 ids below TINY's vocab_size."""
    return torch.randint(0, TINY["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1))
