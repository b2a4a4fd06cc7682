"""Shared tiny fixtures for the model tests: models small enough to run in milliseconds."""

from __future__ import annotations

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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


HF_TEXT = ("I love this. I hate this. The weather today is lovely and I am happy. The food was awful and I was sad. "
           "I went up to my friend and said hello. Once upon a time there was a cat who sat on the mat.\n") * 8


@pytest.fixture(scope="session")
def hf_gpt2_dir(tmp_path_factory):
    """A tiny random GPT-2 checkpoint as `save_pretrained` writes it, with a byte-level BPE
    tokenizer (BOS = EOS = <|endoftext|>, as GPT-2's) saved beside it: a stand-in for
    `openai-community/gpt2` that needs no download. 4 layers, d_model 64, 512 tokens."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([HF_TEXT], trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(fast), n_positions=128, n_embd=64, n_layer=4, n_head=4,
                                     bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    directory = tmp_path_factory.mktemp("hf_gpt2")
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory
