"""Hook semantics (issue 2, acceptance point 4): hooks act, never leak, and bad names are caught."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import ActivationCache

from nanolens.models import HookNameError


@pytest.fixture
def model(make_model):
    return make_model(n_kv_head=2)


def zero(t, hook):
    return torch.zeros_like(t)


def boom(t, hook):
    raise RuntimeError("hook failed")


# ---- hooks act ----------------------------------------------------------------------------------
def test_zeroing_resid_post_changes_the_logits(model, tokens) -> None:
    plain = model(tokens)
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_post", zero)])
    assert not torch.allclose(zeroed, plain, atol=1e-3)
    # With the whole stream zeroed, block 1 sees only zeros: every position's logits depend on
    # nothing, so they are equal across positions and batch rows.
    torch.testing.assert_close(zeroed, zeroed[:1, :1].expand_as(zeroed))
    torch.testing.assert_close(model(tokens), plain)  # and nothing stays behind


def test_hook_that_returns_none_observes_without_changing(model, tokens) -> None:
    seen = {}

    def record(t, hook):
        seen[hook.name] = t.shape

    out = model.run_with_hooks(tokens, fwd_hooks=[(lambda n: n.endswith("hook_resid_pre"), record)])
    torch.testing.assert_close(out, model(tokens))
    assert seen == {"blocks.0.hook_resid_pre": (2, 12, 16), "blocks.1.hook_resid_pre": (2, 12, 16)}


def test_patching_a_cached_activation_back_in_restores_the_run(model, tokens) -> None:
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    other = (tokens + 1) % model.config.vocab_size
    patched = model.run_with_hooks(other, fwd_hooks=[("blocks.1.hook_resid_pre", lambda t, hook: cache["blocks.1.hook_resid_pre"])])
    torch.testing.assert_close(patched, model(tokens), atol=1e-5, rtol=0)


# ---- hooks never leak ----------------------------------------------------------------------------
def test_run_with_hooks_leaves_nothing_behind(model, tokens) -> None:
    assert model.attached_hooks() == {}
    model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_post", zero), (lambda n: "attn" in n, lambda t, hook: None)])
    assert model.attached_hooks() == {}


def test_attached_hooks_lists_what_is_attached(model, tokens) -> None:
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", zero), ("blocks.0.hook_resid_post", zero), ("hook_embed", zero)]):
        assert model.attached_hooks() == {"blocks.0.hook_resid_post": 2, "hook_embed": 1}
    assert model.attached_hooks() == {}
    model.add_hook("blocks.1.hook_resid_pre", zero)
    try:
        assert model.attached_hooks() == {"blocks.1.hook_resid_pre": 1}
    finally:
        model.reset_hooks()
    assert model.attached_hooks() == {}


def test_hooks_context_manager_leaves_nothing_behind(model, tokens) -> None:
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", zero)]):
        zeroed = model(tokens)
    assert model.attached_hooks() == {}
    assert not torch.allclose(model(tokens), zeroed, atol=1e-3)


def test_hooks_are_removed_when_the_hooked_function_raises(model, tokens) -> None:
    with pytest.raises(RuntimeError, match="hook failed"):
        model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", lambda t, hook: None), ("blocks.1.hook_resid_mid", boom)])
    assert model.attached_hooks() == {}
    with pytest.raises(RuntimeError, match="hook failed"):
        with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", boom)]):
            model(tokens)
    assert model.attached_hooks() == {}
    with pytest.raises(RuntimeError, match="hook failed"):  # caching hooks and a raising hook, nested
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", boom)]):
            model.run_with_cache(tokens)
    assert model.attached_hooks() == {}
    assert model(tokens).shape == (2, 12, 13)  # and the model still runs


def test_hooks_are_removed_when_the_body_of_the_context_raises(model, tokens) -> None:
    with pytest.raises(KeyError):
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", zero)]):
            raise KeyError("user error inside the block")
    assert model.attached_hooks() == {}


def test_run_with_cache_leaves_nothing_behind(model, tokens) -> None:
    model.run_with_cache(tokens)
    assert model.attached_hooks() == {}
    model.run_with_cache(tokens, names_filter=["blocks.0.attn.hook_pattern"])
    assert model.attached_hooks() == {}
    # ... and the fast attention path is back: nothing observes the pattern any more.
    assert not model.blocks[0].attn.hook_pattern.fwd_hooks


def test_backward_hooks_work_and_do_not_leak(model, tokens) -> None:
    grads = []
    with model.hooks(bwd_hooks=[("blocks.0.hook_resid_post", lambda g, hook: grads.append(g.shape))]):
        model(tokens, return_type="loss").backward()
    assert grads == [(2, 12, 16)]
    assert model.attached_hooks() == {}


# ---- misspelt names -----------------------------------------------------------------------------
MISSPELT = "blocks.0.hook_resid_pots"


def test_misspelt_name_in_run_with_hooks_suggests_the_real_one(model, tokens) -> None:
    with pytest.raises(HookNameError, match=r"blocks\.0\.hook_resid_pots.*did you mean.*'blocks\.0\.hook_resid_post'"):
        model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", zero), (MISSPELT, zero)])
    assert model.attached_hooks() == {}, "hooks attached before the bad name must be removed too"
    assert issubclass(HookNameError, ValueError)


def test_misspelt_name_in_hooks_and_add_hook(model, tokens) -> None:
    with pytest.raises(HookNameError, match="blocks.0.hook_resid_post"):
        with model.hooks(fwd_hooks=[(MISSPELT, zero)]):
            pass
    with pytest.raises(HookNameError, match="blocks.0.hook_resid_post"):
        model.add_hook(MISSPELT, zero)
    with pytest.raises(HookNameError, match=r"blocks\.1\.attn\.hook_pattern"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_patern", zero)])
    assert model.attached_hooks() == {}


@pytest.mark.parametrize("names_filter", [[MISSPELT], MISSPELT, ["blocks.0.hook_resid_pre", MISSPELT]])
def test_misspelt_name_in_names_filter(model, tokens, names_filter) -> None:
    with pytest.raises(HookNameError, match=r"did you mean.*'blocks\.0\.hook_resid_post'"):
        model.run_with_cache(tokens, names_filter=names_filter)
    assert model.attached_hooks() == {}


def test_name_with_no_close_match_still_says_how_to_list_names(model) -> None:
    with pytest.raises(HookNameError, match=r"no hook point named 'zzz'.*hook_names\(\)"):
        model.check_hook_name("zzz")
    assert "blocks.0.hook_resid_post" in model.hook_names()


# ---- run_with_cache ------------------------------------------------------------------------------
def test_names_filter_selects_exactly(model, tokens) -> None:
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
    assert set(cache.keys()) == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    torch.testing.assert_close(logits, model(tokens))
    _, cache = model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_k")
    assert list(cache.keys()) == ["blocks.1.attn.hook_k"]
    assert cache["blocks.1.attn.hook_k"].shape == (2, 12, 2, 4)
    _, cache = model.run_with_cache(tokens, names_filter=["hook_embed", "ln_final.hook_scale"])
    assert set(cache.keys()) == {"hook_embed", "ln_final.hook_scale"}


def test_cache_values_are_the_activations(model, tokens) -> None:
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache["hook_embed"], model.W_E[tokens])
    torch.testing.assert_close(
        cache["blocks.0.hook_resid_mid"], cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"]
    )
    torch.testing.assert_close(
        cache["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_mid"] + cache["blocks.1.hook_mlp_out"]
    )
    torch.testing.assert_close(cache["blocks.1.hook_resid_pre"], cache["blocks.0.hook_resid_post"])
    assert not cache["hook_embed"].requires_grad


def test_activation_cache_shorthand_indexing(model, tokens) -> None:
    _, cache = model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    assert torch.equal(cache["resid_post", 0], cache["blocks.0.hook_resid_post"])
    assert torch.equal(cache["resid_pre", 1], cache["blocks.1.hook_resid_pre"])
    assert torch.equal(cache["resid_post", -1], cache["blocks.1.hook_resid_post"])
    assert torch.equal(cache["pattern", 1], cache["blocks.1.attn.hook_pattern"])
    assert torch.equal(cache["q", 0, "attn"], cache["blocks.0.attn.hook_q"])
    assert torch.equal(cache["embed"], cache["hook_embed"])
    assert torch.equal(cache["scale", 0, "ln1"], cache["blocks.0.ln1.hook_scale"])


def test_run_with_cache_plain_dict_and_remove_batch_dim(model) -> None:
    x = torch.tensor([[1, 2, 3]])
    _, plain = model.run_with_cache(x, return_cache_object=False)
    assert type(plain) is dict
    _, cache = model.run_with_cache(x, remove_batch_dim=True)
    assert cache["blocks.0.hook_resid_post"].shape == (3, 16)
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], plain["blocks.0.hook_resid_post"][0])


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_stop_at_layer_matches_cached_resid_pre(make_model, layer) -> None:
    model = make_model(n_layer=3, positional="alibi")
    x = torch.randint(0, 13, (2, 9), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(x)
    resid = model(x, stop_at_layer=layer)
    assert resid.shape == (2, 9, 16)
    torch.testing.assert_close(resid, cache[f"blocks.{layer}.hook_resid_pre"])
    # stop_at_layer does not run later blocks' hooks.
    fired = []
    model.run_with_hooks(x, stop_at_layer=layer, fwd_hooks=[(lambda n: n.endswith("hook_resid_pre"), lambda t, hook: fired.append(hook.name))])
    assert fired == [f"blocks.{i}.hook_resid_pre" for i in range(layer)]


def test_switch_hooks_do_not_fire_when_off(make_model, tokens) -> None:
    model = make_model()
    _, cache = model.run_with_cache(tokens)
    names = set(cache.keys())
    for optional in ("attn.hook_result", "hook_attn_in", "hook_q_input", "hook_mlp_in", "unembed.hook_in"):
        assert not any(n.endswith(optional) for n in names), optional


# ---- the fast paths (models/hooks.py) skip only what nothing watches ------------------------------
def test_plain_pytorch_hooks_fire_on_hook_points_and_layers(model, tokens) -> None:
    """Unhooked hook points and layers skip nn.Module.__call__; any hook at all brings it back."""
    fired = []
    block = model.blocks[0]
    handles = [
        block.hook_resid_mid.register_forward_hook(lambda m, i, o: fired.append("hook point")),
        block.attn.qkv.register_forward_pre_hook(lambda m, i: fired.append("linear")),
        block.mlp.dropout.register_forward_hook(lambda m, i, o: fired.append("dropout")),
        block.ln1.register_forward_hook(lambda m, i, o: fired.append("norm")),
        torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, o: fired.append("global") if m is model.unembed else None
        ),
    ]
    model(tokens)
    for handle in handles:
        handle.remove()
    assert sorted(fired) == ["dropout", "global", "hook point", "linear", "norm"]
    fired.clear()
    model(tokens)
    assert fired == []


@pytest.mark.parametrize("kind", ["plain", "with_kwargs", "always_call", "prepend"])
def test_hooked_hook_point_runs_its_hooks_as_pytorch_does(kind) -> None:
    """A hook point with forward hooks runs them itself (a faster path than nn.Module's call):
    the same order, each hook sees the input and the previous hook's output, None keeps it."""
    from nanolens.models.hooks import HookPoint

    def chain(point: HookPoint, log: list) -> None:
        def double(m, args, out):
            log.append(("double", args[0].tolist(), out.tolist()))
            return out * 2

        def watch(m, args, out):
            log.append(("watch", args[0].tolist(), out.tolist()))

        def add_one(m, args, *rest):
            log.append(("add_one", args[0].tolist(), rest[-1].tolist()))
            return rest[-1] + 1

        point.register_forward_hook(double)
        point.register_forward_hook(watch)
        options = {"with_kwargs": {"with_kwargs": True}, "always_call": {"always_call": True},
                   "prepend": {"prepend": True}}.get(kind, {})
        point.register_forward_hook(add_one, **options)

    x = torch.tensor([1.0, 2.0])
    ours, theirs = HookPoint(), HookPoint()
    ours_log, theirs_log = [], []
    chain(ours, ours_log)
    chain(theirs, theirs_log)
    assert torch.equal(ours(x), torch.nn.Module.__call__(theirs, x))
    assert ours_log == theirs_log and len(ours_log) == 3


def test_swapped_and_copied_submodules_are_the_ones_that_run(model, tokens) -> None:
    """Submodules and parameters are read from plain attributes (models/hooks.py `_Mirror`):
    every way of replacing them, and copies of the model, must still run what is registered."""
    import copy
    import pickle

    plain = model(tokens)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(clone(tokens), plain)
        clone.blocks[0].mlp.fc_out = torch.nn.Linear(clone.config.mlp_width, clone.config.n_embd)
        assert not torch.allclose(clone(tokens), plain)
        torch.testing.assert_close(model(tokens), plain)  # the original is untouched
    clone = copy.deepcopy(model)
    clone.blocks[0].attn._modules["out"] = zero_out = torch.nn.Linear(16, 16)  # as quantization swaps modules
    torch.nn.init.zeros_(zero_out.weight)
    torch.nn.init.zeros_(zero_out.bias)
    assert clone.blocks[0].attn.out is zero_out
    assert not torch.allclose(clone(tokens), plain)
    doubled = copy.deepcopy(model).double()
    assert doubled.blocks[0].attn.qkv.weight.dtype == torch.float64
    torch.testing.assert_close(doubled(tokens).float(), plain, atol=1e-5, rtol=1e-5)
    zeros = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    assert torch.count_nonzero(torch.func.functional_call(model, zeros, (tokens,))) == 0
    torch.testing.assert_close(model(tokens), plain)


def test_next_token_loss_on_one_token_is_a_clear_error():
    import pytest
    import torch

    from nanolens.models import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=10, n_embd=16, n_head=2, n_layer=1, block_size=8))
    with pytest.raises(ValueError, match="at least two tokens"):
        model(torch.tensor([[1]]), return_type="loss")
