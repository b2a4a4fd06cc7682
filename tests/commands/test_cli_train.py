"""`nanolens train`: a tiny run end to end, resume, config files, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanolens.cli import main
from nanolens.models import GPT
from nanolens.training.batches import TokenData
from nanolens.training.metrics import read_metrics

TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 20
TINY = ["--set", "n_layer=1", "--set", "n_head=2", "--set", "n_embd=32", "--set", "block_size=16"]
FAST = ["--batch-size", "4", "--eval-iters", "2", "--warmup-iters", "2", "--sample-interval", "0",
        "--log-interval", "5", "--device", "cpu"]




@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def train(*args: str) -> int:
    return main(["train", *args])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


def test_train_then_resume_then_sample(corpus, tmp_path, capsys):
    out = tmp_path / "runs" / "tiny"
    assert train("--data", str(corpus), "--out", str(out), *TINY, *FAST, "--max-iters", "10", "--eval-interval", "5",
                 "--lr", "5e-3", "--min-lr", "5e-4", "--lr-decay-iters", "20", "--seed", "7") == 0
    assert {"best", "last", "data", "metrics.jsonl", "loss_curve.png"} <= {p.name for p in out.iterdir()}
    model = GPT.load(out / "best")
    assert (model.config.n_layer, model.config.n_embd, model.config.block_size) == (1, 32, 16)
    assert model.config.extra["data"] == str(corpus)
    data = TokenData.load(out / "data")
    assert data.n_train + data.n_val == len(TEXT)
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert state["iter"] == 10
    assert (state["train_config"]["learning_rate"], state["train_config"]["seed"]) == (5e-3, 7)

    # --resume continues the same run (no --data needed: its tokens are saved), with a new budget
    assert train("--out", str(out), "--resume", "--max-iters", "20") == 0
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert state["iter"] == 20 and state["train_config"]["learning_rate"] == 5e-3
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 5, 10, 15, 20]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    capsys.readouterr()

    assert main(["sample", "--ckpt", str(out / "best"), "--prompt", "the ", "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out.startswith("the ")


def test_config_file_with_flag_overrides(corpus, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(
        f'data = "{corpus}"\npreset = "modern"\nmax_iters = 4\neval_interval = 2\nbatch_size = 2\n'
        'learning_rate = 0.002\nsample_interval = 0\neval_iters = 1\nplot = false\nprogress = false\n'
        "[model]\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 8\n"
    )
    out = tmp_path / "run"
    assert train("--config", str(config), "--out", str(out), "--batch-size", "3", "--device", "cpu") == 0
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    cfg = state["train_config"]
    assert (cfg["max_iters"], cfg["batch_size"], cfg["learning_rate"]) == (4, 3, 0.002)  # the flag won
    model = GPT.load(out / "last")
    assert (model.config.preset, model.config.positional, model.config.block_size) == ("modern", "rotary", 8)
    assert not (out / "loss_curve.png").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "gpt5"], "unknown preset 'gpt5'; valid presets are: bigram"),
        (["--set", "mlp=swish"], "unknown mlp variant 'swish'"),
        (["--set", "n_layers=2"], "unknown GPTConfig field 'n_layers'"),
        (["--set", "block_size=128"], "block_size 128 is larger than the val split of 96 tokens"),
        (["--dtype", "fp8"], "unknown dtype 'fp8'"),
    ],
)
def test_friendly_errors(corpus, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    code = train("--data", str(corpus), "--out", str(out), *TINY[:6], *args)
    line = error_line(capsys)
    assert code == 2
    assert line.startswith("nanolens train: error: ") and message in line
    assert not (out / "last").exists()


def test_bad_corpus_files(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert train("--data", str(empty), "--out", str(tmp_path / "a")) == 2
    assert "empty" in error_line(capsys)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9 ".encode("latin-1") * 50)
    assert train("--data", str(latin), "--out", str(tmp_path / "b")) == 2
    assert "not valid UTF-8" in error_line(capsys)
    short = tmp_path / "short.txt"
    short.write_text("a short file\n")
    assert train("--data", str(short), "--out", str(tmp_path / "c"), "--set", "block_size=16") == 2
    assert "larger than the val split" in error_line(capsys)
    assert train("--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "d")) == 2
    assert "no such file" in error_line(capsys)


def test_resume_errors(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert train("--out", str(out), "--resume") == 2
    assert "holds no 'last' checkpoint" in error_line(capsys)
    assert train("--data", str(corpus), "--out", str(out), *TINY, *FAST, "--max-iters", "2", "--eval-interval", "2") == 0
    capsys.readouterr()
    assert train("--data", str(corpus), "--out", str(out), *TINY) == 2  # never clobber a run silently
    assert "already holds a run; continue it with --resume" in error_line(capsys)
    assert train("--out", str(out), "--resume", "--set", "n_layer=2") == 2
    assert "drop --set" in error_line(capsys)
    (out / "last" / "optimizer.safetensors").unlink()
    assert train("--out", str(out), "--resume") == 2
    line = error_line(capsys)
    assert "missing optimizer.safetensors" in line and "cannot be resumed" in line
