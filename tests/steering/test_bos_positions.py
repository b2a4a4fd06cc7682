"""A model whose tokenizer prepends BOS (GPT-2, Pythia, Llama, as TransformerLens gives them):
every reader of a text's positions counts that token, and none reads the BOS position itself.

Each quantity is recomputed by hand from `model.to_tokens` (which prepends BOS) and
`run_with_cache`, independently of the code under test."""

from __future__ import annotations

import math

import pytest
import torch

from nanolens.models import GPT
from nanolens.probes import extract_activations
from nanolens.steering import contrast_pair, continuation_perplexity, margin_sweep, mean_difference, measure_scales

TEXTS = ["I love the cat", "I hate the rain today", "The food was awful"]


@pytest.fixture(scope="module")
def model(hf_gpt2_dir) -> GPT:
    model = GPT.from_hf(hf_gpt2_dir)
    assert model.bos_tokens() == [model.tokenizer.bos_token_id]
    return model


def test_probe_activations_are_read_with_bos_at_the_texts_own_positions(model):
    hook = "blocks.1.hook_resid_post"
    acts = extract_activations(model, TEXTS, hooks=[hook], positions="last", progress=False)
    means = extract_activations(model, TEXTS, hooks=[hook], positions="mean", progress=False)
    first = extract_activations(model, TEXTS, hooks=[hook], positions=0, progress=False)
    for i, text in enumerate(TEXTS):
        _, cache = model.run_with_cache(model.to_tokens(text))
        resid = cache[hook][0]
        assert torch.allclose(torch.as_tensor(acts[hook][i]), resid[-1], atol=1e-5)
        assert torch.allclose(torch.as_tensor(means[hook][i]), resid[1:].mean(0), atol=1e-5)  # BOS not averaged in
        assert torch.allclose(torch.as_tensor(first[hook][i]), resid[1], atol=1e-5)  # position 0 = the first text token
    assert first.token.tolist() == [model.tokenizer.encode(t)[0] for t in TEXTS]


def test_an_actadd_pair_is_aligned_with_the_prompt_positions_generation_sees(model):
    v = contrast_pair(model, "Love", "Hate", layer=2)
    direction = v.directions["blocks.2.hook_resid_pre"]
    n = 1 + max(len(model.tokenizer.encode(w)) for w in ("Love", "Hate"))
    assert direction.shape[0] == n
    assert float(direction[0].abs().max()) == 0.0  # the BOS position: the same token for both prompts
    _, cache_p = model.run_with_cache(model.to_tokens("Love"))
    _, cache_n = model.run_with_cache(model.to_tokens("Hate"))
    if len(model.tokenizer.encode("Love")) == len(model.tokenizer.encode("Hate")):
        expected = cache_p["blocks.2.hook_resid_pre"][0] - cache_n["blocks.2.hook_resid_pre"][0]
        assert torch.allclose(direction, expected, atol=1e-5)
    last = contrast_pair(model, "Love", "Hate", layer=2, position="last").directions["blocks.2.hook_resid_pre"]
    assert torch.allclose(last, cache_p["blocks.2.hook_resid_pre"][0, -1] - cache_n["blocks.2.hook_resid_pre"][0, -1], atol=1e-5)


def test_the_typical_norm_leaves_out_the_bos_position(model):
    hook = "blocks.2.hook_resid_pre"
    squares, count = 0.0, 0
    for text in TEXTS:
        _, cache = model.run_with_cache(model.to_tokens(text))
        squares += float(cache[hook][0, 1:].pow(2).sum())
        count += cache[hook].shape[1] - 1
    assert measure_scales(model, [hook], TEXTS)[hook] == pytest.approx(math.sqrt(squares / count), rel=1e-5)


def test_continuation_perplexity_scores_exactly_the_continuation(model):
    prompt, cont = "I love", " the cat"
    tokens = model.to_tokens(prompt + cont)
    n_cont = len(model.tokenizer.encode(cont))
    with torch.no_grad():
        logits = model(tokens)[0, :-1]
    logp = torch.log_softmax(logits, -1).gather(1, tokens[0, 1:, None])[:, 0]
    expected = math.exp(-float(logp[-n_cont:].mean()))
    assert continuation_perplexity(model, prompt, [cont])[0] == pytest.approx(expected, rel=1e-5)


def test_margins_sum_the_log_probability_of_the_continuations_alone(model):
    prefix, pos, neg = "The weather today is", " lovely", " awful"
    vector = mean_difference(model, ["I love the cat"], ["I hate the rain"], layer=1)
    df = margin_sweep(model, [prefix], [pos], [neg], {"md": vector}, [0.0], progress=False)

    def logprob(cont: str) -> float:
        tokens = model.to_tokens(prefix + cont)
        n = len(model.tokenizer.encode(prefix + cont)) - len(model.tokenizer.encode(prefix))
        with torch.no_grad():
            lp = torch.log_softmax(model(tokens)[0, :-1], -1).gather(1, tokens[0, 1:, None])[:, 0]
        return float(lp[-n:].sum())

    assert float(df.iloc[0]["margin"]) == pytest.approx(logprob(pos) - logprob(neg), abs=1e-4)
