"""TransformerLens' own tools, run unchanged on nanolens models, checked against real numbers.

Each tool is run on three tiny configs (gpt2: LayerNorm + learned positions + biases; modern:
RMSNorm + rotary + SwiGLU, no biases; gqa: grouped-query attention) with scrambled weights, and
its output is checked against the model's own logits or activations, never just for a shape.
docs/transformer_lens.md lists the tools and points back here.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import ActivationCache, patching
from transformer_lens.head_detector import detect_head, get_duplicate_token_head_detection_pattern
from transformer_lens.SVDInterpreter import SVDInterpreter
from transformer_lens.tools.analysis import attribution_patch, direct_logit_attribution
from transformer_lens.tools.analysis.logit_lens import logit_lens
from transformer_lens.utilities.exploratory_utils import test_prompt as tl_test_prompt

from nanolens.models import GPT, CharTokenizer, preset_config

TOK = CharTokenizer("abcdefgh ")
SIZE = dict(n_layer=2, n_embd=16, block_size=16, vocab_size=TOK.vocab_size)
CONFIGS = {
    "gpt2": dict(preset="gpt2", n_head=2),
    "modern": dict(preset="modern", n_head=2),
    "gqa": dict(preset="gpt2", n_head=4, n_kv_head=2),
}
CLEAN, CORRUPT = "abcab hca", "hbcab hca"  # differ only at position 0
ANSWER = "b"
ATOL = 1e-5


def build(name: str, seed: int = 0) -> GPT:
    """A tiny model with every weight re-drawn large enough that nothing is near-trivial
    (norm gains near 1 but not 1, biases non-zero, attention far from uniform)."""
    settings = dict(CONFIGS[name])
    torch.manual_seed(seed)
    model = GPT(preset_config(settings.pop("preset"), **settings, **SIZE), tokenizer=TOK)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.5
            p.copy_(noise * 0.3 + 1.0 if pname.endswith(".w") else noise)
    return model.eval()


@pytest.fixture(params=list(CONFIGS))
def model(request) -> GPT:
    return build(request.param)


def run(model: GPT, text: str = CLEAN):
    tokens = model.to_tokens(text)
    logits, cache = model.run_with_cache(tokens)
    return tokens, logits, cache


def affine(norm, x):
    """A norm's learned gain and bias (the part apply_ln_to_stack leaves out)."""
    b = getattr(norm, "b", None)
    return x * norm.w + (b if b is not None else 0)


def close(a, b, atol=ATOL):
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), atol=atol, rtol=0)


# ---- ActivationCache helpers -----------------------------------------------------------------
def test_run_with_cache_gives_an_activation_cache(model):
    _, _, cache = run(model)
    assert isinstance(cache, ActivationCache) and cache.model is model
    close(cache["resid_post", -1], cache["blocks.1.hook_resid_post"])  # TL's shorthand keys work


def test_accumulated_resid_through_ln_final_and_W_U_reproduces_logits(model):
    _, logits, cache = run(model)
    stack, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
    assert labels == ["0_pre", "1_pre", "final_post"]
    assert stack.shape == (3, 1, len(CLEAN), 16)
    close(stack[-1] @ model.W_U + model.b_U, logits)
    close(stack[1], model.ln_final(cache["blocks.1.hook_resid_pre"]))  # each entry normed afresh
    raw, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
    assert labels == ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    close(raw[1], cache["blocks.0.hook_resid_mid"])
    close(raw[-1], cache["blocks.1.hook_resid_post"])


def test_logit_lens(model):
    tokens, logits, cache = run(model)
    lens = cache.logit_lens()
    assert lens.labels == ["0_pre", "1_pre", "final_post"]
    close(lens.values[-1], logits[:, -1])  # the last entry is the model's prediction
    # The function form runs the model itself, and ranks a target at every layer.
    answer = model.to_single_token(ANSWER)
    lens = logit_lens(model, tokens, targets=ANSWER)
    final_rank = int((logits[0, -1] > logits[0, -1, answer]).sum())
    assert lens.rank_trajectory()[-1].item() == final_rank
    model.train()
    with pytest.raises(ValueError, match="evaluation"):
        logit_lens(model, tokens)


def test_decompose_resid_components_sum_to_the_stream(model):
    _, _, cache = run(model)
    stack, labels = cache.decompose_resid(return_labels=True)
    expected = ["embed"] + (["pos_embed"] if model.config.positional == "learned" else [])
    assert labels == expected + ["0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    close(stack.sum(0), cache["blocks.1.hook_resid_post"])
    close(cache.decompose_resid(layer=1, mlp_input=True).sum(0), cache["blocks.1.hook_resid_mid"])
    assert cache.decompose_resid(mode="attn", return_labels=True)[1][-2:] == ["0_attn_out", "1_attn_out"]


def test_stack_activation(model):
    _, _, cache = run(model)
    stack = cache.stack_activation("resid_post")
    assert stack.shape == (2, 1, len(CLEAN), 16)
    close(stack[0], cache["blocks.0.hook_resid_post"])
    assert cache.stack_activation("pattern").shape == (2, 1, model.cfg.n_heads, len(CLEAN), len(CLEAN))


def test_apply_ln_to_stack_splits_each_norm_over_components(model):
    """Scaled by the cached norm scale, components add up to what the norm itself produced."""
    _, _, cache = run(model)
    final = cache.apply_ln_to_stack(cache.decompose_resid(), layer=None)
    close(affine(model.ln_final, final.sum(0)), cache["ln_final.hook_normalized"])
    block1 = model.blocks[1]
    attn_in = cache.apply_ln_to_stack(cache.decompose_resid(layer=1), layer=1)
    close(affine(block1.ln1, attn_in.sum(0)), cache["blocks.1.ln1.hook_normalized"])
    mlp_in = cache.apply_ln_to_stack(cache.decompose_resid(layer=1, mlp_input=True), layer=1, mlp_input=True)
    close(affine(block1.ln2, mlp_in.sum(0)), cache["blocks.1.ln2.hook_normalized"])


def identity_final_norm(model: GPT) -> GPT:
    """Direct logit attribution reads W_U only, so (as TransformerLens' fold_ln arranges) the
    final norm's gain and bias must be the identity for the attributions to add up to logits."""
    with torch.no_grad():
        model.ln_final.w.fill_(1.0)
        if getattr(model.ln_final, "b", None) is not None:
            model.ln_final.b.zero_()
    return model


def test_logit_attrs_add_up_to_logits(model):
    identity_final_norm(model)
    tokens, logits, cache = run(model)
    stack = cache.decompose_resid()
    next_tokens = torch.roll(tokens, -1, dims=1)  # one target per position
    attrs = cache.logit_attrs(stack, tokens=next_tokens)
    assert attrs.shape == (stack.shape[0], 1, len(CLEAN))
    close(attrs.sum(0), logits.gather(-1, next_tokens[..., None])[..., 0])
    answer, other = model.to_single_token(ANSWER), model.to_single_token("h")
    close(cache.logit_attrs(stack, tokens=ANSWER).sum(0), logits[..., answer])
    diff = cache.logit_attrs(stack, tokens=ANSWER, incorrect_tokens="h").sum(0)
    close(diff, logits[..., answer] - logits[..., other])


def test_direct_logit_attribution_tool(model):
    identity_final_norm(model)
    tokens, logits, _ = run(model)
    answer = model.to_single_token(ANSWER)
    for unit in ("component", "head"):
        dla = direct_logit_attribution(model, tokens, ANSWER, unit=unit)
        close(dla.attribution.sum(0), logits[:, -1, answer])
    heads = direct_logit_attribution(model, tokens, ANSWER, unit="head")
    assert heads.labels[:2] == ["L0H0", "L0H1"] and heads.labels[-1] == "remainder"
    layers = direct_logit_attribution(model, tokens, ANSWER, unit="layer")
    close(layers.attribution[-1], logits[:, -1, answer])


def test_head_results_sum_to_attn_out_minus_b_O(model):
    tokens, logits, cache = run(model)
    assert "blocks.0.attn.hook_result" not in cache.cache_dict  # off by default
    stack, labels = cache.stack_head_results(return_labels=True)  # computed from hook_z and W_O
    n_heads = model.cfg.n_heads
    assert stack.shape == (2 * n_heads, 1, len(CLEAN), 16)
    assert labels[: n_heads + 1] == [f"L0H{h}" for h in range(n_heads)] + ["L1H0"]
    for layer in range(2):
        per_layer = stack[layer * n_heads : (layer + 1) * n_heads].sum(0)
        close(per_layer + model.blocks[layer].attn.b_O, cache[f"blocks.{layer}.hook_attn_out"])
    # With use_attn_result the model itself emits the same per-head results, logits unchanged.
    model.set_use_attn_result(True)
    logits_with, cache_with = model.run_with_cache(tokens)
    close(logits_with, logits)
    close(cache_with["blocks.1.attn.hook_result"], cache["blocks.1.attn.hook_result"])
    model.set_use_attn_result(False)
    _, _, fresh = run(model)
    fresh.compute_head_results()
    close(fresh["blocks.0.attn.hook_result"], cache_with["blocks.0.attn.hook_result"])
    remainder = cache.stack_head_results(incl_remainder=True)
    close(remainder.sum(0), cache["blocks.1.hook_resid_post"])


def test_full_resid_decomposition_sums_to_the_stream(model):
    _, _, cache = run(model)
    stack, labels = cache.get_full_resid_decomposition(return_labels=True)
    n_pos = 1 if model.config.positional == "learned" else 0
    assert len(labels) == 2 * model.cfg.n_heads + 2 * model.cfg.d_mlp + 1 + n_pos + 1
    assert labels[-1] == "bias" and labels[2 * model.cfg.n_heads] == "L0N0"
    close(stack.sum(0), cache["blocks.1.hook_resid_post"], atol=1e-4)
    coarse = cache.get_full_resid_decomposition(expand_neurons=False)
    close(coarse.sum(0), cache["blocks.1.hook_resid_post"])
    normed = cache.get_full_resid_decomposition(expand_neurons=False, apply_ln=True)
    close(affine(model.ln_final, normed.sum(0)), cache["ln_final.hook_normalized"])
    # One layer's neurons add up to its MLP output, minus the output bias.
    neurons = cache.get_neuron_results(1)
    close(neurons.sum(-2) + model.blocks[1].mlp.b_out, cache["blocks.1.hook_mlp_out"], atol=1e-4)


# ---- head detector ---------------------------------------------------------------------------
def test_detect_head_reads_the_attention_patterns(model):
    tokens, _, cache = run(model)
    n, n_heads = len(CLEAN), model.cfg.n_heads
    scores = detect_head(model, CLEAN, "previous_token_head")
    assert scores.shape == (2, n_heads)
    patterns = cache.stack_activation("pattern")[:, 0]  # [layer, head, q, k]; rows sum to 1
    close(scores, patterns.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1) / n)
    duplicate = get_duplicate_token_head_detection_pattern(tokens.cpu())
    close(detect_head(model, CLEAN, "duplicate_token_head"), (patterns * duplicate).sum((-1, -2)) / n)
    # A list of prompts (of equal length: a char vocabulary has no padding) averages them.
    both = detect_head(model, [CLEAN, CORRUPT], "previous_token_head")
    close(both, (scores + detect_head(model, CORRUPT, "previous_token_head")) / 2)


def test_detect_head_finds_a_forced_previous_token_head(model):
    def previous_token_only(scores, hook):  # head 1 of layer 0 attends to the token before
        forced = torch.full_like(scores[:, 1], float("-inf"))
        forced.diagonal(offset=-1, dim1=-2, dim2=-1).fill_(0.0)
        forced[:, 0, 0] = 0.0
        scores[:, 1] = forced
        return scores

    n = len(CLEAN)
    model.add_hook("blocks.0.attn.hook_attn_scores", previous_token_only, is_permanent=True)
    try:
        scores = detect_head(model, CLEAN, "previous_token_head")
        assert scores[0, 1].item() == pytest.approx((n - 1) / n)  # all but the first row's mass
        assert scores[0, 0].item() < 0.9
        exact = detect_head(model, CLEAN, "previous_token_head", error_measure="abs")
        assert exact[0, 1].item() == pytest.approx(1 - round(1 / n, 3))
        only = detect_head(model, CLEAN, "previous_token_head", heads=[(0, 1)])
        assert only[0, 1].item() == pytest.approx((n - 1) / n) and (only[1] == -1).all()
    finally:
        model.reset_hooks(including_permanent=True)
    assert not any(model.attached_hooks().values())


# ---- activation patching ---------------------------------------------------------------------
def patching_setup(model: GPT):
    answer = model.to_single_token(ANSWER)

    def metric(logits):
        return logits[0, -1, answer]

    clean_tokens, clean_logits, clean_cache = run(model, CLEAN)
    corrupt_tokens, corrupt_logits, _ = run(model, CORRUPT)
    clean, corrupt = metric(clean_logits).item(), metric(corrupt_logits).item()
    assert abs(clean - corrupt) > 1e-2  # the corruption matters, so "restored" means something
    return metric, clean_cache, corrupt_tokens, clean, corrupt


def manual_patch(model, tokens, name, setter, metric):
    return metric(model.run_with_hooks(tokens, fwd_hooks=[(name, setter)])).item()


def test_patching_resid_pre_restores_the_clean_metric_where_the_inputs_differ(model):
    metric, clean_cache, corrupt_tokens, clean, corrupt = patching_setup(model)
    result = patching.get_act_patch_resid_pre(model, corrupt_tokens, clean_cache, metric)
    assert result.shape == (2, len(CLEAN))
    assert result[0, 0].item() == pytest.approx(clean, abs=ATOL)  # the one differing embedding
    close(result[0, 1:], torch.full((len(CLEAN) - 1,), corrupt))  # identical there: no effect
    # The final stream at the last position alone decides the last logits.
    post = patching.generic_activation_patch(
        model, corrupt_tokens, clean_cache, metric, patching.layer_pos_patch_setter,
        "resid_post", index_axis_names=("layer", "pos"),
    )
    assert post[1, -1].item() == pytest.approx(clean, abs=ATOL)
    close(post[1, :-1], torch.full((len(CLEAN) - 1,), corrupt))
    summary = patching.get_act_patch_resid_pre(model, corrupt_tokens, clean_cache, metric, baseline=True)
    assert summary.baseline.item() == pytest.approx(corrupt, abs=ATOL)
    model.train()
    with pytest.raises(ValueError, match="evaluation mode"):
        patching.get_act_patch_resid_pre(model, corrupt_tokens, clean_cache, metric)


def test_patching_heads_matches_a_hand_made_patch(model):
    metric, clean_cache, corrupt_tokens, clean, corrupt = patching_setup(model)
    n_heads, n_kv = model.cfg.n_heads, model.config.kv_heads
    out = patching.get_act_patch_attn_head_out_all_pos(model, corrupt_tokens, clean_cache, metric)
    assert out.shape == (2, n_heads)
    for layer in range(2):
        for head in range(n_heads):
            z_clean = clean_cache[f"blocks.{layer}.attn.hook_z"]

            def setter(z, hook, head=head, z_clean=z_clean):
                z[:, :, head] = z_clean[:, :, head]
                return z

            expected = manual_patch(model, corrupt_tokens, f"blocks.{layer}.attn.hook_z", setter, metric)
            assert out[layer, head].item() == pytest.approx(expected, abs=ATOL)
    # Layer 0's values at positions past the corruption are the same in both runs (K/V heads: n_kv).
    values = patching.get_act_patch_attn_head_v_by_pos(model, corrupt_tokens, clean_cache, metric)
    assert values.shape == (2, len(CLEAN), n_kv)
    close(values[0, 1:], torch.full((len(CLEAN) - 1, n_kv), corrupt))
    assert patching.get_act_patch_attn_head_k_all_pos(model, corrupt_tokens, clean_cache, metric).shape == (2, n_kv)
    pattern = patching.get_act_patch_attn_head_pattern_all_pos(model, corrupt_tokens, clean_cache, metric)
    assert pattern.shape == (2, n_heads)
    every = patching.get_act_patch_attn_head_all_pos_every(model, corrupt_tokens, clean_cache, metric)
    assert every.shape == (5, 2, n_heads)
    close(every[0], out)
    close(every[4], pattern)


def test_patching_block_every(model):
    metric, clean_cache, corrupt_tokens, clean, corrupt = patching_setup(model)
    every = patching.get_act_patch_block_every(model, corrupt_tokens, clean_cache, metric)
    assert every.shape == (3, 2, len(CLEAN))
    close(every[0], patching.get_act_patch_resid_pre(model, corrupt_tokens, clean_cache, metric))
    close(every[2], patching.get_act_patch_mlp_out(model, corrupt_tokens, clean_cache, metric))
    mid = patching.get_act_patch_resid_mid(model, corrupt_tokens, clean_cache, metric)
    assert mid.shape == (2, len(CLEAN))

    def last_position(resid, hook):
        resid[:, -1] = clean_cache["blocks.1.hook_resid_mid"][:, -1]
        return resid

    expected = manual_patch(model, corrupt_tokens, "blocks.1.hook_resid_mid", last_position, metric)
    assert mid[1, -1].item() == pytest.approx(expected, abs=ATOL)
    by_pos = patching.get_act_patch_attn_head_out_by_pos(model, corrupt_tokens, clean_cache, metric)
    assert by_pos.shape == (2, len(CLEAN), model.cfg.n_heads)
    assert torch.isfinite(by_pos).all()

    def one_head_one_position(z, hook):
        z[:, 0, 1] = clean_cache["blocks.0.attn.hook_z"][:, 0, 1]
        return z

    expected = manual_patch(model, corrupt_tokens, "blocks.0.attn.hook_z", one_head_one_position, metric)
    assert by_pos[0, 0, 1].item() == pytest.approx(expected, abs=ATOL)


def test_direct_path_patching(model):
    """TL 4's direct path patching hooks `blocks.{i}.attn.hook_k_input` (q, v), aliases of ours."""
    metric, clean_cache, corrupt_tokens, clean, corrupt = patching_setup(model)
    _, _, corrupt_cache = run(model, CORRUPT)
    grouped = model.config.kv_heads != model.cfg.n_heads
    component = "q" if grouped else "k"  # TL refuses K/V paths on grouped-query models
    if grouped:
        with pytest.raises(ValueError, match="GQA"):
            patching.get_act_patch_direct_path(
                model, corrupt_tokens, clean_cache, corrupt_cache, metric, 0, 1, component="k", verbose=False
            )
    result = patching.get_act_patch_direct_path(
        model, corrupt_tokens, clean_cache, corrupt_cache, metric, src_layer=0, src_head=1,
        component=component, verbose=False,
    )
    assert result.shape == (2, model.cfg.n_heads) and (result[0] == 0).all()
    assert not model.cfg.use_split_qkv_input  # the caller's switch is restored
    dst = int((result[1] - corrupt).abs().argmax())
    z = "blocks.0.attn.hook_z"
    delta = (clean_cache[z][:, :, 1] - corrupt_cache[z][:, :, 1]) @ model.blocks[0].attn.W_O[1]

    def add_to_dst(fork, hook):  # source head's write, added to one destination head's input
        fork = fork.clone()
        fork[:, :, dst] += delta
        return fork

    model.set_use_split_qkv_input(True)
    try:
        expected = manual_patch(model, corrupt_tokens, f"blocks.1.hook_{component}_input", add_to_dst, metric)
    finally:
        model.set_use_split_qkv_input(False)
    assert abs(expected - corrupt) > 1e-3  # the path carries something
    assert result[1, dst].item() == pytest.approx(expected, abs=ATOL)


def test_attribution_patching_is_the_gradient_estimate(model):
    metric, clean_cache, corrupt_tokens, clean, corrupt = patching_setup(model)
    result = attribution_patch(model, model.to_tokens(CLEAN), corrupt_tokens, metric)
    # Recompute two node scores by hand: (clean - corrupt activation) . d metric / d activation.
    grads = {}

    def keep_grad(act, hook):
        act.retain_grad()
        grads[hook.name] = act
        return act

    names = ["hook_embed", "blocks.1.hook_mlp_out"]
    with model.hooks(fwd_hooks=[(n, keep_grad) for n in names]):
        metric(model(corrupt_tokens)).backward()
    model.zero_grad(set_to_none=True)
    scores = {(node.kind, node.position, node.layer): s for node, s in result.node_scores.items()}
    for name, key in zip(names, [("embed", 0, None), ("mlp_out", len(CLEAN) - 1, 1)]):
        act = grads[name]
        expected = ((clean_cache[name] - act.detach()) * act.grad)[0, key[1]].sum().item()
        assert scores[key] == pytest.approx(expected, abs=1e-5)


# ---- other tools -----------------------------------------------------------------------------
def test_svd_interpreter_reads_tl_parameters(model):
    params = model.tl_parameters()
    n_heads = model.cfg.n_heads
    assert params["blocks.0.attn.W_V"].shape == (n_heads, 16, model.cfg.d_head)  # K/V per query head
    svd = SVDInterpreter(model)
    head = n_heads - 1
    vectors = svd.get_singular_vectors("OV", layer_index=1, head_index=head, num_vectors=3)
    assert vectors.shape == (model.cfg.d_vocab, 1, 3)
    kv_head = head // (n_heads // model.config.kv_heads)
    ov = model.blocks[1].attn.W_V[kv_head] @ model.blocks[1].attn.W_O[head]
    top = torch.linalg.svd(ov.double())[2][0].float()  # first right-singular vector (up to sign)
    got = vectors[:, 0, 0]
    want = model.W_U.T @ top
    assert min((got - want).abs().max(), (got + want).abs().max()).item() < 1e-4
    assert svd.get_singular_vectors("w_out", layer_index=0, num_vectors=2).shape == (model.cfg.d_vocab, 1, 2)


def test_test_prompt(model, capsys):
    tokens, logits, _ = run(model, CLEAN)
    answer = model.to_single_token(ANSWER)
    rank = int((logits[0, -1] > logits[0, -1, answer]).sum())
    tl_test_prompt(CLEAN, ANSWER, model, prepend_space_to_answer=False, top_k=5)
    out = capsys.readouterr().out
    assert f"Rank: {rank} " in out and f"Token: |{ANSWER}|" in out
