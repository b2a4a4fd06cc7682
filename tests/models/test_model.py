"""The model over every preset and every variant: shapes, loss, gradients, hook names and shapes.

Issue 2, acceptance point 2 (and the GPTConfig part of the model section). The expected hook
table below is written from DESIGN.md and the config, not read from the model, so a hook that is
missing, extra, misnamed or of the wrong shape fails here.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformer_lens import ActivationCache

from nanolens.models import GPT, ConfigError, GPTConfig, LADDER, VARIANTS, preset_config
from nanolens.models.config import GATED_MLPS

TINY = dict(vocab_size=13, block_size=16, n_layer=2, n_head=4, n_embd=16)
SWITCHES = ("use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in", "use_hook_unembed")


# ---- the cases ---------------------------------------------------------------------------------
def _preset(name: str) -> GPTConfig:
    base = preset_config(name)
    return preset_config(name, vocab_size=13, block_size=16, n_embd=16, n_layer=min(base.n_layer, 2))


def _cases() -> list:
    cases = [pytest.param(_preset(p.name), id=f"preset-{p.name}") for p in LADDER]
    for slot, values in VARIANTS.items():
        for value in values:
            cases.append(pytest.param(GPTConfig(**TINY, **{slot: value}), id=f"{slot}-{value}"))
    extra = {
        "mqa": dict(n_kv_head=1),
        "gqa": dict(n_kv_head=2),
        "gqa-rotary": dict(n_kv_head=2, positional="rotary"),
        "mqa-alibi": dict(n_kv_head=1, positional="alibi"),
        "bias-on": dict(bias=True),
        "bias-off": dict(bias=False),
        "bias-off-layernorm-post": dict(bias=False, norm_position="post"),
        "tied": dict(tie_weights=True),
        "untied": dict(tie_weights=False),
        "dropout": dict(dropout=0.2),
        "dropout-gqa-alibi-swiglu": dict(dropout=0.2, n_kv_head=2, positional="alibi", mlp="swiglu"),
        "no-residual": dict(use_residual=False),
        "no-attn": dict(use_attn=False),
        "no-mlp": dict(use_mlp=False),
        "no-final-norm": dict(use_final_norm=False),
        "post-rmsnorm-geglu": dict(norm="rmsnorm", norm_position="post", mlp="geglu"),
        "average-sinusoidal-post": dict(attention="average", positional="sinusoidal", norm_position="post"),
        "one-layer-one-head": dict(n_layer=1, n_head=1),
        "three-heads-alibi": dict(n_head=3, n_embd=12, positional="alibi"),  # not a power of two
        "d_mlp": dict(d_mlp=24, mlp="swiglu"),
    }
    for name, changes in extra.items():
        cases.append(pytest.param(GPTConfig(**{**TINY, **changes}), id=name))
    for switch in SWITCHES:
        cases.append(pytest.param(GPTConfig(**TINY, **{switch: True}), id=f"{switch}"))
        cases.append(pytest.param(GPTConfig(**TINY, n_kv_head=2, positional="rotary", **{switch: True}), id=f"{switch}-gqa-rotary"))
    every = dict.fromkeys(SWITCHES, True)
    cases.append(pytest.param(GPTConfig(**TINY, **every), id="all-switches"))
    cases.append(pytest.param(GPTConfig(**TINY, **every, norm_position="post", n_kv_head=1, mlp="geglu"), id="all-switches-post-mqa"))
    cases.append(pytest.param(GPTConfig(**TINY, **every, attention="average"), id="all-switches-average"))
    return cases


CASES = _cases()


# ---- the expected hook table (from DESIGN.md) --------------------------------------------------
def expected_hooks(c: GPTConfig, B: int, T: int) -> dict[str, tuple[int, ...]]:
    """Every hook name that fires in a forward pass of config `c`, with its documented shape."""
    D, H, K, dh, M, V = c.n_embd, c.n_head, c.kv_heads, c.d_head, c.mlp_width, c.vocab_size
    has_norm = c.norm != "none"
    e: dict[str, tuple[int, ...]] = {"hook_embed": (B, T, D)}
    if c.positional in ("learned", "sinusoidal"):
        e["hook_pos_embed"] = (B, T, D)
    for i in range(c.n_layer):
        p = f"blocks.{i}."
        e[p + "hook_resid_pre"] = (B, T, D)
        if c.use_attn:
            average = c.attention == "average"
            per_head = not average and (c.use_split_qkv_input or c.use_attn_in)
            if has_norm:
                # TransformerLens' per-head input mode normalises each head's copy (the last call,
                # the values', has the K/V head count); post-norm normalises the block's sum.
                lead = (B, T, K) if per_head and c.norm_position == "pre" else (B, T)
                e[p + "ln1.hook_scale"] = lead + (1,)
                e[p + "ln1.hook_normalized"] = lead + (D,)
            if average:
                e[p + "attn.hook_pattern"] = (B, 1, T, T)
                e[p + "attn.hook_z"] = (B, T, 1, D)
            else:
                e[p + "attn.hook_q"] = (B, T, H, dh)
                e[p + "attn.hook_k"] = (B, T, K, dh)
                e[p + "attn.hook_v"] = (B, T, K, dh)
                if c.positional == "rotary":
                    e[p + "attn.hook_rot_q"] = (B, T, H, dh)
                    e[p + "attn.hook_rot_k"] = (B, T, K, dh)
                e[p + "attn.hook_attn_scores"] = (B, H, T, T)
                e[p + "attn.hook_pattern"] = (B, H, T, T)
                e[p + "attn.hook_z"] = (B, T, H, dh)
                if c.use_attn_result:
                    e[p + "attn.hook_result"] = (B, T, H, D)
                if c.use_split_qkv_input:
                    e[p + "hook_q_input"] = (B, T, H, D)
                    e[p + "hook_k_input"] = (B, T, K, D)
                    e[p + "hook_v_input"] = (B, T, K, D)
                elif c.use_attn_in:
                    e[p + "hook_attn_in"] = (B, T, H, D)
            e[p + "hook_attn_out"] = (B, T, D)
        e[p + "hook_resid_mid"] = (B, T, D)
        if c.use_mlp:
            if c.use_hook_mlp_in:
                e[p + "hook_mlp_in"] = (B, T, D)
            if has_norm:
                e[p + "ln2.hook_scale"] = (B, T, 1)
                e[p + "ln2.hook_normalized"] = (B, T, D)
            e[p + "mlp.hook_pre"] = (B, T, M)
            if c.mlp in GATED_MLPS:
                e[p + "mlp.hook_pre_linear"] = (B, T, M)
            e[p + "mlp.hook_post"] = (B, T, M)
            e[p + "hook_mlp_out"] = (B, T, D)
        e[p + "hook_resid_post"] = (B, T, D)
    if has_norm and c.use_final_norm:
        e["ln_final.hook_scale"] = (B, T, 1)
        e["ln_final.hook_normalized"] = (B, T, D)
    if c.use_hook_unembed:
        e["unembed.hook_in"] = (B, T, D)
        e["unembed.hook_out"] = (B, T, V)
    return e


def _build(config: GPTConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


def _tokens(config: GPTConfig, batch: int = 2, pos: int = 11, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, (batch, pos), generator=torch.Generator().manual_seed(seed))


def _switched_off(config: GPTConfig) -> GPTConfig:
    return config.replace(**dict.fromkeys(SWITCHES, False))


# ---- forward, loss, gradients -----------------------------------------------------------------
@pytest.mark.parametrize("config", CASES)
def test_forward_loss_and_gradient_reaches_every_parameter(config: GPTConfig) -> None:
    model = _build(config).train()  # train mode: dropout (where > 0) is active
    x = _tokens(config)
    logits = model(x)
    assert logits.shape == (2, 11, config.vocab_size)
    assert torch.isfinite(logits).all()
    loss = model(x, return_type="loss")
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    params = dict(model.named_parameters())
    assert params, "a model with no parameters cannot learn"
    for name, p in params.items():
        assert p.grad is not None, f"{name} gets no gradient (unused parameters should not exist)"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}'s gradient is zero everywhere"


@pytest.mark.parametrize("config", CASES)
def test_run_with_cache_has_every_documented_hook_with_its_shape(config: GPTConfig) -> None:
    model = _build(config).eval()
    x = _tokens(config, batch=2, pos=7)
    logits, cache = model.run_with_cache(x)
    assert isinstance(cache, ActivationCache)
    expected = expected_hooks(config, 2, 7)
    got = {name: tuple(t.shape) for name, t in cache.items()}
    assert sorted(set(expected) - set(got)) == [], "documented hooks missing from the cache"
    assert sorted(set(got) - set(expected)) == [], "undocumented hooks fired"
    wrong = {n: (got[n], s) for n, s in expected.items() if got[n] != s}
    assert wrong == {}, "hook shapes (got, expected)"
    # Caching everything (which materialises attention and norms) changes nothing.
    torch.testing.assert_close(logits, model(x), atol=1e-5, rtol=0)
    assert model.attached_hooks() == {}


@pytest.mark.parametrize("config", [c for c in CASES if any(getattr(c.values[0], s) for s in SWITCHES)])
def test_optional_hook_switches_leave_logits_unchanged(config: GPTConfig) -> None:
    plain = _build(_switched_off(config)).eval()
    switched = _build(config).eval()
    switched.load_state_dict(plain.state_dict())
    x = _tokens(config)
    torch.testing.assert_close(switched(x), plain(x), atol=1e-5, rtol=0)
    # ... also when they are cached (hooks attached everywhere).
    logits, _ = switched.run_with_cache(x)
    torch.testing.assert_close(logits, plain(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("switch", SWITCHES)
def test_runtime_switches_turn_optional_hooks_on_and_off(switch: str) -> None:
    config = GPTConfig(**TINY, n_kv_head=2)
    model = _build(config).eval()
    x = _tokens(config)
    before = model(x)
    getattr(model, "set_" + switch)(True)
    assert getattr(model.cfg, switch) is True
    logits, cache = model.run_with_cache(x)
    assert set(cache.keys()) == set(expected_hooks(config.replace(**{switch: True}), 2, 11))
    torch.testing.assert_close(logits, before, atol=1e-5, rtol=0)
    getattr(model, "set_" + switch)(False)
    _, cache = model.run_with_cache(x)
    assert set(cache.keys()) == set(expected_hooks(config, 2, 11))


@pytest.mark.parametrize("positional", ["learned", "alibi"])
def test_dropout_acts_in_train_mode_only(positional: str) -> None:
    config = GPTConfig(**TINY, dropout=0.3, positional=positional)
    model = _build(config)
    x = _tokens(config)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    no_dropout = _build(config.replace(dropout=0.0)).train()
    torch.testing.assert_close(no_dropout(x), no_dropout(x))


def test_optional_hooks_are_off_by_default() -> None:
    config = GPTConfig()
    assert not any(getattr(config, s) for s in SWITCHES)


def test_hook_result_sums_to_attention_output() -> None:
    config = GPTConfig(**TINY, use_attn_result=True, n_kv_head=2)
    model = _build(config).eval()
    _, cache = model.run_with_cache(_tokens(config))
    b_O = model.blocks[0].attn.b_O
    torch.testing.assert_close(cache["blocks.0.attn.hook_result"].sum(2) + b_O, cache["blocks.0.hook_attn_out"], atol=1e-5, rtol=0)


def test_hook_edits_on_split_inputs_reach_the_output(make_model) -> None:
    """The per-head input hooks are live: editing one head's query input changes the logits."""
    model = make_model(use_split_qkv_input=True)
    config = model.config
    x = _tokens(config)

    def zero_head_1(t, hook):
        t[:, :, 1] = 0
        return t

    edited = model.run_with_hooks(x, fwd_hooks=[("blocks.1.hook_q_input", zero_head_1)])
    assert not torch.allclose(edited, model(x), atol=1e-4)


# ---- presets -----------------------------------------------------------------------------------
def test_ladder_is_the_documented_order_with_descriptions() -> None:
    names = [p.name for p in LADDER]
    assert names == ["bigram", "average", "one_head", "multi_head", "feed_forward", "deep", "residual", "layer_norm", "gpt2",
                     "modern"]
    for p in LADDER:
        assert p.description.strip().endswith("."), p.name
        assert preset_config(p.name).preset == p.name


def test_gpt2_and_modern_presets_are_what_they_claim() -> None:
    gpt2 = preset_config("gpt2")
    assert (gpt2.positional, gpt2.norm, gpt2.norm_position, gpt2.mlp, gpt2.bias, gpt2.tie_weights) == (
        "learned", "layernorm", "pre", "gelu", True, True)
    modern = preset_config("modern")
    assert (modern.positional, modern.norm, modern.mlp, modern.bias) == ("rotary", "rmsnorm", "swiglu", False)
    bigram = _build(_preset("bigram"))
    # A bigram model's next-token logits depend on the current token only.
    a = bigram(torch.tensor([[1, 2, 3]]))[0, -1]
    b = bigram(torch.tensor([[7, 5, 3]]))[0, -1]
    torch.testing.assert_close(a, b)


def test_average_preset_averages_past_tokens() -> None:
    model = _build(_preset("average")).eval()
    _, cache = model.run_with_cache(torch.tensor([[1, 2, 3, 4]]))
    pattern = cache["blocks.0.attn.hook_pattern"][0, 0]
    expected = torch.tril(torch.ones(4, 4)) / torch.arange(1, 5)[:, None]
    torch.testing.assert_close(pattern, expected)


def test_preset_overrides_apply() -> None:
    config = preset_config("gpt2", n_layer=1, vocab_size=7)
    assert (config.n_layer, config.vocab_size, config.preset) == (1, 7, "gpt2")


# ---- stop_at_layer -----------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [0, 1, 2, -1])
def test_stop_at_layer_returns_that_blocks_resid_pre(layer: int) -> None:
    config = GPTConfig(**{**TINY, "n_layer": 3, "positional": "rotary"})
    model = _build(config).eval()
    x = _tokens(config)
    _, cache = model.run_with_cache(x)
    resid = model(x, stop_at_layer=layer)
    index = layer % config.n_layer
    torch.testing.assert_close(resid, cache[f"blocks.{index}.hook_resid_pre"])


def test_stop_at_last_layer_returns_final_resid_post() -> None:
    config = GPTConfig(**TINY)
    model = _build(config).eval()
    x = _tokens(config)
    _, cache = model.run_with_cache(x)
    torch.testing.assert_close(model(x, stop_at_layer=config.n_layer), cache["blocks.1.hook_resid_post"])


# ---- loss --------------------------------------------------------------------------------------
def test_loss_is_next_token_cross_entropy_and_targets_override() -> None:
    config = GPTConfig(**TINY)
    model = _build(config).eval()
    x = _tokens(config)
    logits, loss = model(x, return_type="both")
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 13), x[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, expected)
    targets = x.clone()
    targets[:, :5] = -1  # ignored positions
    expected = torch.nn.functional.cross_entropy(logits[:, 5:].reshape(-1, 13), x[:, 5:].reshape(-1))
    torch.testing.assert_close(model(x, return_type="loss", targets=targets), expected)


def test_forward_rejects_too_long_input_and_bad_ids() -> None:
    model = _build(GPTConfig(**TINY))
    with pytest.raises(ValueError, match=r"block_size=16.*crop"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 13\)"):
        model(torch.full((1, 3), 13))
    with pytest.raises(ValueError, match="no tokens"):
        model(torch.zeros(1, 0, dtype=torch.long))


# ---- GPTConfig ---------------------------------------------------------------------------------
@pytest.mark.parametrize("config", CASES[:: max(1, len(CASES) // 12)])
def test_config_json_round_trip(config: GPTConfig, tmp_path) -> None:
    again = GPTConfig.from_json(config.to_json())
    assert again == config
    assert json.loads(config.to_json())["n_embd"] == config.n_embd
    config.save(tmp_path / "config.json")
    assert GPTConfig.load(tmp_path / "config.json") == config


def test_config_round_trip_keeps_extra_and_none_fields() -> None:
    config = GPTConfig(**TINY, n_kv_head=None, d_mlp=None, extra={"corpus": "shakespeare", "n": [1, 2]})
    assert GPTConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    "changes, pattern",
    [
        (dict(n_embd=30, n_head=4), r"n_embd \(30\) is not divisible by n_head \(4\).*divisors"),
        (dict(n_head=4, n_kv_head=3), r"n_head \(4\) is not divisible by n_kv_head \(3\).*divisor"),
        (dict(n_kv_head=0), r"n_kv_head"),
        (dict(positional="rope"), r"unknown positional variant 'rope'.*learned, sinusoidal, rotary, alibi, none"),
        (dict(norm="batchnorm"), r"unknown norm variant.*layernorm, rmsnorm, none"),
        (dict(norm_position="middle"), r"unknown norm_position.*pre, post"),
        (dict(attention="flash"), r"unknown attention variant.*multi_head, average"),
        (dict(mlp="tanh"), r"unknown mlp variant.*gelu, relu, relu2, silu, swiglu, geglu"),
        (dict(attention="average", positional="rotary"), r"average attention.*learned"),
        (dict(attention="average", positional="alibi"), r"average attention.*learned"),
        (dict(n_embd=6, n_head=2, positional="rotary"), r"rotary.*even"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(vocab_size=0), r"vocab_size must be >= 1"),
        (dict(block_size=0), r"block_size must be >= 1"),
        (dict(n_layer=-1), r"n_layer must be >= 0"),
        (dict(d_mlp=0), r"d_mlp must be >= 1"),
        (dict(norm_eps=0.0), r"norm_eps must be > 0"),
    ],
)
def test_config_validation_names_the_fix(changes: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        GPTConfig(**{**TINY, **changes})
    assert issubclass(ConfigError, ValueError)


def test_config_replace_validates() -> None:
    with pytest.raises(ConfigError, match="n_head"):
        GPTConfig(**TINY).replace(n_head=5)


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigError, match=r"unknown GPTConfig field.*'n_layers'.*valid fields"):
        GPTConfig.from_dict({**TINY, "n_layers": 2})


def test_unknown_preset_lists_valid_presets() -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'gpt3'.*bigram.*gpt2.*modern"):
        preset_config("gpt3")


def test_with_overrides_parses_json_values() -> None:
    config = GPTConfig(**TINY).with_overrides(["n_layer=1", "positional=rotary", "bias=false", "dropout=0.1"])
    assert (config.n_layer, config.positional, config.bias, config.dropout) == (1, "rotary", False, 0.1)
    with pytest.raises(ConfigError, match="key=value"):
        GPTConfig(**TINY).with_overrides(["n_layer"])


# ---- property test: random valid configs ---------------------------------------------------------
@st.composite
def valid_configs(draw) -> GPTConfig:
    n_head = draw(st.sampled_from([1, 2, 4]))
    n_kv_head = draw(st.sampled_from([d for d in (None, 1, 2, 4) if d is None or n_head % d == 0]))
    attention = draw(st.sampled_from(VARIANTS["attention"]))
    positional = draw(st.sampled_from(
        [p for p in VARIANTS["positional"] if not (attention == "average" and p in ("rotary", "alibi"))]))
    return GPTConfig(
        vocab_size=draw(st.integers(2, 20)),
        block_size=draw(st.integers(4, 16)),
        n_layer=draw(st.integers(0, 2)),
        n_head=n_head,
        n_kv_head=n_kv_head,
        n_embd=n_head * draw(st.sampled_from([2, 4] if positional == "rotary" else [1, 2, 3, 4])),
        d_mlp=draw(st.sampled_from([None, 6])),
        positional=positional,
        norm=draw(st.sampled_from(VARIANTS["norm"])),
        norm_position=draw(st.sampled_from(VARIANTS["norm_position"])),
        attention=attention,
        mlp=draw(st.sampled_from(VARIANTS["mlp"])),
        bias=draw(st.booleans()),
        tie_weights=draw(st.booleans()),
        use_attn=draw(st.booleans()),
        use_mlp=draw(st.booleans()),
        use_residual=draw(st.booleans()),
        use_final_norm=draw(st.booleans()),
        **{s: draw(st.booleans()) for s in SWITCHES},
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=valid_configs(), data=st.data())
def test_random_valid_configs_build_run_and_cache(config: GPTConfig, data) -> None:
    assert GPTConfig.from_json(config.to_json()) == config
    model = _build(config).eval()
    pos = data.draw(st.integers(2, config.block_size))  # next-token loss needs two tokens
    x = _tokens(config, batch=2, pos=pos)
    logits, loss = model(x, return_type="both")
    assert logits.shape == (2, pos, config.vocab_size)
    assert torch.isfinite(logits).all()
    if pos > 1:
        assert torch.isfinite(loss)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        model.zero_grad(set_to_none=True)
    cached, cache = model.run_with_cache(x)
    expected = expected_hooks(config, 2, pos)
    assert {n: tuple(t.shape) for n, t in cache.items()} == expected
    torch.testing.assert_close(cached, logits, atol=1e-5, rtol=0)
    plain = _build(_switched_off(config)).eval()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain(x), logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "bad, message",
    [(dict(bias="False"), "bias: expected true or false, got 'False'"), (dict(n_layer=2.5), "n_layer: expected an integer, got 2.5"),
     (dict(dropout="x"), "dropout: expected a number, got 'x'"), (dict(positional=3), "positional: expected a string, got 3"),
     (dict(extra=[1]), r"extra: expected an object, got \[1\]")],
)
def test_config_refuses_values_of_the_wrong_type(bad, message) -> None:
    with pytest.raises(ConfigError, match=message):
        GPTConfig(**bad)


def test_set_overrides_accept_python_and_json_spellings() -> None:
    config = GPTConfig().with_overrides(["bias=False", "tie_weights=false", "n_kv_head=None", "dropout=0"])
    assert (config.bias, config.tie_weights, config.n_kv_head, config.dropout) == (False, False, None, 0.0)
