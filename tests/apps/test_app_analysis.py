"""The explorer's computations (nanolens.apps.analysis and figures), without Streamlit."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

pytest.importorskip("plotly")

from nanolens.apps import analysis as A  # noqa: E402
from nanolens.apps import figures  # noqa: E402
from nanolens.models import GPT, CharTokenizer, GPTConfig  # noqa: E402
from nanolens.training.runs import distinct_checkpoints, find_checkpoints, run_of  # noqa: E402
from nanolens.training.state import STATE_FILE  # noqa: E402

TEXT = "the cat sat on the mat. the dog sat on the log.\n"


@pytest.fixture(scope="module")
def model() -> GPT:
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=16), tokenizer=tok).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m


def test_prompt_tokens_checks_input(model):
    tokens, strs, cropped = A.prompt_tokens(model, "the cat")
    assert tokens.shape == (1, 7) and strs == list("the cat") and not cropped
    with pytest.raises(A.ExplorerError, match="empty"):
        A.prompt_tokens(model, "")
    with pytest.raises(A.ExplorerError, match="vocabulary"):
        A.prompt_tokens(model, "the cat ☃")
    tokens, _, cropped = A.prompt_tokens(model, "the cat " * 10)
    assert cropped and tokens.shape[1] == 32
    with pytest.raises(A.ExplorerError, match="longer than"):
        A.prompt_tokens(model, "the cat " * 10, crop=False)


def test_default_prompt_is_spellable(model):
    text = A.default_prompt(model)
    assert text and A.prompt_tokens(model, text)[0].shape[1] <= 32


def test_attention_patterns_are_causal_distributions(model):
    data = A.attention_patterns(model, "the cat sat")
    assert data.layers == [0, 1] and data.tokens == list("the cat sat")
    for layer in data.layers:
        p = data.patterns[layer]
        assert p.shape == (4, 11, 11)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        assert np.allclose(np.triu(p, 1), 0)
    np.testing.assert_allclose(A.attends_to(data, 1, 2, 5), data.patterns[1][2, 5])
    np.testing.assert_allclose(A.attended_by(data, 1, 2, 5), data.patterns[1][2, :, 5])
    assert model.attached_hooks() == {}


def _forced_pattern(kind: str):
    """A hook that makes head 0 a perfect previous-token / first-token / induction head."""

    def hook(pattern, hook):
        q = pattern.shape[-2]
        forced = torch.zeros(q, q)
        for i in range(q):
            if kind == "previous":
                forced[i, max(i - 1, 0)] = 1
            elif kind == "first":
                forced[i, 0] = 1
            else:  # induction on [r, r] with half length L: i >= L looks at i - L + 1
                L = q // 2
                forced[i, i - L + 1 if i >= L else 0] = 1
        out = pattern.clone()
        out[:, 0] = forced
        return out

    return hook


@pytest.mark.parametrize("kind,column", [("previous", "previous_token"), ("first", "first_token"), ("induction", "induction")])
def test_head_scores_recognise_each_behaviour(model, kind, column):
    windows = A.corpus_windows(model.tokenizer.encode(TEXT * 4), 24, 6, seed=1)
    with model.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", _forced_pattern(kind))]):
        scores = A.head_scores(model, windows, induction_length=12)
    assert len(scores) == 8 and list(scores.columns) == ["layer", "head", *A.HEAD_SCORES]
    forced = scores[(scores["layer"] == 1) & (scores["head"] == 0)].iloc[0]
    assert forced[column] == pytest.approx(1.0)
    others = scores[scores["layer"] == 0]
    assert (others[column] < 0.99).all()
    assert scores[list(A.HEAD_SCORES)].apply(lambda c: c.between(0, 1)).all().all()


def test_logit_lens_last_row_is_the_model_output(model):
    text = "the dog sat"
    lens = A.logit_lens(model, text, k=4)
    assert lens.layers == ["embed", "L0", "L1"]
    assert lens.top_probs.shape == (3, 11, 4) and len(lens.top_tokens[0][0]) == 4
    probs = torch.softmax(model(text)[0], -1)
    top = probs.topk(4, dim=-1)
    np.testing.assert_allclose(lens.top_probs[-1], top.values.detach().numpy(), rtol=1e-4, atol=1e-6)
    ids = model.to_tokens(text)[0]
    expected = probs[torch.arange(10), ids[1:]].detach().numpy()
    np.testing.assert_allclose(lens.true_next_prob[-1], expected, rtol=1e-4, atol=1e-6)
    assert lens.true_next_prob.shape == (3, 10) and (lens.true_next_rank >= 0).all()
    assert lens.table(k=2).shape == (3, 11)
    assert model.attached_hooks() == {}


def test_hook_summary_lists_every_hook(model):
    summary, acts = A.hook_summary(model, "the cat")
    assert summary["hook"].tolist() == model.hook_names()
    fired = summary[summary.status == "fired"]
    assert "blocks.0.attn.hook_pattern" in acts and acts["blocks.0.attn.hook_pattern"].shape == (4, 7, 7)
    scores = summary.set_index("hook").loc["blocks.0.attn.hook_attn_scores"]
    assert np.isfinite(scores["mean"]) and np.isfinite(scores["std"])  # masked -inf left out
    off = summary.set_index("hook").loc["blocks.0.attn.hook_result"]
    assert off["status"] == "off: cfg.use_attn_result"
    assert len(fired) == len(acts)
    fig = figures.hook_diagram(summary, selected="blocks.0.hook_resid_pre")
    assert list(fig.data[0].customdata) == model.hook_names()


def test_figures_build(model):
    data = A.attention_patterns(model, "the cat sat")
    fig = figures.attention_figure(data, 1, selected_head=2)
    assert len([t for t in fig.data if t.type == "heatmap"]) == 4
    html = figures.token_view_html(data.tokens, A.attends_to(data, 1, 2, 4), 4)
    assert html.count("<span") == 11 and "position 4" in html
    lens = A.logit_lens(model, "the cat sat")
    assert figures.logit_lens_figure(lens).data[0].z.shape == (3, 11)
    assert figures.true_next_figure(lens).data[0].z.shape == (3, 10)
    lapse = figures.timelapse_figure(data.tokens, [data.patterns[0][0], data.patterns[1][0]], ["iter 0", "iter 10"], "L0H0")
    assert [f.name for f in lapse.frames] == ["iter 0", "iter 10"]
    json.loads(lapse.to_json())


# ---- runs and checkpoints -----------------------------------------------------------------------
def _checkpoint(path, model, it=None):
    model.save(path)
    if it is not None:
        (path / STATE_FILE).write_text(json.dumps({"iter": it, "val_loss": 1.0 / (it + 1), "train_config": {"max_iters": 100}}))


def test_sources_and_checkpoints(model, tmp_path):
    run = tmp_path / "runs" / "a"
    _checkpoint(run / "last", model, 20)
    _checkpoint(run / "best", model, 20)
    _checkpoint(run / "checkpoints" / "iter_000010", model, 10)
    _checkpoint(run / "checkpoints" / "iter_000000", model, 0)
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "iter": 20, "train_loss": 1, "val_loss": 1}) + "\n")
    names = [c.name for c in find_checkpoints(run)]
    assert names == ["checkpoints/iter_000000", "checkpoints/iter_000010", "best", "last"]
    assert [c.iter for c in distinct_checkpoints(find_checkpoints(run))] == [0, 10, 20]
    assert A.resolve_source(run / "best").kind == "checkpoint"
    assert A.resolve_source(run).kind == "run"
    src = A.resolve_source(tmp_path / "runs")
    assert src.kind == "runs" and src.runs == [run]
    assert run_of(run / "checkpoints" / "iter_000010") == run
    (tmp_path / "empty").mkdir()
    for bad, match in ((tmp_path / "empty", "not a nanolens run"), (tmp_path / "nope", "does not exist"),
                       (run / "metrics.jsonl", "not a folder"), ("", "no folder")):
        with pytest.raises(A.ExplorerError, match=match):
            A.resolve_source(bad)


def test_is_training(tmp_path, model):
    run = tmp_path / "run"
    _checkpoint(run / "last", model, 20)
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "log", "iter": 20, "train_loss": 2.0, "lr": 1e-3}) + "\n")
    assert A.is_training(run)  # 20 of 100 iterations, written just now
    assert not A.is_training(run, now=time.time() + 3600)  # gone quiet
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "iter": 100, "train_loss": 2.0, "val_loss": 2.1}) + "\n")
    assert not A.is_training(run)  # finished
    m = A.read_run_metrics(run)
    assert len(m.evals) == 1 and m.samples == []


def test_corpus_ids_falls_back_to_the_embedded_corpus(model):
    ids, where = A.corpus_ids(model, None, min_tokens=500)
    assert "sentiment" in where and len(ids) > 500 and ids.max() < model.config.vocab_size
    with pytest.raises(A.ExplorerError):
        A.corpus_windows(ids[:10], 24, 2)
