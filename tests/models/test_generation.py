"""Fused vs materialised attention, and generation (issue 2, acceptance point 3).

Greedy decoding with the KV cache must give exactly the tokens of re-running the whole (cropped)
context every step, for learned, rotary and ALiBi positions, also after the text outgrows
block_size. Models are scrambled (see conftest) so logits are well separated and an argmax is
never a near-tie that rounding could flip.
"""

from __future__ import annotations

import pytest
import torch

from nanolens.models import UnknownCharactersError

PATTERN_HOOK = (lambda name: name.endswith("hook_pattern"), lambda t, hook: None)

ATTENTION_CASES = {
    "learned": dict(positional="learned"),
    "sinusoidal": dict(positional="sinusoidal"),
    "rotary": dict(positional="rotary"),
    "alibi": dict(positional="alibi"),
    "none": dict(positional="none"),
    "gqa": dict(n_kv_head=2),
    "mqa-rotary": dict(n_kv_head=1, positional="rotary"),
    "gqa-alibi": dict(n_kv_head=2, positional="alibi"),
    "alibi-3-heads": dict(positional="alibi", n_head=3, n_embd=12),
    "modern": dict(positional="rotary", norm="rmsnorm", mlp="swiglu", bias=False),
}


# ---- fused vs materialised attention ------------------------------------------------------------
@pytest.mark.parametrize("changes", ATTENTION_CASES.values(), ids=ATTENTION_CASES.keys())
def test_fused_and_materialised_attention_agree(make_model, changes) -> None:
    model = make_model(**changes)
    x = torch.randint(0, model.config.vocab_size, (3, 16), generator=torch.Generator().manual_seed(0))
    fused = model(x)
    materialised = model.run_with_hooks(x, fwd_hooks=[PATTERN_HOOK])
    torch.testing.assert_close(materialised, fused, atol=1e-5, rtol=0)
    # The materialised path is really taken when the pattern is hooked, and is causal.
    seen = []
    model.run_with_hooks(x, fwd_hooks=[("blocks.0.attn.hook_pattern", lambda t, hook: seen.append(t))])
    (pattern,) = seen
    assert pattern.shape == (3, model.config.n_head, 16, 16)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, model.config.n_head, 16))
    assert pattern.triu(1).abs().max() == 0
    assert model.attached_hooks() == {}


def test_hooking_the_scores_also_materialises_and_edits_take_effect(make_model) -> None:
    model = make_model(positional="rotary", n_kv_head=2)
    x = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(0))

    def forbid_all_but_self(scores, hook):  # every query may only look at itself
        eye = torch.eye(scores.shape[-1], dtype=torch.bool)
        return scores.masked_fill(~eye, float("-inf"))

    edited = model.run_with_hooks(x, fwd_hooks=[(lambda n: n.endswith("hook_attn_scores"), forbid_all_but_self)])
    assert not torch.allclose(edited, model(x), atol=1e-3)
    _, cache = model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_pattern"))
    assert set(cache.keys()) == {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"}


def test_fused_path_runs_unless_scores_or_pattern_are_observed(make_model, monkeypatch) -> None:
    model = make_model(n_kv_head=2)
    x = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(0))
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    model(x)
    assert len(calls) == 2
    model.run_with_cache(x, names_filter=lambda n: "resid" in n or n.endswith(("hook_q", "hook_z")))
    assert len(calls) == 4, "caching other hooks must keep the fused kernel"
    model.run_with_hooks(x, fwd_hooks=[("blocks.1.attn.hook_attn_scores", lambda t, hook: None)])
    assert len(calls) == 5, "only the observed layer materialises its pattern"
    model.run_with_cache(x)
    assert len(calls) == 5


@pytest.mark.parametrize("changes", [ATTENTION_CASES[k] for k in ("learned", "rotary", "alibi", "gqa")] + [dict(attention="average")],
                         ids=["learned", "rotary", "alibi", "gqa", "average"])
@pytest.mark.parametrize("materialise", [False, True], ids=["fused", "materialised"])
def test_chunked_prefill_with_kv_cache_equals_one_forward(make_model, changes, materialise) -> None:
    """Feeding the context in pieces through the cache (queries offset from keys, several at a
    time) gives the logits of one forward over the whole context."""
    model = make_model(**changes)
    x = torch.randint(0, 13, (2, 16), generator=torch.Generator().manual_seed(4))
    hooks = [PATTERN_HOOK] if materialise else []
    whole = model.run_with_hooks(x, fwd_hooks=hooks)
    cache = model.new_kv_cache()
    pieces = [model.run_with_hooks(x[:, a:b], kv_cache=cache, fwd_hooks=hooks) for a, b in ((0, 5), (5, 6), (6, 13), (13, 16))]
    assert cache.length == 16
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="block_size"):
        model(x[:, :1], kv_cache=cache)  # the cache is full: one more token would pass the context


@pytest.mark.parametrize("changes", [ATTENTION_CASES[k] for k in ("learned", "rotary", "alibi", "gqa")], ids=["learned", "rotary", "alibi", "gqa"])
def test_cached_decoding_matches_under_materialised_attention(make_model, changes) -> None:
    model = make_model(**changes)
    prompt = torch.tensor([[1, 2, 3]])
    fused = model.generate(prompt, max_new_tokens=20, temperature=0)
    materialised = model.generate(prompt, max_new_tokens=20, temperature=0, fwd_hooks=[PATTERN_HOOK])
    assert torch.equal(fused, materialised)


# ---- greedy: KV cache == no cache -----------------------------------------------------------------
# Seeds whose scrambled model keeps producing varied text (random models soon fall into loops).
VARIED_SEED = {"learned": 1, "rotary": 1, "alibi": 0}


def _decode_with_last_resid(model, prompt, **kwargs):
    """Generate, also recording the last position's final residual stream at every step."""
    seen = []
    hook = ("blocks.1.hook_resid_post", lambda t, hook: seen.append(t[:, -1].clone()))
    return model.generate(prompt, fwd_hooks=[hook], **kwargs), torch.stack(seen)


@pytest.mark.parametrize("positional", ["learned", "rotary", "alibi"])
@pytest.mark.parametrize("block_size", [128, 32], ids=["within-block", "past-block-cropped"])
def test_greedy_kv_cache_equals_uncached_for_100_tokens(make_model, positional, block_size) -> None:
    model = make_model(seed=VARIED_SEED[positional], std=0.6, positional=positional, block_size=block_size, n_kv_head=2)
    prompt = torch.randint(0, 13, (2, 6), generator=torch.Generator().manual_seed(3))
    cached, cached_resid = _decode_with_last_resid(model, prompt, max_new_tokens=100, temperature=0, use_kv_cache=True)
    uncached, uncached_resid = _decode_with_last_resid(model, prompt, max_new_tokens=100, temperature=0, use_kv_cache=False)
    assert cached.shape == (2, 106)
    assert torch.equal(cached[:, :6], prompt)
    assert torch.equal(cached, uncached)
    # Not only the argmax: every step's state agrees, so a cache bug cannot hide behind a loop.
    torch.testing.assert_close(cached_resid, uncached_resid, atol=1e-4, rtol=1e-4)
    assert len(set(cached[:, 6:].flatten().tolist())) >= 3, "a near-constant continuation proves little"


@pytest.mark.parametrize("positional", ["learned", "rotary", "alibi"])
def test_seeded_sampling_with_kv_cache_equals_uncached_past_block_size(make_model, positional) -> None:
    """Sampling keeps the text varied for all 100 steps; the same seed must give the same text."""
    model = make_model(positional=positional, block_size=24)
    prompt = torch.randint(0, 13, (2, 4), generator=torch.Generator().manual_seed(5))
    kwargs = dict(max_new_tokens=100, temperature=1.0, seed=3)
    cached = model.generate(prompt, use_kv_cache=True, **kwargs)
    assert torch.equal(cached, model.generate(prompt, use_kv_cache=False, **kwargs))
    assert len(set(cached[0, -30:].tolist())) >= 4


def test_uncached_generation_is_plain_argmax_of_the_cropped_window(make_model) -> None:
    """The reference itself: each new token is the argmax of a forward over the last block_size."""
    model = make_model(block_size=8)
    seq = torch.tensor([[4, 1, 7]])
    out = model.generate(seq, max_new_tokens=12, temperature=0, use_kv_cache=False)
    for _ in range(12):
        seq = torch.cat([seq, model(seq[:, -8:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


def test_average_attention_generates_with_cache(make_model) -> None:
    model = make_model(attention="average", block_size=12)
    prompt = torch.tensor([[1, 2]])
    assert torch.equal(
        model.generate(prompt, max_new_tokens=30, temperature=0),
        model.generate(prompt, max_new_tokens=30, temperature=0, use_kv_cache=False),
    )


# ---- hooks during generation ---------------------------------------------------------------------
def test_hooks_during_cached_generation_see_one_position_after_the_prompt(make_model) -> None:
    model = make_model(block_size=32)
    shapes = []
    hook = ("blocks.0.hook_resid_post", lambda t, hook: shapes.append(tuple(t.shape)))
    model.generate(torch.zeros(2, 5, dtype=torch.long), max_new_tokens=6, temperature=0, fwd_hooks=[hook])
    assert shapes == [(2, 5, 16)] + [(2, 1, 16)] * 5
    shapes.clear()
    model.generate(torch.zeros(2, 5, dtype=torch.long), max_new_tokens=6, temperature=0, use_kv_cache=False, fwd_hooks=[hook])
    assert shapes == [(2, n, 16) for n in range(5, 11)]
    assert model.attached_hooks() == {}


def test_generation_hooks_steer_every_step(make_model) -> None:
    """A hook that adds a large direction changes the tokens, also at [batch, 1] decode steps."""
    model = make_model()
    prompt = torch.tensor([[1, 2, 3]])
    plain = model.generate(prompt, max_new_tokens=10, temperature=0)
    target = int(plain[0, -1]) ^ 1
    push = model.W_U[:, target] * 100.0

    def steer(resid, hook):
        return resid + push

    steered = model.generate(prompt, max_new_tokens=10, temperature=0, fwd_hooks=[("blocks.1.hook_resid_post", steer)])
    assert steered[0, 3:].tolist() == [target] * 10
    assert model.attached_hooks() == {}


def test_generate_restores_training_mode_and_removes_hooks_on_error(make_model) -> None:
    model = make_model(dropout=0.1).train()

    def boom(t, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.generate(torch.tensor([[1]]), max_new_tokens=3, fwd_hooks=[("blocks.0.hook_resid_pre", boom)])
    assert model.training
    assert model.attached_hooks() == {}

def test_generated_ids_train_with_autograd(make_model) -> None:
    """The model runs under inference mode while it generates; what comes out must still feed a
    training step (as PPO and fine-tuning do with sampled text), each streamed step included."""
    model = make_model().train()
    prompt = torch.tensor([[1, 2, 3]])
    steps = list(model.generate_stream(prompt, max_new_tokens=4))
    assert not any(step.is_inference() for step in steps)
    model(steps[-1].unsqueeze(1), return_type="logits").sum().backward()  # a yielded tensor as it is
    ids = model.generate(prompt, max_new_tokens=5, seed=0)
    assert not ids.is_inference()
    model(ids, return_type="loss").backward()
    assert model.embed.W_E.grad is not None and model.training


# ---- sampling options -------------------------------------------------------------------------------
def test_seeded_sampling_is_reproducible(make_model) -> None:
    model = make_model()
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, max_new_tokens=40, temperature=1.5, seed=7)
    b = model.generate(prompt, max_new_tokens=40, temperature=1.5, seed=7)
    c = model.generate(prompt, max_new_tokens=40, temperature=1.5, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(0)
    d = model.generate(prompt, max_new_tokens=40, temperature=1.5, seed=7)
    assert torch.equal(a, d), "a seeded run must not depend on the global RNG"


def test_top_k_1_and_tiny_top_p_equal_greedy(make_model) -> None:
    model = make_model()
    prompt = torch.tensor([[5, 6], [7, 8]])
    greedy = model.generate(prompt, max_new_tokens=30, temperature=0)
    assert torch.equal(model.generate(prompt, max_new_tokens=30, temperature=1.0, top_k=1, seed=1), greedy)
    assert torch.equal(model.generate(prompt, max_new_tokens=30, temperature=1.0, top_p=1e-6, seed=1), greedy)
    assert torch.equal(model.generate(prompt, max_new_tokens=30, temperature=2.0, top_k=1, top_p=0.5, seed=2), greedy)


def test_top_k_and_top_p_restrict_the_support() -> None:
    from nanolens.models.generation import sample_next

    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(500, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, top_k=2, generator=gen).tolist()) == {0, 1}
    probs = logits[0].softmax(-1)  # 0.64, 0.24, 0.09, ...: top_p 0.8 keeps the first two
    assert probs[0] < 0.8 < probs[:2].sum()
    assert set(sample_next(logits, 1.0, top_p=0.8, generator=gen).tolist()) == {0, 1}
    assert set(sample_next(logits, 1.0, generator=gen).tolist()) >= {0, 1, 2}


def test_text_generation_returns_prompt_plus_continuation(make_model, tokenizer) -> None:
    model = make_model(tokenizer=tokenizer, block_size=32)
    out = model.generate("to be", max_new_tokens=15, temperature=0)
    assert isinstance(out, str) and out.startswith("to be") and len(out) == 20
    ids = model.generate(torch.tensor([tokenizer.encode("to be")]), max_new_tokens=15, temperature=0)
    assert tokenizer.decode(ids[0].tolist()) == out
    assert model.generate("to be", max_new_tokens=0) == "to be"
    batch = model.generate(["to be", "or no"], max_new_tokens=5, temperature=0)
    assert isinstance(batch, list) and batch[0] == out[:10]


def _greedy_text(model, prompt: str, n: int = 40) -> str:
    return model.generate(prompt, max_new_tokens=n, temperature=0)[len(prompt):]


@pytest.mark.parametrize("stop_len", [1, 3])
def test_stop_string_truncates(make_model, tokenizer, stop_len) -> None:
    model = make_model(tokenizer=tokenizer, block_size=32)
    full = _greedy_text(model, "to be")
    stop = full[12 : 12 + stop_len]
    expected = full[: full.index(stop)]
    assert model.generate("to be", max_new_tokens=40, temperature=0, stop=stop) == "to be" + expected
    streamed = "".join(model.generate_stream("to be", max_new_tokens=40, temperature=0, stop=stop))
    assert streamed == expected


def test_stop_string_with_token_input_and_batches(make_model, tokenizer) -> None:
    model = make_model(tokenizer=tokenizer, block_size=32)
    full = _greedy_text(model, "to be", 30)
    stop = full[8]
    ids = torch.tensor([tokenizer.encode("to be")])
    # Token input: generation ends at the step that produced the stop string, which is kept.
    out = model.generate(ids, max_new_tokens=30, temperature=0, stop=stop)
    assert tokenizer.decode(out[0].tolist()) == "to be" + full[: full.index(stop) + 1]
    steps = list(model.generate_stream(ids, max_new_tokens=30, temperature=0, stop=stop))
    assert torch.equal(torch.stack(steps, dim=1), out[:, 5:])
    # A batch of texts: each row is cut at its own stop string.
    other = _greedy_text(model, "or no", 30)
    rows = model.generate(["to be", "or no"], max_new_tokens=30, temperature=0, stop=stop)
    assert rows[0] == "to be" + full[: full.index(stop)]
    assert rows[1] == "or no" + (other[: other.index(stop)] if stop in other else other)


def test_stop_string_that_never_appears_changes_nothing(make_model, tokenizer) -> None:
    model = make_model(tokenizer=tokenizer, block_size=32)
    full = _greedy_text(model, "to be", 20)
    stop = next(s for s in ("zz", "qq", "xyz") if s not in full)
    assert model.generate("to be", max_new_tokens=20, temperature=0, stop=stop) == "to be" + full
    assert "".join(model.generate_stream("to be", max_new_tokens=20, temperature=0, stop=stop)) == full


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_generate_stream_concatenates_to_generate(make_model, tokenizer, use_kv_cache) -> None:
    model = make_model(tokenizer=tokenizer, block_size=16)
    kwargs = dict(max_new_tokens=30, temperature=1.0, top_k=8, seed=11, use_kv_cache=use_kv_cache)
    pieces = list(model.generate_stream("to be", **kwargs))
    assert len(pieces) == 30
    assert "".join(pieces) == model.generate("to be", **kwargs)[len("to be"):]
    ids = torch.tensor([tokenizer.encode("to be"), tokenizer.encode("or no")])
    steps = list(model.generate_stream(ids, **kwargs))
    assert all(s.shape == (2,) for s in steps)
    assert torch.equal(torch.stack(steps, dim=1), model.generate(ids, **kwargs)[:, 5:])


# ---- impossible requests -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(max_new_tokens=-1), r"max_new_tokens must be a non-negative integer"),
        (dict(max_new_tokens=2.5), r"max_new_tokens must be a non-negative integer"),
        (dict(temperature=-0.5), r"temperature must be >= 0"),
        (dict(temperature=float("nan")), r"temperature must be >= 0"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(top_k=0), r"top_k must be >= 1"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
def test_impossible_requests_raise_clear_errors(make_model, tokenizer, kwargs, pattern, streaming) -> None:
    model = make_model(tokenizer=tokenizer)
    call = model.generate_stream if streaming else model.generate
    with pytest.raises(ValueError, match=pattern):
        list(call("to be", **kwargs)) if streaming else call("to be", **kwargs)
    assert model.attached_hooks() == {}


def test_generate_stream_raises_at_the_call_not_at_first_next(make_model, tokenizer) -> None:
    model = make_model(tokenizer=tokenizer)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate_stream("to be", max_new_tokens=-1)
    with pytest.raises(ValueError, match="empty"):
        model.generate_stream("", max_new_tokens=3)


@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
def test_empty_prompt_and_unknown_characters_raise(make_model, tokenizer, streaming) -> None:
    model = make_model(tokenizer=tokenizer)

    def run(prompt):
        return list(model.generate_stream(prompt, max_new_tokens=3)) if streaming else model.generate(prompt, max_new_tokens=3)

    with pytest.raises(ValueError, match="empty"):
        run("")
    with pytest.raises(ValueError, match="empty"):
        run(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(UnknownCharactersError, match=r"\['Z', '~'\].*not in this model's vocabulary"):
        run("to Z~")
    assert issubclass(UnknownCharactersError, ValueError)


def test_stop_string_without_tokenizer_raises(make_model) -> None:
    with pytest.raises(ValueError, match="stop string needs a tokenizer"):
        make_model().generate(torch.tensor([[1]]), max_new_tokens=3, stop="x")
    with pytest.raises(ValueError, match="stop string needs a tokenizer"):
        make_model().generate_stream(torch.tensor([[1]]), max_new_tokens=3, stop="x")


def test_text_prompt_without_tokenizer_raises(make_model) -> None:
    with pytest.raises(ValueError, match="no tokenizer attached"):
        make_model().generate("to be", max_new_tokens=3)


def test_forward_longer_than_block_size_raises(make_model, tokenizer) -> None:
    model = make_model(block_size=8, positional="rotary")
    with pytest.raises(ValueError, match=r"input of 9 tokens is longer than the model's context \(block_size=8\)"):
        model(torch.zeros(1, 9, dtype=torch.long))
    # generate() crops for you, so the same prompt is fine there.
    assert model.generate(torch.zeros(1, 9, dtype=torch.long), max_new_tokens=2, temperature=0).shape == (1, 11)
