"""The components pretrained families needed, as variants every model can use: tanh GELU,
the parallel block, partial rotary, RoPE scaling, q/k/v and MLP biases apart from `bias`, and
float32 norms and rotary angles in half precision. Defaults leave today's models unchanged."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from nanolens.models import GPT, ConfigError, GPTConfig
from nanolens.models.positional import Rotary, rope_frequencies
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

TINY = dict(vocab_size=13, block_size=16, n_layer=2, n_head=4, n_embd=32)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8}


def build(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith(".w") else 0.0))
    return model.eval()


def ids(batch: int = 2, length: int = 10) -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(1))


# ---- config: defaults and files unchanged ------------------------------------------------------
def test_new_fields_default_to_todays_model_and_stay_out_of_saved_configs():
    config = GPTConfig(**TINY)
    assert (config.parallel_block, config.rotary_dim, config.rope_scaling, config.qkv_bias, config.mlp_bias) == (
        False, None, None, None, None)
    saved = config.to_dict()
    assert not {"parallel_block", "rotary_dim", "rope_scaling", "qkv_bias", "mlp_bias"} & set(saved)
    assert GPTConfig.from_dict(saved) == config  # a config.json written before these fields loads
    changed = GPTConfig(**TINY, positional="rotary", rotary_dim=4, parallel_block=True, qkv_bias=False)
    assert {"rotary_dim": 4, "parallel_block": True, "qkv_bias": False}.items() <= changed.to_dict().items()
    assert GPTConfig.from_json(changed.to_json()) == changed


@pytest.mark.parametrize("changes, message", [
    (dict(positional="rotary", rotary_dim=3), "even number"),
    (dict(positional="rotary", rotary_dim=10), "even number from 2 to the head size 8"),
    (dict(rotary_dim=4), "only applies to positional='rotary'"),
    (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "only applies to positional='rotary'"),
    (dict(positional="rotary", rope_scaling={"rope_type": "yarn", "factor": 2.0}), "rope_type is one of linear, llama3"),
    (dict(positional="rotary", rope_scaling={"rope_type": "linear"}), "positive number 'factor'"),
    (dict(positional="rotary", rope_scaling={**LLAMA3, "high_freq_factor": 0.5}), "high_freq_factor > low_freq_factor"),
    (dict(parallel_block=True, norm_position="post"), "parallel_block"),
    (dict(parallel_block=True, use_mlp=False), "parallel_block"),
    (dict(qkv_bias="yes"), "qkv_bias: expected true, false or null, got 'yes'"),
])
def test_bad_variant_values_are_refused_with_the_fix(changes, message):
    with pytest.raises(ConfigError, match=message):
        GPTConfig(**TINY, **changes)


# ---- tanh GELU ---------------------------------------------------------------------------------
def test_gelu_tanh_is_gpt2s_gelu_new():
    model = build(mlp="gelu_tanh")
    x = torch.randn(2, 5, 32)
    mlp = model.blocks[0].mlp
    pre = mlp.fc_in(x)
    new_gelu = 0.5 * pre * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (pre + 0.044715 * pre.pow(3))))
    torch.testing.assert_close(mlp(x), mlp.fc_out(new_gelu))
    assert not torch.allclose(mlp(x), mlp.fc_out(F.gelu(pre)))  # not the exact GELU
    assert model.cfg.act_fn == "gelu_new"


# ---- parallel block ----------------------------------------------------------------------------
def test_parallel_block_adds_attention_and_mlp_of_the_same_input():
    model = build(parallel_block=True, positional="rotary")
    _, cache = model.run_with_cache(ids())
    block = model.blocks[0]
    x = cache["blocks.0.hook_resid_pre"]
    torch.testing.assert_close(cache["blocks.0.hook_attn_out"], block.attn(block.ln1(x)))
    torch.testing.assert_close(cache["blocks.0.hook_mlp_out"], block.mlp(block.ln2(x)))
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"],
                               x + cache["blocks.0.hook_attn_out"] + cache["blocks.0.hook_mlp_out"])
    assert "blocks.0.hook_resid_mid" not in model.hook_names()
    assert model.cfg.parallel_attn_mlp


def test_parallel_block_generates_the_same_with_and_without_the_kv_cache():
    model = build(parallel_block=True, positional="rotary", rotary_dim=4, n_kv_head=2)
    prompt = ids(2, 4)
    assert model.generate(prompt, 10, temperature=0).tolist() == \
        model.generate(prompt, 10, temperature=0, use_kv_cache=False).tolist()


def test_parallel_block_trains():
    model = build(parallel_block=True).train()
    loss = model(ids(), return_type="loss")
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# ---- partial rotary and RoPE scaling -------------------------------------------------------------
def test_partial_rotary_rotates_only_the_first_features():
    model = build(positional="rotary", rotary_dim=4)
    _, cache = model.run_with_cache(ids())
    q, rot = cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_rot_q"]
    torch.testing.assert_close(rot[..., 4:], q[..., 4:], rtol=0, atol=0)  # passed through
    assert not torch.allclose(rot[:, 1:, :, :4], q[:, 1:, :, :4])  # position 0 is not rotated
    torch.testing.assert_close(rot[:, 0], q[:, 0])
    assert model.cfg.rotary_dim == 4
    # The rotated part keeps RoPE's property: q.k depends only on the distance.
    rotary = model.blocks[0].attn.rotary
    a, b = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    dots = [(rotary(a, i)[..., :4] * rotary(b, i + 3)[..., :4]).sum() for i in (0, 5)]
    torch.testing.assert_close(dots[0], dots[1])


def test_rope_scaling_frequencies():
    base = rope_frequencies(8, 10000.0)
    torch.testing.assert_close(rope_frequencies(8, 10000.0, {"rope_type": "linear", "factor": 4.0}), base / 4)
    scaled = rope_frequencies(8, 10000.0, {**LLAMA3, "original_max_position_embeddings": 64})
    wavelength = 2 * math.pi / base  # 6.3, 63, 628, 6283
    high = wavelength < 64 / 4.0  # shorter than original_context / high_freq_factor: kept
    low = wavelength > 64 / 1.0  # longer than original_context / low_freq_factor: divided by factor
    torch.testing.assert_close(scaled[high], base[high])
    torch.testing.assert_close(scaled[low], base[low] / 8)
    medium = ~(high | low)  # in between: blended, strictly between the two
    assert high.any() and low.any() and medium.any()
    assert ((scaled[medium] < base[medium]) & (scaled[medium] > base[medium] / 8)).all()


def test_rope_scaling_matches_transformers():
    for scaling in ({"rope_type": "linear", "factor": 3.0}, {**LLAMA3, "original_max_position_embeddings": 64}):
        hf = LlamaConfig(hidden_size=256, num_attention_heads=2, rope_scaling=dict(scaling), rope_theta=5e5)
        theirs, _ = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf)
        torch.testing.assert_close(rope_frequencies(128, 5e5, scaling), theirs, rtol=0, atol=0)


def test_rotary_tables_stay_float32_in_half_precision_and_after_to_empty():
    model = build(positional="rotary").to(torch.bfloat16)
    rotary = model.blocks[0].attn.rotary
    assert rotary.inv_freq.dtype == rotary.cos.dtype == torch.float32
    reference = Rotary(model.config)
    torch.testing.assert_close(rotary.cos, reference.cos, rtol=0, atol=0)
    with torch.device("meta"):
        empty = GPT(model.config)
    empty = empty.to_empty(device="cpu")
    torch.testing.assert_close(empty.blocks[0].attn.rotary.sin, reference.sin, rtol=0, atol=0)
    assert empty.unembed.weight is empty.embed.W_E  # to_empty makes new Parameters; the tie survives


def test_rotary_table_grows_past_its_first_length():
    model = build(positional="rotary", block_size=64)
    rotary = model.blocks[0].attn.rotary
    length = rotary.cos.shape[0]
    x = torch.randn(1, 4, 1, 8)
    rotary(x, length + 10)
    assert rotary.cos.shape[0] > length + 14
    torch.testing.assert_close(rotary.cos[: length], Rotary(model.config).cos)


# ---- biases apart from `bias` ------------------------------------------------------------------
def test_qkv_and_mlp_bias_override_bias():
    qwen_like = build(bias=False, qkv_bias=True, norm="rmsnorm", mlp="swiglu", positional="rotary")
    block = qwen_like.blocks[0]
    assert block.attn.qkv.bias is not None and block.attn.out.bias is None
    assert block.mlp.fc_in.bias is None and block.mlp.fc_gate.bias is None
    other = build(bias=True, mlp_bias=False, qkv_bias=False)
    assert other.blocks[0].attn.qkv.bias is None and other.blocks[0].attn.out.bias is not None
    assert other.blocks[0].mlp.fc_out.bias is None and other.blocks[0].ln1.b is not None
    assert build(bias=False).blocks[0].attn.qkv.bias is None  # None follows `bias`
    torch.testing.assert_close(qwen_like.b_Q[0], block.attn.qkv.bias[:32].view(4, 8))


# ---- precision ---------------------------------------------------------------------------------
def test_rmsnorm_in_bf16_normalises_in_float32_like_transformers():
    model = build(norm="rmsnorm").to(torch.bfloat16)
    norm = model.blocks[0].ln1
    x = (torch.randn(3, 5, 32) * 40).to(torch.bfloat16)
    wide = x.float()
    expected = norm.w * (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + norm.eps)).to(torch.bfloat16)
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=0)
    names = ("blocks.0.hook_resid_pre", "blocks.0.ln1.hook_normalized")
    _, cache = model.run_with_cache(ids(), names_filter=list(names))  # the hooked path agrees
    with torch.no_grad():
        plain = norm(cache[names[0]])
    torch.testing.assert_close(cache[names[1]].float(), plain.float(), atol=0.05, rtol=0.02)


def test_fused_and_materialised_attention_agree_in_bf16():
    model = build(positional="rotary", norm="rmsnorm", mlp="swiglu").to(torch.bfloat16)
    with torch.no_grad():
        fused = model(ids()).float()
    hooked, _ = model.run_with_cache(ids())
    assert (hooked.float() - fused).abs().max().item() < 0.1 * fused.abs().max().item()


def test_generation_allocates_the_kv_cache_it_can_reach_not_the_whole_context():
    model = build(positional="rotary", block_size=100_000)
    sizes = []
    original = model.new_kv_cache
    model.new_kv_cache = lambda capacity=None: sizes.append(capacity) or original(capacity)
    model.generate(ids(1, 5), max_new_tokens=3, temperature=0)
    assert sizes == [8]


def test_old_config_json_still_loads(tmp_path):
    """A config.json as nanolens wrote it before these variants existed."""
    fields = dict(TINY, n_kv_head=None, d_mlp=None, positional="learned", norm="layernorm", norm_position="pre",
                  norm_eps=1e-5, attention="multi_head", mlp="gelu", bias=True, tie_weights=True, dropout=0.0,
                  rope_base=10000.0, use_attn=True, use_mlp=True, use_residual=True, use_final_norm=True,
                  use_attn_result=False, use_split_qkv_input=False, use_attn_in=False, use_hook_mlp_in=False,
                  use_hook_unembed=False, preset="gpt2", extra={})
    (tmp_path / "config.json").write_text(json.dumps(fields))
    config = GPTConfig.load(tmp_path / "config.json")
    assert config.to_dict() == fields
