"""Checkpoint directories: config.json + model.safetensors (+ tokenizer.json), written atomically.

Round trips for every preset, a failure in the middle of a save (the old checkpoint must survive
whole, with no temporary directories left), and clear CheckpointErrors for damaged directories.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from nanolens.models import GPT, PRESETS, CharTokenizer, CheckpointError, preset_config
from nanolens import files as files_module
from nanolens.models import checkpoint as checkpoint_module

TOKENIZER = CharTokenizer("abcdefg")
IDS = torch.tensor([[0, 3, 1, 6, 2, 5, 4, 1]])


def tiny(preset: str = "gpt2", seed: int = 0, **overrides) -> GPT:
    settings = dict(n_embd=16, block_size=8, vocab_size=TOKENIZER.vocab_size)
    if PRESETS[preset].settings.get("n_layer", 0) > 2:
        settings["n_layer"] = 2
    config = preset_config(preset, **{**settings, **overrides})
    model = GPT(config, tokenizer=TOKENIZER)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def leftovers(parent: Path, keep: str = "run") -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != keep)


# ---- round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize("preset", list(PRESETS))
def test_round_trip_every_preset(tmp_path, preset):
    model = tiny(preset)
    path = model.save(tmp_path / "run")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    loaded = GPT.load(path)
    assert loaded.config == model.config
    assert loaded.tokenizer.chars == TOKENIZER.chars
    assert not loaded.training
    for (name, a), (name_b, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert name == name_b and torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(loaded(IDS), model(IDS))
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("overrides", [{"n_kv_head": 2}, {"tie_weights": False}, {"bias": False, "mlp": "geglu"}])
def test_round_trip_variants(tmp_path, overrides):
    model = tiny("gpt2", n_head=4, **overrides)
    loaded = GPT.load(model.save(tmp_path / "run"))
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(IDS), model(IDS))


def test_tied_weights_stay_tied_after_load(tmp_path):
    loaded = GPT.load(tiny("gpt2").save(tmp_path / "run"))
    assert loaded.unembed.weight is loaded.embed.W_E
    with torch.no_grad():
        loaded.embed.W_E[0, 0] = 123.0
    assert loaded.W_U[0, 0].item() == 123.0
    untied = GPT.load(tiny("gpt2", tie_weights=False).save(tmp_path / "untied"))
    assert untied.unembed.weight is not untied.embed.W_E


def test_model_without_tokenizer_round_trips(tmp_path):
    model = tiny("gpt2")
    model.tokenizer = None
    path = model.save(tmp_path / "run")
    assert not (path / "tokenizer.json").exists()
    assert GPT.load(path).tokenizer is None


def test_save_replaces_an_existing_checkpoint(tmp_path):
    tiny("gpt2", seed=0).save(tmp_path / "run")
    newer = tiny("gpt2", seed=1)
    newer.save(tmp_path / "run")
    with torch.no_grad():
        assert torch.equal(GPT.load(tmp_path / "run")(IDS), newer(IDS))
    assert leftovers(tmp_path) == []


def test_the_files_are_plain_safetensors_and_json(tmp_path):
    from safetensors.torch import load_file

    path = tiny("gpt2").save(tmp_path / "run")
    assert json.loads((path / "config.json").read_text())["preset"] == "gpt2"
    tensors = load_file(path / "model.safetensors")  # no pickle anywhere
    assert "embed.W_E" in tensors and tensors["embed.W_E"].shape == (TOKENIZER.vocab_size, 16)


# ---- atomic writes ---------------------------------------------------------------------------
def test_a_failure_mid_write_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    old = tiny("gpt2", seed=0)
    old.save(tmp_path / "run")
    before = snapshot(tmp_path / "run")

    def crash(model, filename, metadata=None):  # half a file, then the disk fills up
        Path(filename).write_bytes(b"\x00" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_safetensors_model", crash)
    with pytest.raises(OSError, match="No space"):
        tiny("gpt2", seed=1).save(tmp_path / "run")
    assert snapshot(tmp_path / "run") == before
    assert leftovers(tmp_path) == []  # no temporary directory left behind
    monkeypatch.undo()
    with torch.no_grad():
        assert torch.equal(GPT.load(tmp_path / "run")(IDS), old(IDS))


def test_a_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    def crash(model, filename, metadata=None):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(checkpoint_module, "save_safetensors_model", crash)
    with pytest.raises(RuntimeError, match="interrupted"):
        tiny("gpt2").save(tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_swapping_in_restores_the_old_checkpoint(tmp_path, monkeypatch):
    """The new directory is renamed over the old in two steps; if the second fails, the old
    checkpoint must be put back where it was."""
    tiny("gpt2", seed=0).save(tmp_path / "run")
    before = snapshot(tmp_path / "run")
    real_replace = os.replace

    def flaky_replace(src, dst):
        if ".tmp-" in Path(src).name and Path(dst) == tmp_path / "run":
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(files_module.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="rename failed"):
        tiny("gpt2", seed=1).save(tmp_path / "run")
    monkeypatch.undo()
    assert snapshot(tmp_path / "run") == before
    assert leftovers(tmp_path) == []


# ---- damaged directories ---------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path) -> Path:
    return tiny("gpt2").save(tmp_path / "run")


def test_refuses_a_path_that_is_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="is not a directory"):
        GPT.load(tmp_path / "nothing_here")
    (tmp_path / "file.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is not a directory"):
        GPT.load(tmp_path / "file.pt")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_refuses_a_directory_missing_a_file(saved, name):
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match=f"missing {name}"):
        GPT.load(saved)


@pytest.mark.parametrize(
    "content",
    ['{"n_layer": 2, ', "[1, 2, 3]", '"text"', b"\xff\xfe\x00binary"],
    ids=["truncated_json", "json_list", "json_string", "binary"],
)
def test_refuses_a_corrupt_config(saved, content):
    target = saved / "config.json"
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CheckpointError, match="config.json is not a valid model config"):
        GPT.load(saved)


@pytest.mark.parametrize(
    "change, hint",
    [({"positional": "spiral"}, "unknown positional variant 'spiral'"),
     ({"n_embd": 15}, "not divisible by n_head"),
     ({"colour": "red"}, r"unknown GPTConfig field\(s\) \['colour'\]")],
)
def test_refuses_an_invalid_config_and_says_why(saved, change, hint):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=f"config.json is not a valid model config: .*{hint}"):
        GPT.load(saved)


def test_refuses_a_truncated_weights_file(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors does not match config.json or is corrupt"):
        GPT.load(saved)


def test_refuses_weights_of_another_architecture(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(CheckpointError, match=r"(?s)model.safetensors does not match config.json.*blocks\.2\."):
        GPT.load(saved)


@pytest.mark.parametrize("content", ["{not json", '{"kind": "unheard-of"}', '{"chars": ["a"]}'])
def test_refuses_a_corrupt_tokenizer(saved, content):
    (saved / "tokenizer.json").write_text(content)
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        GPT.load(saved)


def test_refuses_a_tokenizer_larger_than_the_model_vocabulary(saved):
    CharTokenizer("abcdefghijklmnop").save(saved / "tokenizer.json")
    with pytest.raises(CheckpointError, match="16 tokens.*vocab_size 7"):
        GPT.load(saved)
