"""Precision: what `--dtype auto` picks and why, bf16 autocast with fp32 master weights and
checkpoints, and the measured peak that MFU divides by."""

from __future__ import annotations

import json

import pytest
import torch

from nanolens.models import GPT, CharTokenizer, preset_config
from nanolens.models.costs import forward_flops_per_token, kv_cache_bytes_per_token, train_flops_per_token
from nanolens.training import TokenData, Trainer, TrainConfig
from nanolens.training import peak, runtime

TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 40


def test_auto_is_float32_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16_cpu", lambda: False)
    dtype, why = runtime.resolve_dtype("auto", "cpu", 768)
    assert dtype == torch.float32 and "no native bf16" in why


@pytest.mark.parametrize("speedup, expected", [(1.9, torch.bfloat16), (1.05, torch.float32)])
def test_auto_follows_the_measured_bf16_speedup_where_bf16_is_native(monkeypatch, speedup, expected):
    monkeypatch.setattr(runtime, "native_bf16_cpu", lambda: True)
    monkeypatch.setattr(runtime, "bf16_speedup", lambda width: speedup)
    dtype, why = runtime.resolve_dtype("auto", "cpu", 384)
    assert dtype == expected and f"{speedup:.2f}x" in why


def test_bf16_autocast_keeps_fp32_weights_optimizer_and_checkpoints_and_the_loss(tmp_path):
    results = {}
    for dtype in ("float32", "bfloat16"):
        tok = CharTokenizer.from_text(TEXT)
        torch.manual_seed(0)
        model = GPT(preset_config("gpt2", vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=16), tok)
        config = TrainConfig(max_iters=60, eval_interval=30, eval_iters=4, batch_size=8, dtype=dtype, sample_interval=0,
                             progress=False, verbose=False, plot=False, watch=False)
        trainer = Trainer(model, TokenData.from_text(TEXT, tok), config, tmp_path / dtype)
        summary = trainer.train()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert all(t.dtype == torch.float32 for s in trainer.optimizer.state.values() for t in s.values() if t.dim())
        assert all(p.dtype == torch.float32 for p in GPT.load(tmp_path / dtype / "last").parameters())
        logits, cache = GPT.load(tmp_path / dtype / "last").run_with_cache(torch.zeros(1, 8, dtype=torch.long))
        assert cache["blocks.0.hook_resid_post"].dtype == torch.float32  # what a user caches stays fp32
        results[dtype] = summary["val_loss"]
    assert results["bfloat16"] == pytest.approx(results["float32"], abs=0.05)


def test_the_measured_peak_is_cached_and_mfu_is_the_share_of_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(peak, "measure_matmul", lambda dtype, device: calls.append(dtype) or 5e10)
    assert peak.peak_flops("float32", "cpu", 1) == 5e10 == peak.peak_flops("float32", "cpu", 1)
    assert calls == ["float32"]  # measured once
    assert "1 threads" in next(iter(json.loads((tmp_path / "nanolens" / "peak.json").read_text())))
    assert peak.mfu(1000, 2.5e7, 5e10) == pytest.approx(0.5)


def test_flop_counts_match_nanogpts_estimate_for_gpt2_small():
    config = preset_config("gpt2", vocab_size=50304, n_layer=12, n_head=12, n_embd=768, block_size=1024)
    n = GPT(config).num_params()  # nanoGPT's N: every parameter but the position embeddings
    nanogpt = 6 * n + 12 * 12 * 768 * 1024
    assert train_flops_per_token(config) == pytest.approx(nanogpt, rel=2e-3)  # nanoGPT also counts biases and norms
    assert forward_flops_per_token(config) * 3 == train_flops_per_token(config)
    assert kv_cache_bytes_per_token(config) == 2 * 12 * 768 * 4
    assert kv_cache_bytes_per_token(preset_config("modern", n_kv_head=2, n_head=4, n_embd=128)) == 2 * 4 * 2 * 32 * 4
