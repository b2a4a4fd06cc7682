"""Hugging Face models opened with `GPT.from_hf`, checked against `transformers` itself.

Each family is a tiny randomly initialised `transformers` model built here (no download): GPT-2;
Llama with grouped-query heads, llama3 and linear RoPE scaling, tied and untied; Qwen2 with its
q/k/v biases; Mistral; GPT-NeoX with partial rotary, parallel and sequential. For each: it loads
from the object and from `save_pretrained` output, float32 logits match within 1e-4, 50 greedy
tokens with the KV cache are the same, and the cache has the documented hooks and shapes.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import nanolens.models.gpt as gpt_module
import pytest
import torch
import transformers
from nanolens.models import GPT
from sklearn.linear_model import LogisticRegression
from transformer_lens import patching

transformers.logging.set_verbosity_error()

VOCAB, WIDTH, HEADS = 96, 32, 4
_LLAMA = dict(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS,
              intermediate_size=48, max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}
FAMILIES = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=128, n_embd=WIDTH, n_layer=2, n_head=HEADS, bos_token_id=0, eos_token_id=0)),
    "llama-gqa-llama3-untied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **_LLAMA, num_key_value_heads=2, rope_scaling=LLAMA3, rope_theta=50000.0, tie_word_embeddings=False)),
    "llama-mqa-linear-tied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **_LLAMA, num_key_value_heads=1, rope_scaling={"rope_type": "linear", "factor": 4.0}, tie_word_embeddings=True)),
    "qwen2-bias": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**_LLAMA, num_key_value_heads=2)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        **_LLAMA, num_key_value_heads=2, sliding_window=64)),
    "gpt_neox-partial-parallel": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=48,
        max_position_embeddings=128, rotary_pct=0.5, use_parallel_residual=True, bos_token_id=0, eos_token_id=0)),
    "gpt_neox-sequential": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=48,
        max_position_embeddings=128, rotary_pct=0.25, use_parallel_residual=False, bos_token_id=0, eos_token_id=0)),
}
TOL = 1e-4


def build(name: str, seed: int = 0) -> transformers.PreTrainedModel:
    """A family's tiny model, every weight re-drawn wide enough that logits are far apart (no
    greedy near-ties) and no bias or norm gain sits at 0 or 1."""
    torch.manual_seed(seed)
    model = FAMILIES[name]().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_norm = "norm" in pname or "ln_" in pname
            p.copy_(1.0 + 0.2 * noise if is_norm and pname.endswith("weight") else 0.25 * noise)
    return model


@pytest.fixture(scope="module", params=list(FAMILIES))
def pair(request, tmp_path_factory):
    """(name, transformers model, ours from the object, ours from save_pretrained's directory)."""
    torch.set_num_threads(1)
    hf = build(request.param)
    directory = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(directory)
    return request.param, hf, GPT.from_hf(hf), GPT.from_hf(directory)


def tokens(batch: int = 2, length: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_match_transformers_from_the_object_and_the_directory(pair):
    name, hf, from_object, from_directory = pair
    ids = tokens()
    with torch.no_grad():
        expected = hf(ids).logits
        for model in (from_object, from_directory):
            error = (model(ids) - expected).abs().max().item()
            assert error < TOL, f"{name}: max |logit error| {error:.2e}"


def test_hooked_path_matches_too_and_hooks_mean_what_transformers_means(pair):
    """With every hook cached, attention takes its materialised path and norms their step by step
    path; the logits still match, and blocks.{i}.hook_resid_pre is transformers' hidden state i."""
    name, hf, model, _ = pair
    ids = tokens()
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        logits, cache = model.run_with_cache(ids)
    assert (logits - out.logits).abs().max().item() < TOL
    for i in range(model.config.n_layer):
        assert (cache[f"blocks.{i}.hook_resid_pre"] - out.hidden_states[i]).abs().max().item() < TOL


def test_run_with_cache_has_the_documented_hooks_and_shapes(pair):
    name, _, model, _ = pair
    c = model.config
    b, p, d, h, kv, dh, m = 2, 24, c.n_embd, c.n_head, c.kv_heads, c.d_head, c.mlp_width
    _, cache = model.run_with_cache(tokens(b, p))
    expected = {"hook_embed": (b, p, d), "ln_final.hook_scale": (b, p, 1), "ln_final.hook_normalized": (b, p, d)}
    if c.positional == "learned":
        expected["hook_pos_embed"] = (b, p, d)
    for i in range(c.n_layer):
        L = f"blocks.{i}"
        expected.update({
            f"{L}.hook_resid_pre": (b, p, d), f"{L}.ln1.hook_scale": (b, p, 1), f"{L}.ln1.hook_normalized": (b, p, d),
            f"{L}.attn.hook_q": (b, p, h, dh), f"{L}.attn.hook_k": (b, p, kv, dh), f"{L}.attn.hook_v": (b, p, kv, dh),
            f"{L}.attn.hook_attn_scores": (b, h, p, p), f"{L}.attn.hook_pattern": (b, h, p, p),
            f"{L}.attn.hook_z": (b, p, h, dh), f"{L}.hook_attn_out": (b, p, d),
            f"{L}.ln2.hook_scale": (b, p, 1), f"{L}.ln2.hook_normalized": (b, p, d),
            f"{L}.mlp.hook_pre": (b, p, m), f"{L}.mlp.hook_post": (b, p, m),
            f"{L}.hook_mlp_out": (b, p, d), f"{L}.hook_resid_post": (b, p, d),
        })
        if not c.parallel_block:  # a parallel block has no stream between attention and MLP (as in TL)
            expected[f"{L}.hook_resid_mid"] = (b, p, d)
        if c.gated_mlp:
            expected[f"{L}.mlp.hook_pre_linear"] = (b, p, m)
    assert {k: tuple(cache[k].shape) for k in expected} == expected
    patterns = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(patterns.sum(-1), torch.ones(b, h, p))
    assert (patterns.triu(1) == 0).all()  # causal


def test_fifty_greedy_tokens_with_the_kv_cache_are_transformers_tokens(pair):
    name, hf, model, _ = pair
    prompt = tokens(1, 8, seed=3)
    ours = model.generate(prompt, max_new_tokens=50, temperature=0)
    theirs = hf.generate(prompt, max_new_tokens=50, min_new_tokens=50, do_sample=False,
                         eos_token_id=None, pad_token_id=0, attention_mask=torch.ones_like(prompt))
    assert ours.tolist() == theirs.tolist(), name


def test_bf16_loading_stays_close_to_transformers_in_bf16(pair, tmp_path):
    """Loaded straight into bf16 (dtype=), the model is about as far from float32 as transformers'
    own bf16 model is: norms and rotary angles are computed in float32 by both."""
    name, hf, _, _ = pair
    ids = tokens()
    model = GPT.from_hf(hf, dtype=torch.bfloat16)
    assert model.W_E.dtype == torch.bfloat16 and model.cfg.dtype == torch.bfloat16
    with torch.no_grad():
        reference = hf(ids).logits
        theirs = copy.deepcopy(hf).to(torch.bfloat16)(ids).logits.float()  # a copy: the fixture stays float32
        ours = model(ids).float()
    their_error = (theirs - reference).abs().max().item()
    assert (ours - reference).abs().max().item() < 2 * their_error + 1e-2
    assert (ours - theirs).abs().max().item() < 2 * their_error + 1e-2


def test_mean_difference_steering_changes_logits_and_is_kv_cache_exact(pair):
    """A direction from the mean difference of residual streams at a middle layer, added there
    with run_with_hooks, moves the logits; generation with that hook gives the same tokens with
    and without the KV cache (after the prompt each cached step sees one position)."""
    name, _, model, _ = pair
    mid = model.config.n_layer // 2
    hook = f"blocks.{mid}.hook_resid_pre"
    _, cache_a = model.run_with_cache(tokens(4, 10, seed=5), names_filter=hook)
    _, cache_b = model.run_with_cache(tokens(4, 10, seed=6), names_filter=hook)
    direction = cache_a[hook].mean((0, 1)) - cache_b[hook].mean((0, 1))

    def steer(resid, hook):
        return resid + 4.0 * direction

    ids = tokens(1, 10, seed=7)
    with torch.no_grad():
        plain = model(ids)
        steered = model.run_with_hooks(ids, fwd_hooks=[(hook, steer)])
    assert (steered - plain).abs().max().item() > 1e-2
    cached = model.generate(ids, max_new_tokens=12, temperature=0, fwd_hooks=[(hook, steer)])
    uncached = model.generate(ids, max_new_tokens=12, temperature=0, fwd_hooks=[(hook, steer)], use_kv_cache=False)
    assert cached.tolist() == uncached.tolist()


def test_a_linear_probe_fits_on_imported_activations(pair):
    """Which of two tokens stands at the last position is linearly readable from its residual
    stream at a middle layer, on held-out sequences (a probe in the plain sklearn sense)."""
    _, _, model, _ = pair
    gen = torch.Generator().manual_seed(11)
    ids = torch.randint(3, VOCAB, (40, 6), generator=gen)
    labels = torch.arange(40) % 2
    ids[:, -1] = torch.where(labels == 1, 5, 9)
    hook = f"blocks.{model.config.n_layer // 2}.hook_resid_pre"
    _, cache = model.run_with_cache(ids, names_filter=hook)
    features = cache[hook][:, -1].numpy()
    probe = LogisticRegression(max_iter=2000).fit(features[:30], labels[:30].numpy())
    assert probe.score(features[30:], labels[30:].numpy()) >= 0.8


def test_config_records_the_family_and_is_saved_by_nanolens(pair, tmp_path):
    name, _, model, _ = pair
    assert model.config.extra["hf"]["model_type"] == name.split("-")[0]
    model.save(tmp_path / "ours")
    back = GPT.load(tmp_path / "ours")
    ids = tokens()
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model(ids), rtol=0, atol=0)


def test_the_model_modules_do_not_import_the_interop_modules_at_the_top():
    """`GPT.from_hf` / `to_hf` import their modules on use, so building or loading a nanolens
    model never pays for (or depends on) the Hugging Face interop and huggingface_hub."""
    tree = ast.parse(Path(gpt_module.__file__).read_text())
    top = [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert not [m for m in top if m and m.startswith("hf")], top
    interop = Path(gpt_module.__file__).parent
    for path in interop.glob("hf*.py"):
        text = path.read_text()
        assert not any(f"nanolens.{pkg}" in text for pkg in ("steering", "probes", "training", "apps", "corpora")), path
        assert "import transformers" not in text and "from transformers" not in text, path


@pytest.mark.parametrize("name", ["llama-gqa-llama3-untied", "gpt_neox-partial-parallel"])
def test_transformer_lens_cache_helpers_and_patching_on_an_imported_model(name):
    """TransformerLens' ActivationCache helpers and activation patching read an imported model
    as they read one trained here (GQA and a parallel block included)."""
    model = GPT.from_hf(build(name))
    clean, corrupt = tokens(1, 8, seed=21), tokens(1, 8, seed=21).clone()
    corrupt[0, 0] = (clean[0, 0] + 1) % VOCAB
    logits, cache = model.run_with_cache(clean)
    stack = cache.accumulated_resid(apply_ln=True)
    torch.testing.assert_close(stack[-1] @ model.W_U + model.b_U, logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(cache.decompose_resid().sum(0), cache[f"blocks.{model.config.n_layer - 1}.hook_resid_post"],
                               atol=1e-4, rtol=0)
    answer = int(logits[0, -1].argmax())

    def metric(patched_logits):
        return patched_logits[0, -1, answer]

    patched = patching.get_act_patch_resid_pre(model, corrupt, cache, metric)
    assert patched.shape == (model.config.n_layer, 8)
    with torch.no_grad():
        clean_value, corrupt_value = metric(logits).item(), metric(model(corrupt)).item()
    # Layer 0's stream differs only at position 0: patching it there restores the clean logit,
    # anywhere else it changes nothing.
    assert patched[0, 0].item() == pytest.approx(clean_value, abs=1e-4)
    torch.testing.assert_close(patched[0, 1:], torch.full((7,), corrupt_value), atol=1e-4, rtol=0)
