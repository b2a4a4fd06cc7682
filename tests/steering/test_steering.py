"""nanolens.steering (issue 5): vectors and their arithmetic, directions, steering with and
without the KV cache, evaluation, the `steer` command, and clear errors for bad input.

Most tests run on scrambled tiny models (see conftest: well-separated logits, so greedy
decoding never hinges on a rounding-level near-tie). One module fixture trains a tiny model for
a few seconds on a synthetic two-sentiment corpus, to check that a found direction really moves
what it should.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nanolens.cli import main
from nanolens.models import GPT, CharTokenizer, GPTConfig
from nanolens.steering import RowSteering, Steering, SteeringError, SteeringVector, contrast_pair, cosine_table, mean_difference, pca_direction, probe_direction, random_direction, steer, sweep, top_tokens
from nanolens.steering.fluency import continuation_perplexity
from nanolens.steering.sweep import evaluate_settings, grid_settings
from nanolens.steering.plots import plot_layer_heatmap, plot_sentiment_vs_coeff
from nanolens.steering.selection import summarize_sweep

ALPHABET = "abcdefghij .\n"
H0, H1 = "blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"




@pytest.fixture
def tok() -> CharTokenizer:
    return CharTokenizer(ALPHABET)


@pytest.fixture
def model(make_model, tok):
    return make_model(tokenizer=tok, block_size=24)


def _vec(model, hook=H1, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    from nanolens.steering import model_fingerprint

    return SteeringVector({hook: torch.randn(model.config.n_embd, generator=g) * scale}, model=model_fingerprint(model),
                          scales={hook: 2.0}, provenance={"method": "test"}, label=f"v{seed}")


def _manual(model, tokens, adds: dict[str, torch.Tensor], mask: torch.Tensor):
    """Reference: run the whole sequence once, adding adds[hook] at the positions where mask is True."""
    def make(t):
        return lambda act, hook: act + mask[None, :, None].to(act.dtype) * t
    return model.run_with_hooks(tokens, fwd_hooks=[(h, make(t)) for h, t in adds.items()])


# ---------------------------------------------------------------------------------------------
# the vector and its arithmetic
# ---------------------------------------------------------------------------------------------
def test_arithmetic_equals_tensor_arithmetic(model):
    a, b = _vec(model, seed=0), _vec(model, seed=1)
    ta, tb = a[H1], b[H1]
    torch.testing.assert_close((a - b)[H1], ta - tb)
    torch.testing.assert_close((a + b)[H1], ta + tb)
    torch.testing.assert_close((2.5 * a)[H1], 2.5 * ta)
    torch.testing.assert_close((a * 2.5)[H1], 2.5 * ta)
    torch.testing.assert_close((-a)[H1], -ta)
    torch.testing.assert_close((a / 4)[H1], ta / 4)
    torch.testing.assert_close(sum([a, b])[H1], ta + tb)
    torch.testing.assert_close((np.float32(2.0) * a)[H1], 2 * ta)
    assert math.isclose(a.norm, float(ta.norm()), rel_tol=1e-6)
    assert math.isclose(a.normalize().norm, 1.0, rel_tol=1e-6)
    assert math.isclose(a.cosine(b), float(F.cosine_similarity(ta, tb, dim=0)), rel_tol=1e-5)
    assert math.isclose(a.cosine(2 * a), 1.0, rel_tol=1e-6) and math.isclose(a.cosine(-a), -1.0, rel_tol=1e-6)
    # hooks present in one operand only are kept (the other counts as zero there)
    c = _vec(model, hook=H0, seed=2)
    both = a - c
    assert set(both.hooks) == {H0, H1}
    torch.testing.assert_close(both[H0], -c[H0])
    torch.testing.assert_close(both[H1], ta)
    assert "v0 - v2" in both.label and both.provenance["method"] == "arithmetic"
    with pytest.raises(SteeringError, match="zero"):
        a / 0
    with pytest.raises(SteeringError, match="finite"):
        a * float("nan")
    with pytest.raises(TypeError):
        a * a


def test_mean_difference_compositions_equal_the_direct_computation(model):
    A = ["abc dd.", "aaa bb", "jig a.", "bad cab"]
    B = ["hhh", "ghi jj", "fff ffff", "e e e"]
    C = ["cab", "dig dig", "ace.", "bead be"]
    ab = mean_difference(model, A, B, 1)
    cb = mean_difference(model, C, B, 1)
    ac = mean_difference(model, A, C, 1)
    torch.testing.assert_close((ab - cb)[H1], ac[H1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((ab + (-cb))[H1], ac[H1], atol=1e-5, rtol=1e-5)
    # and the mean difference itself is the direct computation over a plain cache
    def last(texts):
        rows = []
        for t in texts:
            _, cache = model.run_with_cache(t, names_filter=[H1])
            rows.append(cache[H1][0, -1])
        return torch.stack(rows).mean(0)
    torch.testing.assert_close(ab[H1], last(A) - last(B), atol=1e-5, rtol=1e-5)
    assert ab.provenance["method"] == "mean_difference" and ab.provenance["position"] == "last"
    assert ab.scales[H1] > 0 and ab.model["d_model"] == model.config.n_embd


def test_contrast_pair_is_position_aligned_and_padded(model):
    v = contrast_pair(model, "abcd", "ef", 1)  # "ef" is padded with spaces to "ef  "
    assert v[H1].shape == (4, model.config.n_embd) and v.aligned
    _, cache = model.run_with_cache(model.to_tokens(["abcd", "ef  "]), names_filter=[H1])
    torch.testing.assert_close(v[H1], cache[H1][0] - cache[H1][1])
    mean = contrast_pair(model, "abcd", "ef", 1, position="mean")
    _, ca = model.run_with_cache("abcd", names_filter=[H1])
    _, cb = model.run_with_cache("ef", names_filter=[H1])
    torch.testing.assert_close(mean[H1], ca[H1][0].mean(0) - cb[H1][0].mean(0), atol=1e-5, rtol=1e-5)
    last = contrast_pair(model, "abcd", "ef", 1, position="last")
    torch.testing.assert_close(last[H1], ca[H1][0, -1] - cb[H1][0, -1], atol=1e-5, rtol=1e-5)
    assert v.provenance["padded_length"] == 4 and v.provenance["positive"] == "abcd"
    torch.testing.assert_close(v.reduce("mean")[H1], v[H1].mean(0))


def test_pca_centring_is_explicit(model, monkeypatch):
    """Pairs that all differ by the same concept u (plus a little noise): the uncentred first
    component is u and its length the mean projection (comparable with the mean difference);
    centring first (repeng's pca_diff) removes exactly that shared difference."""
    import nanolens.steering.directions as directions

    d, n = model.config.n_embd, 32
    gen = torch.Generator().manual_seed(0)
    u = torch.zeros(d)
    u[0] = 1.0
    base = torch.randn(n, d, generator=gen)
    diffs = 2.0 * u + 0.05 * torch.randn(n, d, generator=gen)
    reads = iter([base + diffs, base, base + diffs, base, base, base + diffs])
    monkeypatch.setattr(directions, "_read", lambda *a, **k: next(reads))
    texts = ["ab"] * n
    raw = pca_direction(model, texts, texts, 1)
    centred = pca_direction(model, texts, texts, 1, center=True)
    flipped = pca_direction(model, texts, texts, 1)  # positive and negative swapped
    assert raw.cosine(SteeringVector({H1: diffs.mean(0)})) > 0.99
    assert math.isclose(raw.norm, float(diffs.mean(0) @ raw.unit()), rel_tol=1e-4)
    assert abs(float(centred.unit() @ u)) < 0.5
    assert raw.provenance["centring"].startswith("none") and "removed" in centred.provenance["centring"]
    assert flipped.cosine(raw) < -0.99  # the sign points from negative to positive
    with pytest.raises(SteeringError, match="matched pairs"):
        pca_direction(model, texts, texts[:-1], 1)


def test_random_direction_matches_norm_and_is_seeded(model):
    v = _vec(model)
    r = random_direction(like=v, seed=3)
    assert math.isclose(r.norm, v.norm, rel_tol=1e-5) and r.hooks == v.hooks and r.scales == v.scales
    torch.testing.assert_close(random_direction(like=v, seed=3)[H1], r[H1])
    assert not torch.allclose(random_direction(like=v, seed=4)[H1], r[H1])
    free = random_direction(16, norm=2.0, seed=0, layer=1)
    assert free.hooks == [H1] and math.isclose(free.norm, 2.0, rel_tol=1e-6) and free.model is None
    assert set((free + v).hooks) == {H1}  # a model-free vector combines with any model's of its width


def test_probe_direction(model):
    from nanolens.probes import LinearProbe, extract_activations

    texts = ["abc" * k for k in range(1, 7)] + ["hij" * k for k in range(1, 7)]
    labels = ["negative"] * 6 + ["positive"] * 6
    acts = extract_activations(model, texts, hooks=[H1], progress=False)
    probe = LinearProbe().fit(acts[H1], labels)
    v = probe_direction(probe, model, 1)
    assert math.isclose(v.norm, 1.0, rel_tol=1e-5) and v.provenance["toward"] == "positive"
    assert v.scales[H1] > 0  # from the probe's scaler
    score = probe.decision_function(acts[H1] + 0.5 * v[H1].numpy())
    assert (score > probe.decision_function(acts[H1])).all()
    with pytest.raises(SteeringError, match="width"):
        probe_direction(LinearProbe().fit(np.random.default_rng(0).normal(size=(8, 5)), [0, 1] * 4), model, 1)


def test_save_and_load_round_trip(model, tmp_path):
    v = (_vec(model) - 0.5 * _vec(model, seed=1)) + contrast_pair(model, "abc", "de", 0)
    path = v.save(tmp_path / "vecs" / "happy")
    assert path.name == "happy.safetensors" and (tmp_path / "vecs" / "happy.json").is_file()
    w = SteeringVector.load(tmp_path / "vecs" / "happy.json")
    assert w.allclose(v) and w.hooks == v.hooks and w[H0].shape == v[H0].shape
    assert w.model == v.model and w.scales == pytest.approx(v.scales) and w.label == v.label
    assert w.provenance == json.loads(json.dumps(v.provenance, default=str))
    with pytest.raises(FileNotFoundError, match="missing"):
        SteeringVector.load(tmp_path / "nothing")
    (tmp_path / "vecs" / "happy.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SteeringError, match="JSON"):
        SteeringVector.load(tmp_path / "vecs" / "happy")


# ---------------------------------------------------------------------------------------------
# refusing what cannot work
# ---------------------------------------------------------------------------------------------
def test_vectors_of_other_models_or_widths_are_refused(make_model, model, tok):
    other = make_model(tokenizer=tok, block_size=24, seed=5)  # same architecture, other weights
    wide = make_model(tokenizer=tok, block_size=24, n_embd=32)
    a, b, w = _vec(model), _vec(other), _vec(wide)
    with pytest.raises(SteeringError, match="different models"):
        a + b
    with pytest.raises(SteeringError, match="different widths"):
        a - w
    with pytest.raises(SteeringError, match="check_model=False"):
        with steer(other, a):
            pass
    with pytest.raises(SteeringError, match="width 16 but the model's d_model is 32"):
        with steer(wide, a, check_model=False):
            pass
    with steer(other, a, check_model=False) as s:  # on purpose: a direction from another checkpoint
        other(torch.zeros(1, 4, dtype=torch.long))
    assert s.report().total == 4
    moved = a.for_model(other)
    assert moved.provenance["transferred_from"] == a.model
    with steer(other, moved):
        pass


def test_layer_out_of_range_non_finite_coefficients_and_empty_prompts(model):
    for layer in (2, 7, -3):
        with pytest.raises(SteeringError, match="out of range: this model has 2 layers"):
            contrast_pair(model, "ab", "cd", layer)
    with pytest.raises(SteeringError, match="out of range"):
        mean_difference(model, ["ab"], ["cd"], 5)
    with pytest.raises(SteeringError, match="out of range"):
        random_direction(model=model, layer=4)
    stray = SteeringVector({"blocks.5.hook_resid_pre": torch.ones(16)})
    with pytest.raises(SteeringError, match="only 2 layers"):
        with steer(model, stray):
            pass
    v = _vec(model)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(SteeringError, match="finite"):
            Steering(v, coeff=bad)
        with pytest.raises(SteeringError, match="finite"):
            sweep(model, ["ab"], {"v": v}, [0, bad], progress=False)
    with pytest.raises(SteeringError, match="real number"):
        Steering(v, coeff="4")
    with pytest.raises(SteeringError, match="positions"):
        Steering(v, positions="prompts")
    with pytest.raises(SteeringError, match="k >= 1"):
        Steering(v, positions=0)
    with pytest.raises(SteeringError, match="empty"):
        contrast_pair(model, "", "cd", 1)
    with pytest.raises(SteeringError, match="empty"):
        mean_difference(model, [], ["cd"], 1)
    with pytest.raises(SteeringError, match="empty string"):
        mean_difference(model, ["ab", ""], ["cd"], 1)
    with pytest.raises(SteeringError, match="not one string"):
        mean_difference(model, "ab", ["cd"], 1)
    with pytest.raises(SteeringError, match="no prompts"):
        sweep(model, [], {"v": v}, [1.0], progress=False)
    with pytest.raises(SteeringError, match="prompt 1 is empty"):
        sweep(model, ["ab", ""], {"v": v}, [1.0], progress=False)
    with pytest.raises(ValueError, match="prompt is empty"):
        model.generate("", steering=Steering(v))
    with pytest.raises(SteeringError, match="relative"):
        Steering(SteeringVector({H1: torch.ones(16)}), relative=True)
    with pytest.raises(SteeringError):  # a bad steering fails at the call, before any next()
        model.generate_stream("ab", steering=Steering(stray))


# ---------------------------------------------------------------------------------------------
# applying: positions, the KV cache, reports
# ---------------------------------------------------------------------------------------------
def _expected(mode, P, N):
    last = P + N - 2  # the last generated token is never fed back through the model
    return {"all": set(range(0, last + 1)), "prompt": set(range(P)), "generated": set(range(P, last + 1))}.get(
        mode, set(range(min(mode, last + 1)) if isinstance(mode, int) else set()))


@pytest.mark.parametrize("mode", ["all", "prompt", "generated", 3, 9])
@pytest.mark.parametrize("new", [10, 30], ids=["in-context", "past-block-size"])
def test_greedy_steered_generation_is_identical_with_and_without_the_kv_cache(model, mode, new):
    v = 4.0 * _vec(model, seed=3)
    prompt = torch.tensor([[1, 2, 3, 4, 5]])
    runs = {}
    for cache in (True, False):
        s = Steering(v, positions=mode)
        out = model.generate(prompt, max_new_tokens=new, temperature=0, use_kv_cache=cache, steering=s)
        runs[cache] = (out, s.report())
    (cached, rc), (plain, rp) = runs[True], runs[False]
    assert torch.equal(cached, plain)
    assert rc.text_positions[H1] == rp.text_positions[H1] == _expected(mode, 5, new)
    assert rc.forward_passes == rp.forward_passes == new
    unsteered = model.generate(prompt, max_new_tokens=new, temperature=0)
    if mode in ("all", "generated", 9):
        assert not torch.equal(cached, unsteered)  # the vector is strong enough to change the text


def test_steering_fires_on_every_cached_decode_step(model):
    v = _vec(model)
    P, N = 5, 12
    s = Steering(v, positions="all")
    model.generate(torch.tensor([[1, 2, 3, 4, 5]]), max_new_tokens=N, temperature=0, steering=s)
    r = s.report()
    assert r.forward_passes == N and r.calls[H1] == N  # the prompt pass, then every one-token step
    assert r.touched[H1] == P + (N - 1)
    g = Steering(v, positions="generated")
    model.generate(torch.tensor([[1, 2, 3, 4, 5]] * 3), max_new_tokens=N, temperature=0, steering=g)
    assert g.report().calls[H1] == N - 1 and g.report().touched[H1] == 3 * (N - 1)
    p = Steering(v, positions="prompt")
    model.generate(torch.tensor([[1, 2, 3, 4, 5]]), max_new_tokens=N, temperature=0, steering=p)
    assert p.report().calls[H1] == 1 and p.report().touched[H1] == P
    assert "steering touched blocks.1.hook_resid_pre" in str(r)


def test_cached_steps_match_the_full_sequence_reference(model):
    """A hand-written cached loop (outside generate): the prompt call starts the cache, later
    one-token calls continue it; each mode must equal adding the vector at the right positions
    of the whole sequence at once."""
    v = _vec(model)
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9]])
    P = 4
    masks = {"all": torch.ones(9, dtype=torch.bool), "prompt": torch.arange(9) < P,
             "generated": torch.arange(9) >= P, 2: torch.arange(9) < 2, 6: torch.arange(9) < 6}
    for mode, mask in masks.items():
        reference = _manual(model, tokens, {H1: v[H1]}, mask)
        with steer(model, v, positions=mode) as s:
            cache = model.new_kv_cache()
            pieces = [model(tokens[:, :P], kv_cache=cache)]
            for j in range(P, 9):
                pieces.append(model(tokens[:, j : j + 1], kv_cache=cache))
        torch.testing.assert_close(torch.cat(pieces, 1), reference, atol=1e-4, rtol=1e-4)
        assert s.report().text_positions.get(H1, set()) == set(torch.nonzero(mask).flatten().tolist())


def test_plain_forward_calls_are_all_prompt(model):
    v = _vec(model)
    x = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    full = _manual(model, x, {H1: v[H1]}, torch.ones(8, dtype=torch.bool))
    for mode in ("all", "prompt"):
        with steer(model, v, positions=mode):
            torch.testing.assert_close(model(x), full)
    plain = model(x)
    with steer(model, v, positions="generated") as s:
        torch.testing.assert_close(model(x), plain)
    assert s.report().total == 0 and "touched nothing" in str(s.report())
    first3 = _manual(model, x, {H1: v[H1]}, torch.arange(8) < 3)
    with steer(model, v, positions=3):
        torch.testing.assert_close(model(x), first3)


def test_aligned_vector_goes_to_the_first_positions(model):
    v = 3.0 * contrast_pair(model, "abc", "hij", 1)  # [3, d]: row i at text position i
    x = torch.tensor([[1, 2, 3, 4, 5, 6]])
    seen = {}

    def reference_hook(act, hook):
        out = act.clone()
        out[:, :3] += v[H1]
        return out

    reference = model.run_with_hooks(x, fwd_hooks=[(H1, reference_hook)])
    with steer(model, v) as s:
        torch.testing.assert_close(model(x), reference)
    assert s.report().text_positions[H1] == {0, 1, 2}
    for cache in (True, False):
        t = Steering(v)
        seen[cache] = model.generate(x[:, :2], max_new_tokens=8, temperature=0, use_kv_cache=cache, steering=t)
        assert t.report().text_positions[H1] == {0, 1, 2}
    assert torch.equal(seen[True], seen[False])


def test_relative_coefficients_use_the_typical_norm(model):
    v = _vec(model)  # scales = {H1: 2.0}
    x = torch.tensor([[1, 2, 3]])
    added = []
    base = model.run_with_cache(x, names_filter=[H1])[1][H1]
    with steer(model, v, coeff=0.75, relative=True):
        model.run_with_hooks(x, fwd_hooks=[(H1, lambda act, hook: added.append(act - base))])
    assert torch.allclose(added[0].norm(dim=-1), torch.full((1, 3), 0.75 * 2.0), atol=1e-5)
    torch.testing.assert_close(added[0][0, 0] / added[0][0, 0].norm(), v.unit())


def test_several_vectors_at_several_layers(model):
    a, b = _vec(model, hook=H0, seed=1), _vec(model, hook=H1, seed=2)
    x = torch.tensor([[1, 2, 3, 4]])
    ref = _manual(model, x, {H0: 1.5 * a[H0], H1: 1.5 * 2.0 * b[H1]}, torch.ones(4, dtype=torch.bool))
    with steer(model, [a, (b, 2.0)], coeff=1.5) as s:
        torch.testing.assert_close(model(x), ref)
    assert set(s.report().touched) == {H0, H1}
    with steer(model, a + 2.0 * b, coeff=1.5):  # the same as one combined vector
        torch.testing.assert_close(model(x), ref)


def test_row_steering_equals_separate_runs(model):
    a, b = _vec(model, seed=1), _vec(model, hook=H0, seed=2)
    x = torch.tensor([[1, 2, 3, 4, 5]])
    settings = [Steering(a, coeff=2.0), None, Steering(b, coeff=-1.0), Steering([a, b])]
    with steer(model, RowSteering(settings)):
        together = model(x.repeat(4, 1))
    for i, s in enumerate(settings):
        if s is None:
            alone = model(x)
        else:
            with steer(model, s):
                alone = model(x)
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-5)
    rs = RowSteering(settings)
    cached = model.generate(x.repeat(4, 1), max_new_tokens=20, temperature=0, steering=rs)
    plain = model.generate(x.repeat(4, 1), max_new_tokens=20, temperature=0, steering=rs, use_kv_cache=False)
    assert torch.equal(cached, plain)
    with pytest.raises(SteeringError, match="batch of 2"):
        with steer(model, RowSteering(settings)):
            model(x.repeat(2, 1))


def test_hooks_are_removed_afterwards_even_after_an_error(model):
    v = _vec(model)
    with pytest.raises(RuntimeError):
        with steer(model, v):
            raise RuntimeError("boom")
    assert model.attached_hooks() == {} and not model._forward_pre_hooks
    model.generate("ab", max_new_tokens=3, steering=v)
    assert model.attached_hooks() == {} and not model._forward_pre_hooks


def test_generate_stream_with_steering_matches_generate(model):
    v = _vec(model)
    s = Steering(v, coeff=2.0, positions="generated")
    full = model.generate("abc", max_new_tokens=15, temperature=0, steering=s)
    pieces = "".join(model.generate_stream("abc", max_new_tokens=15, temperature=0, steering=s))
    assert "abc" + pieces == full
    assert s.report().calls[H1] == 14
    as_dict = model.generate("abc", max_new_tokens=15, temperature=0, steering={"vectors": v, "coeff": 2.0, "positions": "generated"})
    assert as_dict == full


# ---------------------------------------------------------------------------------------------
# a direction really moves what it should (a briefly trained model)
# ---------------------------------------------------------------------------------------------
HAPPY = ("glad", "kind", "warm")
SAD = ("sad", "cold", "mean")
NAMES = ("ann", "bob", "cat", "dan", "eve", "fay")


def _mood_score(text: str) -> float:
    words = text.lower().replace(".", " ").split()
    h = sum(w in HAPPY for w in words)
    s = sum(w in SAD for w in words)
    return 0.0 if h + s == 0 else (h - s) / (h + s)


def _line(name: str, words: tuple[str, str], upper: bool) -> str:
    text = f"{name} is {words[0]} and {words[1]}."
    return text.upper() if upper else text


@pytest.fixture(scope="module")
def mood_model():
    """A 2-layer model trained for a few seconds on lines '<name> is <w> and <w>.' whose two
    adjectives share a mood, each line either all lower case or all upper case: two independent
    properties the model must carry along a line."""
    from nanolens.training.batches import TokenData
    from nanolens.training import Trainer, TrainConfig

    rng = random.Random(0)
    lines = []
    for _ in range(6000):
        words = HAPPY if rng.random() < 0.5 else SAD
        lines.append(_line(rng.choice(NAMES), (rng.choice(words), rng.choice(words)), rng.random() < 0.5))
    text = "\n".join(lines) + "\n"
    tok = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, block_size=32), tokenizer=tok)
    cfg = TrainConfig(max_iters=600, batch_size=32, learning_rate=5e-3, min_lr=5e-4, warmup_iters=20, eval_interval=0,
                      eval_iters=2, sample_interval=0, progress=False, verbose=False, save_checkpoints=False, plot=False,
                      device="cpu")
    Trainer(m, TokenData.from_text(text, tok), cfg).train()
    torch.set_num_threads(before)
    return m.eval()


def _first_letter_mass(m, probs, words, upper=None):
    letters = {w[0] for w in words}
    cases = [str.lower, str.upper] if upper is None else [str.upper if upper else str.lower]
    return float(sum(probs[m.tokenizer.encode(f(c))[0]] for c in letters for f in cases).detach())


def test_mean_difference_direction_moves_the_mood(mood_model):
    m = mood_model
    happy = [_line(n, (a, b), up) for n in NAMES for a in HAPPY for b in HAPPY for up in (False, True)]
    sad = [_line(n, (a, b), up) for n in NAMES for a in SAD for b in SAD for up in (False, True)]
    v = mean_difference(m, happy, sad, 1, position="mean", norm_texts=happy + sad)  # read over whole lines

    def p_happy(coeff):
        with steer(m, v, coeff=coeff, relative=True):
            probs = m("dan is ")[0, -1].softmax(-1)
        h, s = _first_letter_mass(m, probs, HAPPY), _first_letter_mass(m, probs, SAD)
        return h / (h + s)

    values = [p_happy(c) for c in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert values[-1] > 0.9 and values[0] < 0.1, values
    # measured on sampled text too (a tiny model's text frays under strong steering, so a
    # moderate coefficient), beside a random control of equal norm
    r = random_direction(like=v, seed=0)
    df = sweep(m, ["ann is ", "eve is "], {"mean_diff": v, "random": r}, [-0.5, 0.0, 0.5], samples_per_prompt=24,
               scorer=_mood_score, max_new_tokens=16, temperature=1.0, seed=0, progress=False)
    get = lambda method, c: df[(df.method == method) & (df.coeff == c)].iloc[0]  # noqa: E731
    base = df[df.method == "unsteered"].iloc[0]
    assert get("mean_diff", 0.5).frac_positive >= base.frac_positive + 0.2, df
    assert get("mean_diff", -0.5).frac_positive <= base.frac_positive - 0.2, df
    assert get("mean_diff", 0.5).mean_sentiment > base.mean_sentiment > get("mean_diff", -0.5).mean_sentiment
    assert get("mean_diff", 0.5).wrong_way == 0.0 and get("mean_diff", -0.5).wrong_way == 0.0
    summary = summarize_sweep(df).set_index("method")
    assert summary.loc["random", "max_move"] < summary.loc["mean_diff", "max_move"]


def _mood_and_case(m):
    """Mean-difference directions of the mood (happy vs sad lines) and of the case (upper vs lower)."""
    happy = [_line(n, (a, b), up) for n in NAMES for a in HAPPY for b in HAPPY for up in (False, True)]
    sad = [_line(n, (a, b), up) for n in NAMES for a in SAD for b in SAD for up in (False, True)]
    upper = [_line(n, (a, b), True) for n in NAMES for ws in (HAPPY, SAD) for a in ws for b in ws]
    lower = [_line(n, (a, b), False) for n in NAMES for ws in (HAPPY, SAD) for a in ws for b in ws]
    mood = mean_difference(m, happy, sad, 1, position="mean", norm_texts=happy + sad)
    case = mean_difference(m, upper, lower, 1, position="mean", norm_texts=happy + sad)
    return mood, case


def test_two_directions_at_once_steer_two_properties(mood_model):
    """Vector arithmetic is real: a mood direction plus a case direction steer both at once,
    and each alone mostly leaves the other property where it was."""
    m = mood_model
    mood, case = _mood_and_case(m)
    assert abs(mood.cosine(case)) < 0.5

    def measure(vectors):
        if vectors is None:
            probs = m("bob is ")[0, -1].softmax(-1).detach()
        else:
            with steer(m, vectors, relative=False):
                probs = m("bob is ")[0, -1].softmax(-1)
        h, s = _first_letter_mass(m, probs, HAPPY), _first_letter_mass(m, probs, SAD)
        up = _first_letter_mass(m, probs, HAPPY + SAD, upper=True)
        return h / (h + s), up / (h + s)

    k_mood = mood.scales[H1] / mood.norm
    k_case = case.scales[H1] / case.norm
    base = measure(None)
    both = measure(k_mood * mood + k_case * case)
    only_mood = measure(k_mood * mood)
    only_case = measure(k_case * case)
    assert base[0] < 0.8 and base[1] < 0.2
    assert both[0] > base[0] + 0.2 and both[1] > base[1] + 0.3, (base, both)
    assert only_mood[0] > base[0] + 0.2 and only_mood[1] < base[1] + 0.2, (base, only_mood)
    assert only_case[1] > base[1] + 0.3, (base, only_case)


def _upper_score(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return 0.0 if not letters else 2 * sum(c.isupper() for c in letters) / len(letters) - 1


def test_two_directions_added_together_steer_both_properties_in_sampled_text(mood_model):
    """The same on sampled text, through grid_settings + evaluate_settings: every combination of
    a mood and a case coefficient (the case direction without its mood component), each
    continuation scored for both properties."""
    m = mood_model
    mood, case = _mood_and_case(m)
    case = case.without(mood)
    assert abs(case.cosine(mood)) < 1e-5
    settings = grid_settings({"mood": mood, "case": case}, {"mood": [-0.5, 0.0, 0.5], "case": [0.0, 0.5]})
    assert list(settings) == ["mood=-0.5 case=+0", "mood=-0.5 case=+0.5", "unsteered", "mood=+0 case=+0.5",
                              "mood=+0.5 case=+0", "mood=+0.5 case=+0.5"]
    assert settings["unsteered"] is None and len(settings["mood=+0.5 case=+0.5"].terms) == 2
    df = evaluate_settings(m, ["ann is ", "eve is "], settings, {"mood": _mood_score, "upper": _upper_score},
                           samples_per_prompt=16, max_new_tokens=12, temperature=1.0, seed=0, progress=False)
    assert list(df.columns) == ["setting", "mood_mean", "mood_frac_positive", "upper_mean", "upper_frac_positive",
                                "perplexity", "n"]
    assert (df.n == 32).all() and (df.perplexity > 1).all()
    row = df.set_index("setting")
    base = row.loc["unsteered"]
    for case_c in ("+0", "+0.5"):  # the mood follows its coefficient with or without the case direction
        assert row.loc[f"mood=+0.5 case={case_c}"].mood_mean > base.mood_mean + 0.2, df
        assert row.loc[f"mood=-0.5 case={case_c}"].mood_mean < base.mood_mean - 0.2, df
    for mood_c in ("-0.5", "+0", "+0.5"):  # and the case follows its own, whatever the mood does
        without_case = base if mood_c == "+0" else row.loc[f"mood={mood_c} case=+0"]
        assert row.loc[f"mood={mood_c} case=+0.5"].upper_mean > without_case.upper_mean + 0.5, df
    with pytest.raises(SteeringError, match="no coefficients for case"):
        grid_settings({"mood": mood, "case": case}, {"mood": [1.0]})


def test_without_removes_the_projection(model):
    a, b = _vec(model, seed=1), _vec(model, seed=2)
    c = a.without(b)
    ta, tb = a.to_tensor(), b.to_tensor()
    assert torch.allclose(c.to_tensor(), ta - (ta @ tb) / (tb @ tb) * tb, atol=1e-6)
    assert abs(c.cosine(b)) < 1e-6 and c.provenance["method"] == "arithmetic"
    assert c.without(b).allclose(c, atol=1e-6)  # nothing left to remove
    with pytest.raises(SteeringError, match="zero"):
        a.without(b * 0.0)


# ---------------------------------------------------------------------------------------------
# inspecting and evaluating
# ---------------------------------------------------------------------------------------------
def test_top_tokens_read_the_unembedding(model, tok):
    t = tok.encode("g")[0]
    v = SteeringVector({H1: 10 * model.W_U[:, t].detach()})
    df = top_tokens(model, v, k=3)
    assert df.top.iloc[0] == "g" and len(df) == 3 and df.top_logit.iloc[0] > df.top_logit.iloc[1]
    assert df.bottom_logit.iloc[0] < 0
    through_ln = top_tokens(model, v, k=3, ln_final=True)
    assert list(through_ln.columns) == ["rank", "top", "top_logit", "bottom", "bottom_logit"]


def test_cosine_table(model):
    from nanolens.probes import LinearProbe

    a, b = _vec(model, seed=1), _vec(model, seed=2)
    probe = LinearProbe().fit(np.random.default_rng(0).normal(size=(20, 16)), [0, 1] * 10)
    table = cosine_table({"a": a, "b": b, "-a": -a, "probe": probe, "tensor": a[H1] * 3})
    assert table.shape == (5, 5)
    np.testing.assert_allclose(np.diag(table.values), 1.0, atol=1e-6)
    np.testing.assert_allclose(table.values, table.values.T, atol=1e-6)
    assert table.loc["a", "-a"] == pytest.approx(-1.0) and table.loc["a", "tensor"] == pytest.approx(1.0)


def test_sweep_table_fluency_and_plots(model, tmp_path):
    v = _vec(model, seed=1)
    r = random_direction(like=v, seed=0)
    scorer = lambda text: (text.count("a") - text.count("b")) / max(1, len(text))  # noqa: E731
    df, samples = sweep(model, ["abc", "hij."], {"v": {1: v}, "random": r}, [-1.0, 0.0, 1.0], samples_per_prompt=3,
                        scorer=scorer, max_new_tokens=8, stop=None, val_text="abc hij. " * 20, val_windows=3,
                        progress=False, return_samples=True)
    assert list(df.columns[:6]) == ["method", "layer", "coeff", "mean_sentiment", "std_sentiment", "frac_positive"]
    assert len(df) == 1 + 2 * 2 and (df.n == 6).all()
    base = df[df.method == "unsteered"].iloc[0]
    assert base.coeff == 0 and math.isnan(base.wrong_way) and base.val_loss_rise == 0
    assert df[df.method != "unsteered"].val_loss_rise.notna().all() and (df.perplexity > 1).all()
    assert len(samples) == 2 * 3 * len(df)
    # perplexity is of the continuation under the unsteered model
    one = samples.iloc[0]
    ppl = continuation_perplexity(model, one.prompt, [one.continuation])[0]
    assert math.isclose(ppl, math.exp(one.nll / one.n_tokens), rel_tol=1e-4)
    summary = summarize_sweep(df)
    assert set(summary.method) == {"v", "random"}
    assert plot_sentiment_vs_coeff(df, tmp_path / "curve.png").stat().st_size > 1000
    assert plot_layer_heatmap(df, tmp_path / "heat.png", "v").stat().st_size > 1000


def test_vader_scorer():
    from nanolens.steering import get_scorer

    name, score = get_scorer("vader")
    assert name == "vader" and score("What a wonderful, happy day!") > 0.5 > -0.5 > score("I hate this awful, terrible place.")
    assert get_scorer("words")[1]("a lovely day") == 1.0
    with pytest.raises(SteeringError, match="unknown scorer"):
        get_scorer("sentiment140")


# ---------------------------------------------------------------------------------------------
# the `nanolens steer` command
# ---------------------------------------------------------------------------------------------
def test_steer_command(model, tmp_path, capsys):
    ckpt = model.save(tmp_path / "ckpt")
    base = ["steer", "--ckpt", str(ckpt), "--max-new-tokens", "8", "--quiet", "--device", "cpu"]
    rc = main(base + ["--positive", "abc", "--negative", "hij", "--layer", "1", "--coeff", "3", "--prompt", "abc",
                      "--temperature", "0", "--save", str(tmp_path / "v")])
    out = capsys.readouterr()
    assert rc == 0 and "unsteered" in out.out and "steered: coeff +3" in out.out and "touched" in out.err
    assert (tmp_path / "v.safetensors").is_file()
    rc = main(base + ["--vector", str(tmp_path / "v"), "--coeff", "-2", "--prompt", "abc", "--positions", "generated"])
    assert rc == 0
    rc = main(base + ["--vector", str(tmp_path / "v"), "--prompt", "abc", "--prompt", "hij.", "--sweep", "--coeffs=-2,0,2",
                      "--scorer", "words", "--out", str(tmp_path / "sweep")])
    out = capsys.readouterr()
    assert rc == 0 and "frac_positive" in out.out
    assert (tmp_path / "sweep" / "steer_sweep.csv").is_file() and (tmp_path / "sweep" / "steer_vs_coeff.png").is_file()
    rc = main(base + ["--positive", "abc", "--negative", "hij", "--layer", "9", "--prompt", "abc"])
    assert rc == 2 and "out of range" in capsys.readouterr().err
    rc = main(base + ["--method", "contrast", "--prompt", "abc"])
    assert rc == 2 and "--positive and --negative" in capsys.readouterr().err


def test_direction_across_checkpoints(model, tmp_path):
    from nanolens.steering import direction_across_checkpoints

    first = model.save(tmp_path / "a")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.01)
    second = model.save(tmp_path / "b")
    recipe = lambda m: mean_difference(m, ["abc", "abd"], ["hij", "hig"], 1)  # noqa: E731
    table, vectors = direction_across_checkpoints([first, second], recipe)
    assert list(table.columns) == ["checkpoint", "norm", "cosine_to_reference"]
    assert table.cosine_to_reference.iloc[-1] == pytest.approx(1.0) and 0.9 < table.cosine_to_reference.iloc[0] <= 1.0
    assert vectors[0].model["weights_hash"] != vectors[1].model["weights_hash"]


@pytest.mark.slow
def test_the_steering_notebook_executes(tmp_path, monkeypatch):
    """notebooks/03_steering.ipynb top to bottom on a tiny model (NANOLENS_NOTEBOOK_QUICK=1)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "notebooks" / "03_steering.ipynb"
    monkeypatch.setenv("NANOLENS_NOTEBOOK_QUICK", "1")
    monkeypatch.delenv("NANOLENS_CKPT", raising=False)
    monkeypatch.setenv("NANOLENS_NOTEBOOK_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert [o for o in outputs if "image/png" in o.get("data", {})], "the notebook should draw its plots"
    text = "".join(o.get("text", "") for o in outputs)
    assert text.count("identical with/without cache: True") == 4 and "frac_positive" in text
    assert "out of range" in text and "did you mean" in text and "check_model=False" in text
