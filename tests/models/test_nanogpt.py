"""nanoGPT checkpoints in and out: `GPT.from_nanogpt` and `GPT.to_nanogpt`.

The checkpoints here are built by hand in nanoGPT's exact format (train.py's `checkpoint`
dict, model.py's parameter names), and the logits are checked against an independent
re-implementation of nanoGPT's forward pass that reads that state dict directly.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nanolens.models import GPT, CharTokenizer, CheckpointError, preset_config

ARGS = dict(n_layer=2, n_head=2, n_embd=16, block_size=12, bias=True, vocab_size=11, dropout=0.0)


# ---- nanoGPT, independently: model.py's math over its own state dict -------------------------
def nanogpt_forward(sd: dict[str, torch.Tensor], args: dict, idx: torch.Tensor) -> torch.Tensor:
    """Logits [batch, pos, vocab] exactly as nanoGPT's GPT.forward computes them (no dropout)."""
    C, n_head = args["n_embd"], args["n_head"]

    def layer_norm(x, name):  # nanoGPT's LayerNorm with optional bias, eps 1e-5
        return F.layer_norm(x, (C,), sd[f"{name}.weight"], sd.get(f"{name}.bias"), 1e-5)

    def linear(x, name):
        return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))

    B, T = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][torch.arange(T)]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(args["n_layer"]):
        h = f"transformer.h.{i}"
        # CausalSelfAttention: c_attn -> q, k, v split on the channel dim, then heads
        q, k, v = linear(layer_norm(x, f"{h}.ln_1"), f"{h}.attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = F.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + linear(y, f"{h}.attn.c_proj")
        # MLP: c_fc -> exact GELU -> c_proj
        x = x + linear(F.gelu(linear(layer_norm(x, f"{h}.ln_2"), f"{h}.mlp.c_fc")), f"{h}.mlp.c_proj")
    x = layer_norm(x, "transformer.ln_f")
    return F.linear(x, sd["lm_head.weight"])


def nanogpt_state(args: dict, seed: int = 0, mask_buffer: bool = False) -> dict[str, torch.Tensor]:
    """A random state dict with nanoGPT's key names (and, optionally, the non-flash attention's
    causal-mask buffer `attn.bias`, which nanoGPT registers when flash attention is missing)."""
    gen = torch.Generator().manual_seed(seed)
    C, V, T, bias = args["n_embd"], args["vocab_size"], args["block_size"], args["bias"]

    def rand(*shape, mean=0.0):
        return torch.randn(*shape, generator=gen) * 0.3 + mean

    sd = {"transformer.wte.weight": rand(V, C), "transformer.wpe.weight": rand(T, C)}
    for i in range(args["n_layer"]):
        h = f"transformer.h.{i}"
        for ln in ("ln_1", "ln_2"):
            sd[f"{h}.{ln}.weight"] = rand(C, mean=1.0)
            if bias:
                sd[f"{h}.{ln}.bias"] = rand(C)
        if mask_buffer:
            sd[f"{h}.attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
        for name, (n_out, n_in) in {"attn.c_attn": (3 * C, C), "attn.c_proj": (C, C),
                                    "mlp.c_fc": (4 * C, C), "mlp.c_proj": (C, 4 * C)}.items():
            sd[f"{h}.{name}.weight"] = rand(n_out, n_in)
            if bias:
                sd[f"{h}.{name}.bias"] = rand(n_out)
    sd["transformer.ln_f.weight"] = rand(C, mean=1.0)
    if bias:
        sd["transformer.ln_f.bias"] = rand(C)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # nanoGPT ties them: one tensor
    return sd


def save_nanogpt(path: Path, args: dict, state: dict, prefix: str = "") -> Path:
    """torch.save the dict nanoGPT's train.py writes (optimizer state included)."""
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95))
    params[0].grad = torch.ones(2)
    optimizer.step()
    checkpoint = {
        "model": {prefix + k: v for k, v in state.items()},
        "optimizer": optimizer.state_dict(),
        "model_args": dict(args),
        "iter_num": 5000,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"dataset": "shakespeare_char", "learning_rate": 1e-3, "compile": bool(prefix)},
    }
    torch.save(checkpoint, path)
    return path


IDX = torch.tensor([[1, 4, 2, 8, 5, 7, 3, 0, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]])


# ---- loading ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("variant", ["plain", "compiled", "mask_buffer"])
def test_from_nanogpt_matches_nanogpts_own_forward(tmp_path, bias, variant):
    args = {**ARGS, "bias": bias}
    state = nanogpt_state(args, mask_buffer=variant == "mask_buffer")
    path = save_nanogpt(tmp_path / "ckpt.pt", args, state, prefix="_orig_mod." if variant == "compiled" else "")
    model = GPT.from_nanogpt(path)
    assert not model.training and model.config.preset == "gpt2" and model.config.bias == bias
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == (2, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(IDX), nanogpt_forward(state, args, IDX), atol=1e-5, rtol=0)
    assert model.unembed.weight is model.embed.W_E  # still tied


def test_from_nanogpt_attaches_a_tokenizer(tmp_path):
    path = save_nanogpt(tmp_path / "ckpt.pt", ARGS, nanogpt_state(ARGS))
    tokenizer = CharTokenizer("abcdefghij ")
    model = GPT.from_nanogpt(path, tokenizer=tokenizer)
    assert model.to_str_tokens("abc") == ["a", "b", "c"]
    with torch.no_grad():
        expected = nanogpt_forward(nanogpt_state(ARGS), ARGS, torch.tensor([tokenizer.encode("abc")]))
        torch.testing.assert_close(model("abc"), expected, atol=1e-5, rtol=0)


# ---- writing back ----------------------------------------------------------------------------
def scrambled_gpt2(seed: int = 0) -> GPT:
    config = preset_config("gpt2", n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=11)
    model = GPT(config, tokenizer=CharTokenizer("abcdefghij "))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


def test_round_trip_directory_to_nanogpt_and_back_is_exact(tmp_path):
    original = scrambled_gpt2()
    original.save(tmp_path / "run")
    loaded = GPT.load(tmp_path / "run")
    path = loaded.to_nanogpt(tmp_path / "out" / "ckpt.pt")
    back = GPT.from_nanogpt(path)
    for (name, a), (name_b, b) in zip(original.state_dict().items(), back.state_dict().items(), strict=True):
        assert name == name_b and torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(back(IDX), original(IDX))
    # The file itself is nanoGPT's format: its keys, its model_args, weights nanoGPT's math reads.
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint) >= {"model", "model_args", "iter_num", "best_val_loss", "config"}
    assert checkpoint["model_args"] == {**ARGS, "vocab_size": 11}
    state = checkpoint["model"]
    assert set(state) == set(nanogpt_state(ARGS))
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()  # tied
    with torch.no_grad():
        torch.testing.assert_close(nanogpt_forward(state, checkpoint["model_args"], IDX), original(IDX),
                                   atol=1e-5, rtol=0)
    assert not list((tmp_path / "out").glob(".*tmp*"))  # the atomic write left nothing behind


def test_round_trip_without_bias(tmp_path):
    args = {**ARGS, "bias": False}
    path = save_nanogpt(tmp_path / "a.pt", args, nanogpt_state(args, seed=3))
    first = GPT.from_nanogpt(path)
    again = GPT.from_nanogpt(first.to_nanogpt(tmp_path / "b.pt"))
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "preset, overrides, differs",
    [("modern", {}, "positional"), ("gpt2", {"tie_weights": False}, "tie_weights"),
     ("gpt2", {"n_kv_head": 1}, "kv_heads"), ("gpt2", {"mlp": "relu"}, "mlp")],
)
def test_to_nanogpt_refuses_models_nanogpt_cannot_hold(tmp_path, preset, overrides, differs):
    config = preset_config(preset, n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11, **overrides)
    with pytest.raises(CheckpointError, match=f"only gpt2-preset.*{differs}"):
        GPT(config).to_nanogpt(tmp_path / "ckpt.pt")
    assert not (tmp_path / "ckpt.pt").exists()


# ---- refusals --------------------------------------------------------------------------------
def write_state(tmp_path, edit) -> Path:
    state = nanogpt_state(ARGS)
    edit(state)
    return save_nanogpt(tmp_path / "ckpt.pt", ARGS, state)


def test_refuses_missing_keys(tmp_path):
    path = write_state(tmp_path, lambda s: s.pop("transformer.h.1.mlp.c_fc.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks\.1\.mlp\.fc_in\.weight'\]"):
        GPT.from_nanogpt(path)


def test_refuses_unexpected_keys(tmp_path):
    path = write_state(tmp_path, lambda s: s.update({"transformer.h.0.attn.rotary.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['transformer\.h\.0\.attn\.rotary\.weight'\]"):
        GPT.from_nanogpt(path)


def test_refuses_wrong_shapes(tmp_path):
    path = write_state(tmp_path, lambda s: s.update({"transformer.wpe.weight": torch.zeros(24, 16)}))
    with pytest.raises(CheckpointError, match=r"transformer\.wpe\.weight has shape \(24, 16\).*\(12, 16\)"):
        GPT.from_nanogpt(path)


def test_refuses_incomplete_model_args(tmp_path):
    args = {k: v for k, v in ARGS.items() if k != "n_head"}
    path = save_nanogpt(tmp_path / "ckpt.pt", args, nanogpt_state(ARGS))
    with pytest.raises(CheckpointError, match=r"model_args lacks \['n_head'\]"):
        GPT.from_nanogpt(path)


@pytest.mark.parametrize(
    "content, message",
    [([1, 2, 3], "not in nanoGPT's format"),
     ({"model": {}}, "not in nanoGPT's format"),
     ({"model": torch.zeros(3), "model_args": ARGS}, "not in nanoGPT's format")],
)
def test_refuses_torch_files_that_are_not_nanogpt_checkpoints(tmp_path, content, message):
    torch.save(content, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match=message):
        GPT.from_nanogpt(tmp_path / "ckpt.pt")


@pytest.mark.parametrize("content", [b"", b"just some text\n", bytes(range(256)) * 4, b"PK\x03\x04broken zip"])
def test_refuses_files_that_are_not_torch_checkpoints(tmp_path, content):
    (tmp_path / "ckpt.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        GPT.from_nanogpt(tmp_path / "ckpt.pt")


def test_refuses_a_truncated_checkpoint(tmp_path):
    path = save_nanogpt(tmp_path / "ckpt.pt", ARGS, nanogpt_state(ARGS))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        GPT.from_nanogpt(path)


def test_refuses_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no nanoGPT checkpoint at"):
        GPT.from_nanogpt(tmp_path / "nope.pt")


class Payload:
    """Unpickling this would call Path.touch: arbitrary code that weights_only must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "code_ran"
    checkpoint = {"model_args": ARGS, "model": nanogpt_state(ARGS), "config": Payload(marker)}
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="arbitrary code"):
        GPT.from_nanogpt(tmp_path / "ckpt.pt")
    assert not marker.exists()
