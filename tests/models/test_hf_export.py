"""Models trained here handed to `transformers` with `model.to_hf(directory)`.

A `gpt2` preset model and a `modern` preset model are trained for a few steps on characters,
exported, and loaded back with `AutoModelForCausalLM` / `AutoTokenizer`: same logits (1e-5),
same greedy tokens, same token ids. Variants each family can express round-trip too; configs
no family computes the same way are refused with the field named.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from nanolens.models import GPT, CharTokenizer, CheckpointError, GPTConfig, preset_config
from nanolens.models.hf_export import hf_config_for
from nanolens.models.tokenizers import BPETokenizer

transformers.logging.set_verbosity_error()

TEXT = "to be or not to be, that is the question: whether 'tis nobler in the mind to suffer\n" * 8
SIZE = dict(n_layer=2, n_head=4, n_embd=32, block_size=64)
TOL = 1e-5


def trained(config: GPTConfig, tokenizer, steps: int = 25, seed: int = 0) -> GPT:
    """A model trained briefly on TEXT (plain AdamW on next-token loss), then in eval mode."""
    torch.manual_seed(seed)
    model = GPT(config, tokenizer=tokenizer)
    data = torch.tensor(tokenizer.encode(TEXT))
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 33, (8,), generator=gen)
        batch = torch.stack([data[s : s + 33] for s in starts])
        loss = model(batch[:, :-1], return_type="loss", targets=batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def check_round_trip(model: GPT, directory) -> transformers.PreTrainedModel:
    model.to_hf(directory)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    ids = torch.tensor([model.tokenizer.encode(TEXT[:40])])
    with torch.no_grad():
        error = (hf(ids).logits - model(ids)).abs().max().item()
    assert error <= TOL, f"max |logit error| {error:.2e}"
    prompt = ids[:, :6]
    ours = model.generate(prompt, max_new_tokens=30, temperature=0)
    theirs = hf.generate(prompt, max_new_tokens=30, min_new_tokens=30, do_sample=False, eos_token_id=None,
                         pad_token_id=0, attention_mask=torch.ones_like(prompt))
    assert ours.tolist() == theirs.tolist()
    return hf


@pytest.fixture(scope="module")
def chars() -> CharTokenizer:
    return CharTokenizer.from_text(TEXT)


@pytest.mark.parametrize("preset, family", [("gpt2", "GPT2LMHeadModel"), ("modern", "LlamaForCausalLM")])
def test_a_trained_preset_model_exports_and_transformers_agrees(preset, family, chars, tmp_path):
    model = trained(preset_config(preset, **SIZE, vocab_size=chars.vocab_size), chars)
    hf = check_round_trip(model, tmp_path / "hf")
    assert type(hf).__name__ == family
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer.encode(TEXT[:60], add_special_tokens=False) == chars.encode(TEXT[:60])
    assert tokenizer.decode(chars.encode(TEXT[:60])) == TEXT[:60]
    back = GPT.from_hf(tmp_path / "hf")  # and back into nanolens, tokenizer included
    ids = model.to_tokens(TEXT[:30])
    with torch.no_grad():
        assert (back(ids) - model(ids)).abs().max().item() <= TOL
    assert back.to_tokens(TEXT[:30]).tolist() == ids.tolist()


VARIANTS = {
    "gpt2-no-bias-untied-gelu_tanh": ("gpt2", dict(bias=False, tie_weights=False, mlp="gelu_tanh")),
    "gpt2-relu-d_mlp": ("gpt2", dict(mlp="relu", d_mlp=40)),
    "modern-gqa-llama3-untied": ("modern", dict(n_kv_head=2, tie_weights=False, rope_base=5e4, rope_scaling={
        "rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16})),
    "modern-geglu-linear-biases": ("modern", dict(mlp="geglu", bias=True, rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "qwen2-style": ("modern", dict(qkv_bias=True, n_kv_head=2)),
    "neox-parallel-partial": ("gpt2", dict(positional="rotary", rotary_dim=4, parallel_block=True, tie_weights=False)),
    "neox-sequential-no-bias": ("gpt2", dict(positional="rotary", bias=False)),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_each_family_expresses_round_trip(name, chars, tmp_path):
    preset, changes = VARIANTS[name]
    model = trained(preset_config(preset, **SIZE, vocab_size=chars.vocab_size, **changes), chars, steps=5)
    check_round_trip(model, tmp_path / name)
    back = GPT.from_hf(tmp_path / name)
    # Zero biases come back as biases, d_mlp=None as its value, GPT-2's dropouts as resid_pdrop.
    ignore = ("extra", "preset", "dropout", "bias", "qkv_bias", "mlp_bias", "d_mlp")
    same = {k: v for k, v in model.config.to_dict().items() if k not in ignore}
    assert {k: v for k, v in back.config.to_dict().items() if k not in ignore} == same
    assert back.config.mlp_width == model.config.mlp_width


def test_a_bpe_tokenizer_exports_too(tmp_path):
    bpe = BPETokenizer.train(TEXT, 300)
    model = trained(preset_config("modern", **SIZE, vocab_size=bpe.vocab_size), bpe, steps=2)
    model.to_hf(tmp_path / "hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer.encode(TEXT[:80], add_special_tokens=False) == bpe.encode(TEXT[:80])


def test_an_imported_model_exports_back_with_its_special_tokens(tmp_path):
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=40, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)).eval()
    model = GPT.from_hf(hf)
    model.to_hf(tmp_path / "again")
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["tie_word_embeddings"] and config["num_key_value_heads"] == 2
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "again").eval()
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        assert (again(ids).logits - hf(ids).logits).abs().max().item() <= TOL


REFUSED = {
    "alibi": (dict(positional="alibi"), "positional='alibi'"),
    "sinusoidal": (dict(positional="sinusoidal"), "positional='sinusoidal'"),
    "no positions": (dict(positional="none"), "positional='none'"),
    "post-norm": (dict(norm_position="post"), "norm_position='post'"),
    "average attention": (dict(attention="average"), "attention='average'"),
    "no residual": (dict(use_residual=False), "use_residual=False"),
    "no final norm": (dict(use_final_norm=False), "use_final_norm=False"),
    "no norm": (dict(norm="none"), "norm='none'"),
    "attention only": (dict(use_mlp=False), "use_mlp=False"),
    "gpt2 with rmsnorm": (dict(norm="rmsnorm"), "norm='rmsnorm'"),
    "gpt2 with gqa": (dict(n_kv_head=2), "n_kv_head=2"),
    "gpt2 with swiglu": (dict(mlp="swiglu"), "mlp='swiglu'"),
    "parallel gpt2": (dict(parallel_block=True), "parallel_block=True"),
    "llama with a plain mlp": (dict(positional="rotary", norm="rmsnorm", mlp="gelu"), "mlp='gelu'"),
    "llama with partial rotary": (dict(positional="rotary", norm="rmsnorm", mlp="swiglu", rotary_dim=4), "rotary_dim=4"),
    "llama with bias but no qkv bias": (dict(positional="rotary", norm="rmsnorm", mlp="swiglu", qkv_bias=False), "qkv_bias=False"),
    "neox with gqa": (dict(positional="rotary", n_kv_head=1), "n_kv_head=1"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_configs_no_family_expresses_are_refused_naming_the_field(name):
    changes, field = REFUSED[name]
    config = preset_config("gpt2", **SIZE, vocab_size=11, **changes)
    with pytest.raises(CheckpointError, match="cannot export to Hugging Face: " + field.replace("(", r"\(")):
        hf_config_for(config)


def test_a_refused_export_writes_nothing(tmp_path):
    model = GPT(preset_config("gpt2", **SIZE, vocab_size=11, positional="alibi"))
    with pytest.raises(CheckpointError, match="positional='alibi'"):
        model.to_hf(tmp_path / "out")
    assert not (tmp_path / "out").exists()
