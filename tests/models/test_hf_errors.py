"""`GPT.from_hf` on every kind of checkpoint file, and on bad input: each refusal names the
problem and the fix (unsupported architecture, missing weights, shape mismatch, a pickle that
would run code, a hub name while offline)."""

from __future__ import annotations

import json
import shutil

import huggingface_hub
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from nanolens.models import GPT, CheckpointError

transformers.logging.set_verbosity_error()


class Payload:
    """Any class: unpickling it would mean importing and running this module's code."""


@pytest.fixture(scope="module")
def hf():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=40, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture
def saved(hf, tmp_path):
    hf.save_pretrained(tmp_path / "gpt2")
    return tmp_path / "gpt2"


def logits_error(model: GPT, hf) -> float:
    ids = torch.randint(0, 40, (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(ids) - hf(ids).logits).abs().max().item()


# ---- every file layout loads ------------------------------------------------------------------
def test_sharded_safetensors(hf, tmp_path):
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert logits_error(GPT.from_hf(tmp_path), hf) < 1e-5


def test_pytorch_model_bin_with_hub_style_names_and_mask_buffers(hf, saved):
    """An old GPT-2 file: `pytorch_model.bin`, names without `transformer.`, mask buffers."""
    state = {k.removeprefix("transformer."): v for k, v in load_file(saved / "model.safetensors").items()}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    state["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    (saved / "model.safetensors").unlink()
    torch.save(state, saved / "pytorch_model.bin")
    assert logits_error(GPT.from_hf(saved), hf) < 1e-5


def test_dtype_auto_and_strings(saved):
    assert GPT.from_hf(saved, dtype="auto").W_E.dtype == torch.float32  # save_pretrained wrote float32
    assert GPT.from_hf(saved, dtype="bfloat16").W_E.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'float99'"):
        GPT.from_hf(saved, dtype="float99")


# ---- bad input --------------------------------------------------------------------------------
def test_an_unsupported_architecture_lists_the_supported_ones(saved):
    config = json.loads((saved / "config.json").read_text())
    config.update(architectures=["BertForMaskedLM"], model_type="bert")
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unsupported architecture BertForMaskedLM; nanolens reads: "
                                              r"GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, "
                                              r"Qwen2ForCausalLM, GPTNeoXForCausalLM"):
        GPT.from_hf(saved)


def test_an_unsupported_model_object_too():
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=20))
    with pytest.raises(CheckpointError, match="unsupported architecture model_type 'bert'"):
        GPT.from_hf(bert)


def test_missing_weight_files(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"holds no weights: none of model\.safetensors, model\.safetensors"
                                              r"\.index\.json, pytorch_model\.bin.*Download"):
        GPT.from_hf(saved)


def test_a_missing_shard(hf, tmp_path):
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"lists shards that are not in .*{shard.name}"):
        GPT.from_hf(tmp_path)


def test_no_config_json(saved):
    (saved / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        GPT.from_hf(saved)


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(saved):
    config = json.loads((saved / "config.json").read_text())
    config["n_inner"] = 48  # the file's MLP is 4 * 16 = 64 wide
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"shape mismatch: transformer\.h\.0\.mlp\.c_fc\.weight is \(16, 64\), "
                                              r"but config\.json implies \(16, 48\)"):
        GPT.from_hf(saved)


def test_a_missing_tensor_and_an_unknown_one(saved):
    state = load_file(saved / "model.safetensors")
    partial = {k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_proj.bias"}
    save_file(partial, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"lacks 1 tensor\(s\).*transformer\.h\.1\.mlp\.c_proj\.bias"):
        GPT.from_hf(saved)
    save_file({**state, "transformer.h.0.attn.q_norm.weight": torch.ones(8)}, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"tensors nanolens does not model: transformer\.h\.0\.attn\.q_norm"):
        GPT.from_hf(saved)


def test_a_pickle_that_needs_arbitrary_code_is_refused(saved):
    state = load_file(saved / "model.safetensors")
    (saved / "model.safetensors").unlink()
    torch.save({**state, "extra": Payload()}, saved / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"refused to load .*pytorch_model\.bin: unpickling it would run "
                                              r"arbitrary code \(.*Payload\).*none of it was run.*model\.safetensors"):
        GPT.from_hf(saved)


def test_a_damaged_file(saved):
    (saved / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        GPT.from_hf(saved)


def test_a_file_or_a_wrong_type_instead_of_a_directory(saved):
    with pytest.raises(CheckpointError, match="is a file; give the directory"):
        GPT.from_hf(saved / "config.json")
    with pytest.raises(CheckpointError, match="no directory"):
        GPT.from_hf(str(saved / "no such" / "dir"))
    with pytest.raises(TypeError, match="not int"):
        GPT.from_hf(3)


# ---- hub names --------------------------------------------------------------------------------
@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 with an empty hub cache of our own."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_hub_name_offline_without_a_cached_copy_says_how_to_give_a_directory(offline_hub):
    with pytest.raises(CheckpointError) as err:
        GPT.from_hf("openai-community/gpt2")
    message = str(err.value)
    assert "'openai-community/gpt2' is not a local directory" in message
    assert "hf download openai-community/gpt2 --local-dir DIR" in message and "GPT.from_hf('DIR')" in message


def test_a_hub_name_offline_loads_from_the_cache(offline_hub, saved, hf):
    snapshot = offline_hub / "models--tiny--gpt2" / "snapshots" / "0123abcd"
    shutil.copytree(saved, snapshot)
    (offline_hub / "models--tiny--gpt2" / "refs").mkdir()
    (offline_hub / "models--tiny--gpt2" / "refs" / "main").write_text("0123abcd")
    assert logits_error(GPT.from_hf("tiny/gpt2"), hf) < 1e-5
