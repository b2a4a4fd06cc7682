"""nanolens.probes: activation extraction, labelled datasets, linear probes, layer sweeps, the CLI."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from nanolens.models import GPT, CharTokenizer, HookNameError, preset_config
from nanolens.probes import Activations, LabelledTexts, LinearProbe, RidgeProbe, cosine, extract_activations, layer_hooks, plot_probe_layers, probe_layers, probe_readout, resolve_hooks

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?\n"
SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"




@pytest.fixture(scope="module")
def model() -> GPT:
    tokenizer = CharTokenizer(ALPHABET)
    torch.manual_seed(0)
    config = preset_config("gpt2", vocab_size=tokenizer.vocab_size, n_layer=2, n_head=4, n_embd=32, block_size=32)
    return GPT(config, tokenizer).eval()


def random_texts(n: int, seed: int = 0, low: int = 3, high: int = 20) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz "))
    return ["".join(rng.choice(letters, size=rng.integers(low, high + 1))) for _ in range(n)]


class Spy:
    """Wraps model.run_with_cache to record what each call asked for."""

    def __init__(self, model, monkeypatch):
        self.calls = []
        original = model.run_with_cache

        def spy(tokens, **kwargs):
            self.calls.append({"shape": tuple(tokens.shape), **kwargs})
            out, cache = original(tokens, **kwargs)
            self.calls[-1]["cached"] = sorted(cache.keys())
            return out, cache

        monkeypatch.setattr(model, "run_with_cache", spy)


# ---- extraction ---------------------------------------------------------------------------
def test_extraction_matches_a_plain_cache_for_every_position_mode(model):
    texts = ["hello world", "abc", "the quick brown fox", "x", "jumps over", "a lazy dog!"]
    hooks = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    spans = [(0, 2), 0, -1, None, (1, 3), 4]
    last = extract_activations(model, texts, hooks=hooks, positions="last", batch_size=4, progress=False)
    every = extract_activations(model, texts, hooks=hooks, positions="all", batch_size=4, progress=False)
    mean = extract_activations(model, texts, hooks=hooks, positions="mean", batch_size=4, progress=False)
    chosen = extract_activations(model, texts, hooks=hooks, positions=spans, batch_size=4, progress=False)
    for hook in hooks:
        assert last[hook].shape == (6, 32) and mean[hook].shape == (6, 32) and chosen[hook].shape == (6, 32)
        assert every[hook].shape == (sum(map(len, texts)), 32)
    row = 0
    for i, text in enumerate(texts):  # one text at a time, no padding: the reference
        _, cache = model.run_with_cache(text)
        for hook in hooks:
            ref = cache[hook][0].numpy()
            np.testing.assert_allclose(last[hook][i], ref[-1], atol=1e-5)
            np.testing.assert_allclose(mean[hook][i], ref.mean(0), atol=1e-5)
            np.testing.assert_allclose(every[hook][row : row + len(text)], ref, atol=1e-5)
            p = spans[i]
            want = ref[p[0] : p[1]].mean(0) if isinstance(p, tuple) else ref[-1 if p is None else p]
            np.testing.assert_allclose(chosen[hook][i], want, atol=1e-5)
        assert every.text_index[row : row + len(text)].tolist() == [i] * len(text)
        assert every.position[row : row + len(text)].tolist() == list(range(len(text)))
        assert every.token[row : row + len(text)].tolist() == model.tokenizer.encode(text)
        row += len(text)
    assert last.position.tolist() == [len(t) - 1 for t in texts]
    assert (mean.token == -1).all() and (mean.position == -1).all()


def test_token_tensors_and_labels(model):
    tokens = torch.randint(0, model.config.vocab_size, (5, 10), generator=torch.Generator().manual_seed(0))
    acts = extract_activations(model, tokens, hooks="resid_post", labels=[0, 1, 0, 1, 1], progress=False)
    assert acts.hooks == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert acts.labels.tolist() == [0, 1, 0, 1, 1] and len(acts) == 5
    every = extract_activations(model, tokens, hooks="blocks.1.hook_resid_post", positions="all", labels=[0, 1, 0, 1, 1], progress=False)
    assert every.labels.tolist() == [0] * 10 + [1] * 10 + [0] * 10 + [1] * 20  # one label per token row


def test_only_requested_hooks_are_cached_and_later_blocks_are_skipped(model, monkeypatch):
    spy = Spy(model, monkeypatch)
    ran = []
    handle = model.blocks[1].register_forward_hook(lambda *args: ran.append(1))
    try:
        acts = extract_activations(model, random_texts(10), hooks=["blocks.0.hook_resid_post"], batch_size=4, progress=False)
    finally:
        handle.remove()
    assert acts.hooks == ["blocks.0.hook_resid_post"]
    batches = [c for c in spy.calls if c["shape"][1] > 1]  # the first call only reads the hook sizes
    assert len(batches) == 3 and all(c["shape"][0] <= 4 for c in batches)
    assert all(c["names_filter"] == ["blocks.0.hook_resid_post"] for c in spy.calls)
    assert all(c["cached"] == ["blocks.0.hook_resid_post"] for c in spy.calls)
    assert all(c["stop_at_layer"] == 1 for c in spy.calls)
    assert ran == []  # block 1 never ran
    assert model.attached_hooks() == {}


def test_hook_kinds_expand_to_every_block(model):
    assert resolve_hooks(model, "resid_post") == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert resolve_hooks(model, ["hook_attn_out", "blocks.0.hook_resid_pre"]) == [
        "blocks.0.hook_attn_out", "blocks.1.hook_attn_out", "blocks.0.hook_resid_pre"]
    rows = layer_hooks(model, "resid_post")
    assert [r[0] for r in rows] == ["embed", 0, 1] and rows[0][1] == "blocks.0.hook_resid_pre"
    # per-head hooks flatten to n_heads * d_head; ln_final needs the full forward and works too
    acts = extract_activations(model, ["abc", "de"], hooks=["blocks.1.attn.hook_z", "ln_final.hook_normalized"], progress=False)
    assert acts["blocks.1.attn.hook_z"].shape == (2, 32) and acts["ln_final.hook_normalized"].shape == (2, 32)


def test_streaming_to_disk_matches_memory_and_stays_bounded(model, tmp_path, monkeypatch):
    texts = random_texts(240, seed=1, low=24, high=32)
    labels = [i % 2 for i in range(240)]
    kwargs = dict(hooks=["resid_post", "resid_mid"], positions="all", labels=labels, batch_size=16, progress=False)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        in_memory = extract_activations(model, texts, **kwargs)
        _, memory_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        spy = Spy(model, monkeypatch)
        before, _ = tracemalloc.get_traced_memory()
        on_disk = extract_activations(model, texts, out_dir=tmp_path / "acts", **kwargs)
        _, disk_peak = tracemalloc.get_traced_memory()
        disk_peak -= before
    finally:
        tracemalloc.stop()
    out = tmp_path / "acts"
    output_bytes = sum(in_memory[h].nbytes for h in in_memory.hooks)
    assert output_bytes > 3_000_000 and memory_peak > output_bytes
    # batches stream to disk: the output never sits in memory, only a batch and the row index do
    assert disk_peak < output_bytes / 4, (disk_peak, output_bytes)
    batches = [c for c in spy.calls if c["shape"][1] > 1]
    assert len(batches) == math.ceil(240 / 16) and max(c["shape"][0] for c in batches) == 16
    for hook in in_memory.hooks:
        assert isinstance(on_disk[hook], np.memmap)
        np.testing.assert_array_equal(on_disk[hook], in_memory[hook])
    again = Activations.load(out)
    assert again.hooks == in_memory.hooks and again.labels.tolist() == in_memory.labels.tolist()
    np.testing.assert_array_equal(again.text_index, in_memory.text_index)
    assert json.loads((out / "activations.json").read_text())["positions"] == "all"


def test_truncate_keeps_the_last_block_size_tokens(model):
    long = "abcdefghij" * 5  # 50 tokens > block_size 32
    acts = extract_activations(model, [long, "short"], hooks="blocks.0.hook_resid_post", truncate=True, progress=False)
    _, cache = model.run_with_cache(long[-32:])
    np.testing.assert_allclose(acts["blocks.0.hook_resid_post"][0], cache["blocks.0.hook_resid_post"][0, -1].numpy(), atol=1e-5)
    assert acts.position.tolist() == [49, 4]


# ---- bad input ----------------------------------------------------------------------------
def test_bad_hook_names_are_explained(model):
    with pytest.raises(HookNameError, match="did you mean 'blocks.0.hook_resid_post'"):
        extract_activations(model, ["abc"], hooks=["blocks.0.hook_resid_pots"], progress=False)
    with pytest.raises(HookNameError, match="did you mean 'resid_post'"):
        extract_activations(model, ["abc"], hooks="resid_pots", progress=False)
    with pytest.raises(HookNameError):
        probe_layers(model, (["abc", "abd"] * 4, [0, 1] * 4), hook="mlp_outt", progress=False)
    with pytest.raises(ValueError, match="query_pos"):
        extract_activations(model, ["abc"], hooks="blocks.0.attn.hook_pattern", progress=False)


def test_texts_longer_than_the_context_are_refused_with_the_fix(model):
    with pytest.raises(ValueError, match=r"text 1 is 40 tokens.*block_size=32.*truncate=True"):
        extract_activations(model, ["ok", "a" * 40], progress=False)
    with pytest.raises(ValueError, match="block_size=32"):
        probe_readout(model, LinearProbe(), "b" * 33, "blocks.0.hook_resid_post")


def test_empty_inputs_are_refused(model):
    with pytest.raises(ValueError, match="empty"):
        extract_activations(model, [], progress=False)
    with pytest.raises(ValueError, match="empty"):
        extract_activations(model, ["abc", ""], progress=False)
    with pytest.raises(ValueError, match="empty"):
        LabelledTexts([], [])
    with pytest.raises(ValueError, match="no hook points"):
        extract_activations(model, ["abc"], hooks=[], progress=False)


def test_labels_of_the_wrong_length_are_refused(model):
    with pytest.raises(ValueError, match="got 2 labels for 3 texts"):
        LabelledTexts(["a", "b", "c"], ["x", "y"])
    with pytest.raises(ValueError, match="got 1 labels for 2 texts"):
        extract_activations(model, ["ab", "cd"], labels=[1], progress=False)
    with pytest.raises(ValueError, match="got 3 labels for 4 examples"):
        LinearProbe().fit(np.zeros((4, 3)), [0, 1, 0])
    with pytest.raises(ValueError, match="2 positions for 3 texts"):
        LabelledTexts(["a", "b", "c"], [0, 1, 0], positions=[0, 0])


def test_a_single_class_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"all 3 labels are the same class \('pos'\).*at least two classes"):
        LabelledTexts(["a", "b", "c"], ["pos", "pos", "pos"])
    with pytest.raises(ValueError, match="at least two classes"):
        LinearProbe().fit(np.random.default_rng(0).normal(size=(6, 3)), [1] * 6)
    csv_file = tmp_path / "one.csv"
    csv_file.write_text("text,label\nhello,1\nworld,1\n")
    with pytest.raises(ValueError, match="same class"):
        LabelledTexts.from_csv(csv_file)
    with pytest.raises(ValueError, match="same value"):
        RidgeProbe().fit(np.ones((4, 2)), [2.5] * 4)


# ---- probes -------------------------------------------------------------------------------
def planted(n: int = 400, d: int = 16, seed: int = 0):
    """Features with wildly different scales and a label carried by one known direction."""
    rng = np.random.default_rng(seed)
    true = rng.normal(size=d)
    true /= np.linalg.norm(true)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 4.0, size=d) + np.outer(2 * y - 1, true) * 6.0
    return X, y, true


def test_linear_probe_follows_scikit_learn_conventions():
    from sklearn.base import clone

    X, y, true = planted()
    probe = LinearProbe(C=0.5).fit(X[:300], y[:300])
    assert probe.score(X[300:], y[300:]) > 0.9
    assert probe.predict(X[:5]).shape == (5,) and probe.predict_proba(X[:5]).shape == (5, 2)
    assert clone(probe).get_params()["C"] == 0.5
    # the raw-space weights reproduce the decision function: the scaler is really undone
    np.testing.assert_allclose(X[:20] @ probe.coef_[0] + probe.intercept_[0], probe.decision_function(X[:20]), rtol=1e-6, atol=1e-6)
    direction = probe.direction()
    assert isinstance(direction, torch.Tensor) and direction.shape == (16,)
    assert abs(float(direction.norm()) - 1) < 1e-5
    # logistic regression's weights are the covariance-whitened direction: they point the right way
    assert (X[y == 1] @ direction.numpy()).mean() > (X[y == 0] @ direction.numpy()).mean()
    assert cosine(probe, -direction) == pytest.approx(-1.0, abs=1e-5)
    assert probe.direction(cls=0).tolist() == (-direction).tolist()


def test_cross_validated_probe_and_ridge_probe():
    X, y, true = planted(n=300, d=8, seed=1)
    probe = LinearProbe(cv=3, Cs=[0.01, 1.0, 100.0]).fit(X, y)
    assert probe.C_ in (0.01, 1.0, 100.0) and probe.score(X, y) > 0.9
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(300, 8))
    w = rng.normal(size=8)
    ridge = RidgeProbe(cv=True).fit(Z[:200], Z[:200] @ w + 0.1 * rng.normal(size=200))
    assert ridge.score(Z[200:], Z[200:] @ w) > 0.95
    assert cosine(ridge.direction(), torch.tensor(w)) > 0.99
    with pytest.raises(ValueError, match="different sizes"):
        cosine(np.ones(3), np.ones(4))


# ---- datasets -----------------------------------------------------------------------------
def test_datasets_from_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text('text,label,pos\n"hello, world",1,3\nbye,0,\nhi,1,0\n', encoding="utf-8")
    ds = LabelledTexts.from_file(csv_file, position_column="pos")
    assert ds.texts == ["hello, world", "bye", "hi"] and ds.labels.tolist() == [1, 0, 1]
    assert ds.positions == [3, None, 0] and ds.task == "classification"
    back = LabelledTexts.from_file(ds.to_jsonl(tmp_path / "d.jsonl"))
    assert back.texts == ds.texts and back.labels.tolist() == [1, 0, 1] and back.positions == [3, None, 0]
    with pytest.raises(ValueError, match="no column 'nope'"):
        LabelledTexts.from_csv(csv_file, label_column="label", text_column="nope")
    reg = LabelledTexts(["a", "b", "c"], [0.5, 1.25, -2.0])
    assert reg.task == "regression" and reg.label_names is None


def test_sentiment_dataset_reads_where_the_label_is_decided():
    ds = LabelledTexts.from_sentiment(40, seed=3)
    assert ds.class_counts() == {"negative": 20, "positive": 20}
    assert all(t.endswith(".") and t.count(".") >= 2 for t in ds.texts)  # opening + the sentence that decides
    opening = LabelledTexts.from_sentiment(40, seed=3, position="decision")
    assert all(full.startswith(o) and o.count(".") == 1 for full, o in zip(ds.texts, opening.texts))
    assert max(map(len, LabelledTexts.from_sentiment(40, seed=3, max_chars=32).texts)) == 32
    train, test = ds.split(0.25, seed=0)
    assert len(test) == 10 and test.class_counts() == {"negative": 5, "positive": 5}


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason="tiny Shakespeare is not beside the repository")
def test_shakespeare_lines_labelled_by_vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    ds = LabelledTexts.from_shakespeare(SHAKESPEARE, pos_threshold=0.6, neg_threshold=-0.6, n=200, max_chars=48)
    assert ds.class_counts() == {"negative": 100, "positive": 100}
    vader = SentimentIntensityAnalyzer()
    for text, label in list(zip(ds.texts, ds.labels))[:40]:
        score = vader.polarity_scores(text)["compound"]
        assert (score >= 0.6) if label == "positive" else (score <= -0.6)
        assert len(text) <= 48 and not text.endswith(":")
    with pytest.raises(ValueError, match="neg_threshold < pos_threshold"):
        LabelledTexts.from_shakespeare(SHAKESPEARE, pos_threshold=-0.2, neg_threshold=0.2)


# ---- sweeps -------------------------------------------------------------------------------
def token_task(n: int = 240, seed: int = 0) -> LabelledTexts:
    """The label is which half of the alphabet the last letter comes from: it sits, linearly,
    in the residual stream at the last position from the embeddings on."""
    texts = random_texts(n, seed=seed, low=4, high=20)
    return LabelledTexts(texts, ["first" if t[-1] in "abcdefghijklm" else "second" for t in texts])


def test_probe_beats_its_control_where_the_label_is_in_the_residual_stream(model):
    df = probe_layers(model, token_task(), "resid_post", progress=False)
    assert df["layer"].tolist() == ["embed", 0, 1]
    assert list(df.columns[:5]) == ["layer", "hook", "kind", "accuracy", "control_accuracy"]
    assert (df["accuracy"] >= 0.9).all(), df
    assert (df["control_accuracy"] <= 0.7).all(), df
    assert (df["selectivity"] >= 0.25).all()
    assert df.attrs["metric"] == "accuracy" and 0.4 <= df.attrs["chance"] <= 0.6
    # Hewitt & Liang's per-token-type control: here the label *is* the token's identity, so the
    # control task is as easy as the real one and selectivity collapses, as it should
    token = probe_layers(model, token_task(), "resid_post", control="token", progress=False)
    assert (token["control_accuracy"] >= 0.85).all() and (token["selectivity"] <= 0.15).all(), token


def test_probe_layers_regression_plot_and_readout(model, tmp_path):
    texts = random_texts(160, seed=4)
    ds = LabelledTexts(texts, [float(sum(c in "aeiou" for c in t[-3:])) + 0.5 * (t[-1] == " ") for t in texts], task="regression")
    df, probes = probe_layers(model, ds, ["resid_post"], include_embed=False, return_probes=True, progress=False)
    assert df["layer"].tolist() == [0, 1] and "r2" in df.columns and df.attrs["metric"] == "r2"
    assert set(probes) == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    png = plot_probe_layers(probe_layers(model, token_task(80), "resid_post", progress=False), tmp_path / "plot" / "layers.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, fitted = probe_layers(model, token_task(), "resid_post", return_probes=True, progress=False)
    readout = probe_readout(model, fitted["blocks.1.hook_resid_post"], "hello there", "blocks.1.hook_resid_post")
    assert readout["token"].tolist() == list("hello there") and readout["position"].tolist() == list(range(11))
    assert readout["score"].between(0, 1).all() and set(readout["prediction"]) <= {"first", "second"}
    # each position is read as if the text ended there: 'e' is in the first half, 'o' in the second
    assert readout["prediction"].iloc[1] == "first" and readout["prediction"].iloc[4] == "second"
    assert readout["prediction"].iloc[-1] == "first"


# ---- CLI ----------------------------------------------------------------------------------
def test_probe_command_prints_the_table_and_writes_the_plot(model, tmp_path, capsys):
    from nanolens.cli import main

    ckpt = model.save(tmp_path / "runs" / "tiny" / "best")
    data = token_task(120)
    data.to_jsonl(tmp_path / "letters.jsonl")
    code = main(["probe", "--ckpt", str(ckpt.parent), "--dataset", str(tmp_path / "letters.jsonl"), "--quiet", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "blocks.1.hook_resid_post" in out and "selectivity" in out and "embed" in out
    assert (tmp_path / "runs" / "tiny" / "probes" / "probe_letters.png").is_file()
    assert (tmp_path / "runs" / "tiny" / "probes" / "probe_letters.csv").is_file()
    assert main(["probe", "--ckpt", str(ckpt), "--dataset", str(tmp_path / "letters.jsonl"), "--hook", "resid_pots", "--quiet"]) == 2
    assert "did you mean" in capsys.readouterr().err


TEN_LINES = '''
from nanolens.models import GPT, CharTokenizer, preset_config
from nanolens.probes import LabelledTexts, LinearProbe, extract_activations, probe_table, plot_probe_layers, probe_layers

stories = LabelledTexts.from_sentiment(200, position="reveal", max_chars=64)  # read where each story's label is decided
tokenizer = CharTokenizer.from_text("".join(stories.texts) + "\\n")
model = GPT(preset_config("gpt2", vocab_size=tokenizer.vocab_size, n_layer=2, block_size=64), tokenizer).eval()  # or GPT.load("runs/NAME/best")
df = probe_layers(model, stories, "resid_post", progress=False)               # a probe per layer + a shuffled-label control
print(probe_table(df))                                                          # layer, accuracy, control, selectivity
plot_probe_layers(df, "probe_layers.png")
X = extract_activations(model, stories, hooks=["blocks.1.hook_resid_post"], progress=False)["blocks.1.hook_resid_post"]
direction = LinearProbe().fit(X, stories.labels).direction()                    # unit vector toward "positive": a steering direction
'''


def test_the_ten_line_probing_example_runs(tmp_path, monkeypatch, capsys):
    """The README's probing example (kept here too, so it is tested before and after it is pasted)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(TEN_LINES, "ten-line probing example", "exec"), namespace)
    assert (tmp_path / "probe_layers.png").is_file() and "selectivity" in capsys.readouterr().out
    assert namespace["direction"].shape == (namespace["model"].config.n_embd,)


def test_bench_probes_smoke_run_prints_its_table(tmp_path, capsys):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_probes.py"
    spec = importlib.util.spec_from_file_location("bench_probes", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench_probes.md"
    assert bench.main(["--n", "48", "--rounds", "1", "--batch-size", "16", "--layers", "2", "--d-model", "32",
                       "--in-process", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for row in ("forward (reference)", "extract last -> memory", "extract all -> disk"):
        assert row in printed and row in out.read_text()
