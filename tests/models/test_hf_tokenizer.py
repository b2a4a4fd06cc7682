"""A Hugging Face tokenizer behind nanolens' tokenizer interface, and text through an imported model.

The tokenizers are trained here (a tiny byte-level BPE with the `tokenizers` library, wrapped in
`PreTrainedTokenizerFast` as a checkpoint's tokenizer would be), so nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from nanolens.models import GPT, HFTokenizer, load_tokenizer
from nanolens.models.tokenizers import char_span_to_tokens

transformers.logging.set_verbosity_error()

TEXT = "the cat sat on the mat. the dog sat on the log; a cat and a dog.\n" * 20
SAMPLE = "the cat sat on a log, then a dog"


def train_bpe(special: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT], trainer=trainer)
    return tok


@pytest.fixture(scope="module")
def fast():
    """What `AutoTokenizer.from_pretrained` gives for a GPT-2-like checkpoint: BOS = EOS."""
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(["<|endoftext|>"]), bos_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def gpt2_dir(fast, tmp_path_factory):
    """A tiny random GPT-2 checkpoint directory with that tokenizer saved beside it."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(fast), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    directory = tmp_path_factory.mktemp("gpt2_tok")
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def test_wrapping_a_transformers_tokenizer_encodes_as_it_does(fast):
    tok = HFTokenizer.from_transformers(fast)
    assert tok.encode(SAMPLE) == fast.encode(SAMPLE, add_special_tokens=False)
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    assert tok.vocab_size == len(fast)
    assert (tok.bos_token, tok.bos_token_id, tok.prepend_bos) == ("<|endoftext|>", fast.bos_token_id, True)
    assert tok.id_to_str(tok.encode(" cat")[0]) == " cat"
    spans = tok.offsets(SAMPLE)
    assert "".join(SAMPLE[a:b] for a, b in spans) == SAMPLE and len(spans) == len(tok.encode(SAMPLE))
    assert char_span_to_tokens(tok, SAMPLE, 4, 7) == (1, 2)  # "cat" is token 1 (" cat")


def test_a_directory_tokenizer_and_its_special_tokens(fast, tmp_path):
    fast.save_pretrained(tmp_path)
    tok = HFTokenizer.from_directory(tmp_path)
    assert tok.encode(SAMPLE) == fast.encode(SAMPLE, add_special_tokens=False)
    assert tok.bos_token == tok.eos_token == "<|endoftext|>"
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        HFTokenizer.from_directory(tmp_path / "nowhere")


def test_no_bos_token_means_none_is_prepended():
    """Qwen2's tokenizer names no BOS token, and TransformerLens-style prepending then adds nothing."""
    tok = HFTokenizer(train_bpe(["<|endoftext|>"]), eos_token="<|endoftext|>")
    assert tok.bos_token_id is None and not tok.prepend_bos
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        HFTokenizer(train_bpe([]), bos_token="<s>")


def test_save_and_load_tokenizer_round_trip(fast, tmp_path):
    tok = HFTokenizer.from_transformers(fast, prepend_bos=False)
    tok.save(tmp_path / "tokenizer.json")
    back = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(back, HFTokenizer) and back.to_dict() == tok.to_dict()
    assert back.encode(SAMPLE) == tok.encode(SAMPLE) and back.prepend_bos is False


def test_from_hf_picks_up_the_tokenizer_and_takes_text(gpt2_dir, fast):
    model = GPT.from_hf(gpt2_dir)
    bos = fast.bos_token_id
    assert isinstance(model.tokenizer, HFTokenizer) and model.cfg.default_prepend_bos
    tokens = model.to_tokens(SAMPLE)
    assert tokens[0].tolist() == [bos] + fast.encode(SAMPLE)
    assert model.bos_tokens() == [bos] and model.bos_tokens(prepend_bos=False) == []
    assert model.to_tokens(SAMPLE, prepend_bos=False)[0].tolist() == fast.encode(SAMPLE)
    assert model.to_str_tokens("the cat")[:2] == ["<|endoftext|>", "the"]
    assert model.to_single_token(" cat") == fast.encode(" cat")[0]  # no BOS for a single token
    out = model.generate("the cat", max_new_tokens=5, temperature=0)
    assert isinstance(out, str) and out.startswith("the cat") and not out.startswith("<|endoftext|>")
    assert model.generate(tokens, max_new_tokens=3, temperature=0)[0, 0].item() == bos
    pieces = "".join(model.generate_stream("the cat", max_new_tokens=5, temperature=0))
    assert "the cat" + pieces == out


def test_an_imported_model_with_its_tokenizer_saves_and_loads_as_a_nanolens_checkpoint(gpt2_dir, tmp_path):
    model = GPT.from_hf(gpt2_dir)
    model.save(tmp_path / "run")
    back = GPT.load(tmp_path / "run")
    assert isinstance(back.tokenizer, HFTokenizer)
    assert back.to_tokens(SAMPLE).tolist() == model.to_tokens(SAMPLE).tolist()


def test_tokenizer_argument(gpt2_dir, fast):
    assert GPT.from_hf(gpt2_dir, tokenizer=False).tokenizer is None
    model = GPT.from_hf(gpt2_dir, tokenizer=fast)
    assert isinstance(model.tokenizer, HFTokenizer) and model.tokenizer.encode(SAMPLE) == fast.encode(SAMPLE)
