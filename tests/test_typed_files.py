"""Every file nanolens reads has its fields' types checked: a mistyped field gets one line that
names the file, the field, what was expected and what was found, never a traceback from inside."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from nanolens.cli import main
from nanolens.models import GPT, CharTokenizer, CheckpointError, preset_config
from nanolens.steering import SteeringError, SteeringVector
from nanolens.training import DataError, TokenData, Trainer, TrainConfig
from nanolens.training.metrics import MetricsWarning, read_metrics, read_metrics_checked

TEXT = "the cat sat on the mat.\n" * 30


def tiny() -> GPT:
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    return GPT(preset_config("gpt2", vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=16), tok)


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def run(tmp_path) -> Path:
    model = tiny()
    config = TrainConfig(max_iters=4, eval_interval=2, eval_iters=1, batch_size=2, sample_interval=0, log_interval=1,
                         progress=False, verbose=False, plot=False)
    Trainer(model, TokenData.from_text(TEXT, model.tokenizer), config, tmp_path / "run").train()
    return tmp_path / "run"


@pytest.mark.parametrize("field, value, expected", [
    ("n_layer", "two", "expected an integer, got 'two'"),
    ("bias", "yes", "expected true or false, got 'yes'"),
    ("dropout", [0.1], r"expected a number, got \[0.1\]"),
    ("positional", 5, "expected a string, got 5"),
    ("extra", "notes", "expected an object, got 'notes'"),
])
def test_config_json(run, field, value, expected):
    edit_json(run / "best" / "config.json", **{field: value})
    with pytest.raises(CheckpointError, match=rf"best/config.json: {field}: {expected}"):
        GPT.load(run / "best")


@pytest.mark.parametrize("change, expected", [
    ({"chars": 5}, "chars: expected a list of single characters, got 5"),
    ({"chars": ["ab", "c"]}, "chars: expected a list of single characters"),
    ({"unknown": 3}, "unknown: expected a string or null, got 3"),
    ({"kind": 7}, "kind: expected a string, got 7"),
])
def test_tokenizer_json(run, change, expected):
    edit_json(run / "best" / "tokenizer.json", **change)
    with pytest.raises(CheckpointError, match=rf"best/tokenizer.json: {expected}"):
        GPT.load(run / "best")


def test_a_missing_tokenizer_json_is_named_when_text_is_asked_for(run):
    (run / "best" / "tokenizer.json").unlink()
    model = GPT.load(run / "best")  # ids still work
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape[-1] == model.config.vocab_size
    with pytest.raises(ValueError, match=r"best/tokenizer.json is missing, so this model cannot read or write text"):
        model.generate("the cat", max_new_tokens=2)


@pytest.fixture
def vector(tmp_path) -> Path:
    v = SteeringVector({"blocks.0.hook_resid_pre": torch.randn(16)}, scales={"blocks.0.hook_resid_pre": 2.0}, label="v")
    v.save(tmp_path / "v")
    return tmp_path / "v"


@pytest.mark.parametrize("change, expected", [
    ({"hooks": "blocks.0.hook_resid_pre"}, "hooks: expected a list of strings, got 'blocks.0.hook_resid_pre'"),
    ({"scales": {"blocks.0.hook_resid_pre": "abc"}}, "scales: expected an object of numbers or null"),
    ({"scales": [1.0]}, r"scales: expected an object of numbers or null, got \[1.0\]"),
    ({"model": "gpt2"}, "model: expected an object or null, got 'gpt2'"),
    ({"model": {"d_model": "16"}}, "model: d_model: expected an integer or null, got '16'"),
    ({"label": 4}, "label: expected a string or null, got 4"),
    ({"d_model": 32}, "d_model: 32, but the directions in v.safetensors have width 16"),
])
def test_vector_json(vector, change, expected):
    edit_json(vector.with_suffix(".json"), **change)
    with pytest.raises(SteeringError, match=rf"v.json: {expected}"):
        SteeringVector.load(vector)


def test_vector_json_that_is_a_list(vector):
    vector.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(SteeringError, match=r"v.json: expected a JSON object, got list"):
        SteeringVector.load(vector)


def test_metrics_rows_of_the_wrong_type_are_skipped_with_their_line_numbers(run):
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["iter"] = "x"
    lines[1] = json.dumps(bad)
    lines.insert(3, '{"kind": "log", "iter": 9, "train_loss": "low"}')
    path.write_text("\n".join(lines) + "\n")
    records, problems = read_metrics_checked(path)
    assert len(records) == len(lines) - 2
    assert problems == [f"{path}: line 2: iter: expected an integer, got 'x'",
                        f"{path}: line 4: train_loss: expected a number or null, got 'low'"]
    with pytest.warns(MetricsWarning, match="skipped 2 row"):
        read_metrics(path)


def test_resume_reads_past_a_mistyped_metrics_row(run):
    path = run / "metrics.jsonl"
    path.write_text(path.read_text() + '{"kind": "log", "iter": "x"}\n' + '{"kind": "log", "iter": 3, "lr": "fast"}\n')
    model = GPT.load(run / "last")
    config = TrainConfig(max_iters=6, eval_interval=2, eval_iters=1, batch_size=2, sample_interval=0, log_interval=1,
                         progress=False, verbose=False, plot=False)
    with pytest.warns(MetricsWarning):
        Trainer(model, TokenData.from_text(TEXT, model.tokenizer), config, run, resume=True).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the resume rewrote the file without the bad rows
        assert [r["iter"] for r in read_metrics(path) if r["kind"] == "eval"] == [0, 2, 4, 6]


@pytest.mark.parametrize("field, value, expected", [
    ("iter", "x", "iter: expected an integer, got 'x'"),
    ("best_val_loss", "low", "best_val_loss: expected a number or null, got 'low'"),
    ("train_config", [], r"train_config: expected an object, got \[\]"),
])
def test_trainer_state_json(run, field, value, expected):
    edit_json(run / "last" / "trainer_state.json", **{field: value})
    model = GPT.load(run / "last")
    with pytest.raises(CheckpointError, match=rf"last/trainer_state.json: {expected}"):
        Trainer(model, TokenData.from_text(TEXT, model.tokenizer), TrainConfig(progress=False), run, resume=True)


@pytest.mark.parametrize("field, value, expected", [
    ("vocab_size", "12", "vocab_size: expected an integer, got '12'"),
    ("dtype", "uint7", "dtype: expected a numpy dtype name such as 'uint16', got 'uint7'"),
    ("meta", 3, "meta: expected an object or null, got 3"),
])
def test_token_data_meta_json(tmp_path, field, value, expected):
    TokenData.from_text(TEXT, CharTokenizer.from_text(TEXT)).save(tmp_path / "data")
    edit_json(tmp_path / "data" / "meta.json", **{field: value})
    with pytest.raises(DataError, match=rf"data/meta.json: {expected}"):
        TokenData.load(tmp_path / "data")


def test_train_config_file_names_itself(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text('learning_rate = "fast"\n')
    assert main(["train", "--data", "sentiment", "--out", str(tmp_path / "run"), "--config", str(config)]) == 2
    assert f"{config}: learning_rate: expected a number, got 'fast'" in capsys.readouterr().err


# ---- messages that name the fix ------------------------------------------------------------
def test_a_pickle_that_would_run_code_is_refused_and_says_so(tmp_path):
    class Payload:
        def __reduce__(self):
            import os

            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"model_args": {}, "model": {}, "payload": Payload()}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"would run arbitrary code \(posix.system\).*none of it was run"):
        GPT.from_nanogpt(tmp_path / "ckpt.pt")
    assert not (tmp_path / "pwned").exists()


def test_sample_takes_a_run_folder(run, capsys):
    assert main(["sample", "--ckpt", str(run), "--prompt", "the", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("the")


def test_cli_errors_name_flags_not_parameters(run, tmp_path, capsys):
    other = tiny()
    with torch.no_grad():
        other.embed.W_E.add_(1.0)  # other weights, same width
    v = SteeringVector({"blocks.0.hook_resid_pre": torch.randn(16)}, label="v",
                       model=__import__("nanolens.steering", fromlist=["x"]).model_fingerprint(other))
    v.save(tmp_path / "v")
    assert main(["steer", "--ckpt", str(run), "--vector", str(tmp_path / "v"), "--prompt", "the", "--max-new-tokens", "3"]) == 2
    err = capsys.readouterr().err
    assert "--any-model" in err and "check_model=False" not in err
    assert main(["sample", "--ckpt", str(run), "--prompt", "the", "--top-k", "0"]) == 2
    err = capsys.readouterr().err
    assert "--top-k must be >= 1 (or leave the flag out for no limit)" in err and "None" not in err
