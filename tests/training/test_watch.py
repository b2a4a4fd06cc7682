"""What the trainer watches inside the model: head scores, the logit lens, residual norms and
gradient norms in metrics.jsonl; MFU against the measured peak; instability flags."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from nanolens.models import GPT, CharTokenizer, preset_config
from nanolens.training import TokenData, Trainer, TrainConfig
from nanolens.training.watch import Instability, attention_scores, repeated_tokens

QUIET = dict(sample_interval=0, progress=False, verbose=False, plot=False)


def rows(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def train(text, run, **settings):
    tok = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    arch = settings.pop("arch", {})
    model = GPT(preset_config("gpt2", vocab_size=tok.vocab_size, **{**dict(n_layer=2, n_head=2, n_embd=32, block_size=32), **arch}), tok)
    trainer = Trainer(model, TokenData.from_text(text, tok), TrainConfig(**{**QUIET, **settings}), run)
    trainer.train()
    return model, trainer


def test_an_induction_head_forms_in_a_two_layer_model_trained_on_repeated_spans(tmp_path):
    """Spans of random letters (4 to 12 long) each said twice: only a head that looks up the
    token after the current token's earlier occurrence can predict the second copy."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    text = "".join((lambda s: s + s + " ")("".join(rng.choice(letters) for _ in range(rng.randint(4, 12))))
                   for _ in range(4000))
    train(text, tmp_path / "run", arch=dict(n_head=4, n_embd=64, use_mlp=False), max_iters=1000, eval_interval=250,
          eval_iters=4, batch_size=32, learning_rate=1e-3, min_lr=1e-4, lr_decay_iters=3000, warmup_iters=20)
    induction = [np.max(r["watch"]["induction"]) for r in rows(tmp_path / "run", "eval")]
    assert induction[0] < 0.1 and induction[-1] > 0.2 and induction[-1] > 4 * induction[0], induction


def test_a_learning_rate_100x_too_high_is_flagged_and_a_sane_one_is_not(tmp_path):
    text = "the cat sat on the mat. the dog sat on the log.\n" * 200
    settings = dict(max_iters=150, eval_interval=50, eval_iters=2, batch_size=8, warmup_iters=10, log_interval=5)
    _, sane = train(text, tmp_path / "sane", learning_rate=1e-3, min_lr=1e-4, **settings)
    _, hot = train(text, tmp_path / "hot", learning_rate=1e-1, min_lr=1e-2, **settings)
    assert sane.flags == [] and not [r for r in rows(tmp_path / "sane", "eval") if r.get("flags")]
    flagged = [r for r in rows(tmp_path / "hot", "eval") if r.get("flags")]
    assert flagged and "attention entropy collapse" in flagged[0]["flags"][0]
    assert hot.flags and hot.flags[0]["iter"] == flagged[0]["iter"]


def test_rows_carry_the_watch_mfu_and_gradient_norms(tmp_path):
    model, _ = train("abcabcabd " * 300, tmp_path / "run", max_iters=20, eval_interval=10, eval_iters=1, batch_size=4,
                     log_interval=5, grad_clip=0.5)
    logs, evals = rows(tmp_path / "run", "log"), rows(tmp_path / "run", "eval")
    assert all(0 < r["mfu"] < 1 and r["grad_norm"] > 0 and r["grad_norm_max"] >= r["grad_norm"] for r in logs)
    assert sum(r["clipped"] for r in logs) > 0  # a clip of 0.5 bites on a fresh model
    watch = evals[-1]["watch"]
    assert watch["layers"] == [0, 1] and np.shape(watch["previous_token"]) == (2, 2) == np.shape(watch["entropy"])
    assert len(watch["lens_loss"]) == len(watch["resid_norm"]) == 2
    # the last layer's lens loss is the model's own loss on those windows
    windows = torch.tensor(TokenData.from_text("abcabcabd " * 300, model.tokenizer).split("val")[: 4 * 32]).view(4, 32)
    with torch.no_grad():
        assert watch["lens_loss"][-1] == pytest.approx(float(model(windows, return_type="loss")), abs=1e-4)


def test_attention_scores_read_a_planted_previous_token_head():
    """A hook plants a perfect previous-token pattern in head 0 and a uniform one in head 1."""
    tok = CharTokenizer.from_text("abcdefgh")
    model = GPT(preset_config("gpt2", vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=8, block_size=16), tok).eval()

    def plant(pattern, hook):
        n = pattern.shape[-1]
        previous = torch.diag(torch.ones(n - 1), -1)
        previous[0, 0] = 1.0
        uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
        return torch.stack([previous, uniform]).expand_as(pattern).clone()

    model.add_hook("blocks.0.attn.hook_pattern", plant, is_permanent=True)
    scores = attention_scores(model, torch.randint(0, tok.vocab_size, (2, 8)), repeated_tokens(model, 4))
    assert scores["previous_token"][0].tolist() == pytest.approx([1.0, np.mean(1 / np.arange(2, 9))], abs=1e-6)
    assert scores["entropy"][0, 0] == pytest.approx(0.0, abs=1e-6) and scores["entropy"][0, 1] > 1.0
    assert scores["first_token"][0, 1] == pytest.approx(np.mean(1 / np.arange(2, 9)), abs=1e-6)


def test_instability_flags_spikes_and_blow_ups_not_noise():
    watcher = Instability()
    quiet = [watcher.step(2.0 + 0.05 * (-1) ** i, 1.0 + 0.1 * (i % 3)) for i in range(30)]
    assert not any(quiet)
    assert "loss spike" in watcher.step(4.0, 1.0)[0]
    assert "gradient-norm blow-up" in watcher.step(2.0, 50.0)[0]
