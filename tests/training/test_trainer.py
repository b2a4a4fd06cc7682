"""The trainer: learning, schedule, metrics, checkpoints, exact resume, SIGKILL safety, DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from nanolens.models import GPT, CharTokenizer, preset_config
from nanolens.training.batches import DataError, TokenData
from nanolens.models.checkpoint import CheckpointError
from nanolens.models.config import ConfigError
from nanolens.training.state import CHECKPOINT_FILES, optimizer_state_from_files, optimizer_state_to_files
from nanolens.training import StopTraining, Trainer, TrainConfig
from nanolens.training.runs import find_checkpoint
from nanolens.training.lock import LOCK_FILE
from nanolens.training.metrics import read_metrics
from nanolens.training.recipe import continued_model_and_data

# One tiny setup, exec'd both here and in the subprocesses, so both build the same run.
SETUP = """
import torch
from nanolens.models import GPT, CharTokenizer, preset_config
from nanolens.training.batches import TokenData
from nanolens.training import Trainer, TrainConfig

TEXT = "the cat sat on the mat. the dog sat on the log.\\n" * 12

def make_run(dropout=0.1, **overrides):
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    config = preset_config("gpt2", vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=16, dropout=dropout)
    model = GPT(config, tokenizer=tok)
    data = TokenData.from_text(TEXT, tok)
    settings = dict(batch_size=4, max_iters=20, eval_interval=5, eval_iters=2, log_interval=1, sample_interval=10,
                    sample_tokens=8, warmup_iters=3, learning_rate=3e-3, min_lr=3e-4, progress=False, verbose=False,
                    plot=False, device="cpu")
    settings.update(overrides)
    return model, data, TrainConfig(**settings)
"""
_ns: dict = {}
exec(SETUP, _ns)
make_run = _ns["make_run"]




def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=f"parameter {k} differs")


# ---- the learning-rate schedule and the config ------------------------------------------------
def test_lr_schedule_warmup_cosine_min():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110, max_iters=200)
    assert cfg.lr_at(0) == pytest.approx(1e-3 * 1 / 11)
    assert cfg.lr_at(4) == pytest.approx(1e-3 * 5 / 11)
    assert [cfg.lr_at(i) for i in range(10)] == sorted(cfg.lr_at(i) for i in range(10))  # rising
    assert cfg.lr_at(10) == pytest.approx(1e-3)  # the peak, where the decay starts
    assert cfg.lr_at(60) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # halfway: cos(pi/2) = 0
    assert cfg.lr_at(35) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi / 4)) * 9e-4)
    assert cfg.lr_at(110) == pytest.approx(1e-4) and cfg.lr_at(150) == pytest.approx(1e-4)
    decay = [cfg.lr_at(i) for i in range(10, 111)]
    assert decay == sorted(decay, reverse=True)
    assert TrainConfig(max_iters=50, warmup_iters=0, lr_decay_iters=None).lr_at(50) == pytest.approx(1e-4)
    assert TrainConfig(decay_lr=False).lr_at(0) == TrainConfig(decay_lr=False).lr_at(999) == 1e-3


def test_config_files_and_validation(tmp_path):
    (tmp_path / "t.toml").write_text('max_iters = 7\nlearning_rate = 0.01\ndtype = "bf16"\n[model]\nn_layer = 2\n')
    cfg = TrainConfig.load(tmp_path / "t.toml")
    assert (cfg.max_iters, cfg.learning_rate, cfg.dtype) == (7, 0.01, "bfloat16")
    (tmp_path / "t.json").write_text(json.dumps({"batch_size": 3, "sample_prompt": "ROMEO:"}))
    assert TrainConfig.load(tmp_path / "t.json").batch_size == 3
    cfg.save(tmp_path / "saved.json")
    assert TrainConfig.load(tmp_path / "saved.json") == cfg
    (tmp_path / "bad.toml").write_text("max_itters = 3\n")
    with pytest.raises(ConfigError, match="unknown TrainConfig field.*max_itters"):
        TrainConfig.load(tmp_path / "bad.toml")
    (tmp_path / "broken.toml").write_text("max_iters = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        TrainConfig.load(tmp_path / "broken.toml")
    for bad in (dict(batch_size=0), dict(min_lr=1.0), dict(dtype="fp8"), dict(device="tpu"), dict(val_fraction=1.0)):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


def test_optimizer_state_round_trip():
    model, data, cfg = make_run(dropout=0.0)
    trainer = Trainer(model, data, cfg)
    x, y = trainer.get_batch("train", torch.Generator().manual_seed(0))
    model(x, targets=y, return_type="loss").backward()
    trainer.optimizer.step()
    tensors, meta = optimizer_state_to_files(trainer.optimizer)
    json.dumps(meta)  # no tensors left in the JSON part
    restored = optimizer_state_from_files(tensors, meta)
    original = trainer.optimizer.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for i, state in original["state"].items():
        for key, value in state.items():
            assert torch.equal(restored["state"][i][key], value)


# ---- a full tiny run ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    model, data, cfg = make_run(dropout=0.0, max_iters=40, eval_interval=10, log_interval=5, learning_rate=1e-2, plot=True)
    seen: list[dict] = []
    summary = Trainer(model, data, cfg, out, callbacks=[seen.append]).train()
    return out, model, summary, seen


def test_loss_goes_down(finished_run):
    out, model, summary, _ = finished_run
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [0, 10, 20, 30, 40]
    assert evals[0]["val_loss"] > 2.5  # about ln(vocab)
    assert evals[-1]["val_loss"] < 0.6 * evals[0]["val_loss"]
    assert summary["iter"] == 40 and summary["val_loss"] == evals[-1]["val_loss"]
    assert summary["best_val_loss"] == min(r["val_loss"] for r in evals)


def test_metrics_jsonl_and_callbacks(finished_run):
    out, _, _, seen = finished_run
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records == seen  # callbacks got exactly what was logged
    logs = [r for r in records if r["kind"] == "log"]
    assert [r["iter"] for r in logs] == [5, 10, 15, 20, 25, 30, 35, 40]
    for r in records:
        assert {"kind", "iter", "train_loss", "val_loss", "best_val_loss", "lr", "tokens_per_s", "elapsed"} <= set(r)
    assert all(r["tokens_per_s"] > 0 and r["val_loss"] is None and r["lr"] > 0 for r in logs)
    samples = {r["iter"]: r["sample"] for r in records if "sample" in r}
    assert sorted(samples) == [0, 10, 20, 30, 40] and all(isinstance(s, str) and s for s in samples.values())
    elapsed = [r["elapsed"] for r in records]
    assert elapsed == sorted(elapsed)
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_and_last_are_loadable_checkpoints(finished_run):
    out, model, summary, _ = finished_run
    for name in ("best", "last"):
        assert sorted(p.name for p in (out / name).iterdir()) == sorted((*CHECKPOINT_FILES, "tokenizer.json"))
        loaded = GPT.load(out / name)
        assert loaded.tokenizer is not None and loaded.config == model.config
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    assert state["iter"] == 40 and state["best_val_loss"] == summary["best_val_loss"]
    assert state["train_config"]["max_iters"] == 40
    assert_same_params(params(GPT.load(out / "last")), params(model))
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != LOCK_FILE]  # no temporary leftovers
    assert GPT.load(out / "last").generate("the ", max_new_tokens=5, seed=0).startswith("the ")


# ---- resume --------------------------------------------------------------------------------
def test_resume_continues_exactly(tmp_path):
    """2N iterations in one go == N iterations, stop, resume for N more (dropout on, so the RNG
    state matters; N is not a multiple of eval_interval, so the stop point is not an eval point)."""
    model_a, data, cfg = make_run()
    Trainer(model_a, data, cfg, tmp_path / "a").train()

    def stop_at_13(record):
        if record["kind"] == "log" and record["iter"] == 13:
            raise StopTraining

    model_b, data, cfg = make_run()
    summary = Trainer(model_b, data, cfg, tmp_path / "b", callbacks=[stop_at_13]).train()
    assert summary["iter"] == 13
    assert json.loads((tmp_path / "b" / "last" / "trainer_state.json").read_text())["iter"] == 13

    model_c, data, cfg = make_run()  # a fresh model: everything must come from the checkpoint
    resumed = Trainer(model_c, data, cfg, tmp_path / "b", resume=True)
    assert resumed.iter_num == 13
    resumed.train()
    assert_same_params(params(model_c), params(model_a))
    opt_a = json.loads((tmp_path / "a" / "last" / "optimizer.json").read_text())
    opt_b = json.loads((tmp_path / "b" / "last" / "optimizer.json").read_text())
    assert opt_a == opt_b
    a = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["kind"] == "log"]
    b = [r for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if r["kind"] == "log"]
    assert [r["iter"] for r in b] == list(range(1, 21))  # the counter continues, no duplicates
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]


def test_resume_errors(tmp_path):
    model, data, cfg = make_run()
    with pytest.raises(CheckpointError, match="no 'last' checkpoint"):
        Trainer(model, data, cfg, tmp_path, resume=True)
    (tmp_path / "last").mkdir()
    (tmp_path / "last" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="missing model.safetensors.*trainer_state.json"):
        find_checkpoint(tmp_path)
    other = GPT(preset_config("gpt2", vocab_size=model.config.vocab_size, n_layer=2, n_head=2, n_embd=32, block_size=16))
    short, data, cfg = make_run(max_iters=5, eval_interval=5, sample_interval=0)
    Trainer(short, data, cfg, tmp_path / "run").train()
    with pytest.raises(CheckpointError, match="does not fit this model"):
        Trainer(other, data, cfg, tmp_path / "run", resume=True)


def test_bad_inputs():
    model, data, cfg = make_run()
    with pytest.raises(ConfigError, match="larger than the model's context"):
        Trainer(model, data, cfg.replace(block_size=64))
    tiny = TokenData.from_text("the cat sat on the mat.\n" * 2, model.tokenizer)
    with pytest.raises(DataError, match="block_size 16 is larger than the val split of 5 tokens"):
        Trainer(model, tiny, cfg)
    wide = TokenData.from_ids(np.arange(200) % 40, vocab_size=40)
    with pytest.raises(DataError, match="vocab_size=40"):
        Trainer(model, wide, cfg)
    with pytest.raises(ValueError, match="sample_prompt"):
        Trainer(model, data, cfg.replace(sample_prompt="XYZ"))
    with pytest.raises(ConfigError, match="float16"):
        Trainer(model, data, cfg.replace(dtype="float16"))


# ---- SIGKILL safety --------------------------------------------------------------------------
# One subprocess pays the import once, then forks a child per scenario (single-threaded torch, so
# fork is safe); each child trains and is killed with SIGKILL at its moment:
#   checkpoint: inside the write of the iteration-10 `last` (model files written, state not; `best` is done)
#   swap:       between the two renames that swap the new `last` in (only `.last.old-*` remains)
#   training:   mid-training at iteration 13, between checkpoints
KILLER = SETUP + """
import json, os, signal, sys
from pathlib import Path
root = Path(sys.argv[1])
holder = {}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def in_checkpoint(name, tmp):
    if name == "last" and holder["trainer"].iter_num == 10:  # best/ (written first) already holds iteration 10
        die()

def mid_training(record):
    if record["kind"] == "log" and record["iter"] == 13:
        die()

def scenario(mode):
    callbacks = []
    if mode == "checkpoint":
        Trainer._checkpoint_hook = in_checkpoint
    elif mode == "swap":
        real_replace = os.replace
        def replace(src, dst):
            real_replace(src, dst)
            if Path(src).name == "last" and holder["trainer"].iter_num == 10:
                die()
        os.replace = replace
    else:
        callbacks = [mid_training]
    model, data, cfg = make_run()
    holder["trainer"] = Trainer(model, data, cfg, root / mode, callbacks=callbacks)
    holder["trainer"].train()

statuses = {}
for mode in ("checkpoint", "swap", "training"):
    pid = os.fork()
    if pid == 0:
        try:
            scenario(mode)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    statuses[mode] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)
(root / "statuses.json").write_text(json.dumps(statuses))
"""


@pytest.fixture(scope="module", autouse=True)
def killer_process(tmp_path_factory):
    """Start the killer subprocess when this module starts, so its imports overlap other tests."""
    root = tmp_path_factory.mktemp("killed")
    script = root / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(root)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    yield root, proc
    if proc.poll() is None:  # not waited for (the SIGKILL tests were deselected)
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def killed_runs(killer_process):
    root, proc = killer_process
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    return root, json.loads((root / "statuses.json").read_text())


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    torch.set_num_threads(1)
    model, data, cfg = make_run()
    out = tmp_path_factory.mktemp("reference")
    Trainer(model, data, cfg, out).train()
    return params(model), read_metrics(out / "metrics.jsonl")


@pytest.mark.parametrize("mode", ["checkpoint", "swap", "training"])
def test_sigkill_then_resume(mode, killed_runs, reference_run):
    root, statuses = killed_runs
    assert statuses[mode] == 9  # the run really died of SIGKILL
    out = root / mode
    leftovers = sorted(p.name.split("-")[0] for p in out.iterdir() if p.name.startswith(".") and p.name != LOCK_FILE)
    if mode == "checkpoint":
        assert leftovers == [".last.tmp"]  # the half-written checkpoint never became `last`
        assert not (out / next(out.glob(".last.tmp-*")) / "trainer_state.json").exists()
    if mode == "swap":
        assert not (out / "last").exists() and leftovers == [".last.old", ".last.tmp"]
    for name in ("last", "best"):
        if (out / name).exists():
            GPT.load(out / name)  # whatever is visible is complete

    model, data, cfg = make_run()
    trainer = Trainer(model, data, cfg, out, resume=True)
    assert trainer.iter_num == (10 if mode == "training" else 5)  # the last complete checkpoint
    trainer.train()
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != LOCK_FILE]  # debris cleaned up
    ref_params, ref_metrics = reference_run
    assert_same_params(params(model), ref_params, atol=1e-6)
    logs = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "log"]
    assert [r["iter"] for r in logs] == list(range(1, 21))  # logged once each, the counter continued
    ref_logs = [r for r in ref_metrics if r["kind"] == "log"]
    np.testing.assert_allclose([r["train_loss"] for r in logs], [r["train_loss"] for r in ref_logs], rtol=1e-5)


# ---- data parallel ---------------------------------------------------------------------------
DDP_SCRIPT = SETUP + """
import hashlib, os, sys
from pathlib import Path
from nanolens.training.runtime import stream_seed
out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
model, data, cfg = make_run(max_iters=6, eval_interval=3, log_interval=2, sample_interval=3, grad_accum_steps=2)
trainer = Trainer(model, data, cfg, out)
assert trainer.ddp and trainer.world_size == 2
first = data.get_batch("train", 4, 16, torch.Generator().manual_seed(stream_seed(cfg.seed, "train", rank, 0)))[0]
trainer.train()
blob = b"".join(v.detach().numpy().tobytes() for _, v in sorted(model.state_dict().items()))
(out / f"rank{rank}.txt").write_text(hashlib.sha256(blob).hexdigest() + " " + ",".join(map(str, first[0].tolist())))
"""


@pytest.mark.slow
def test_ddp_two_process_gloo_ranks_agree(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (hash0, batch0), (hash1, batch1) = ((out / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert hash0 == hash1  # DDP kept the replicas identical
    assert batch0 != batch1  # while each rank read its own windows
    assert GPT.load(out / "last") is not None
    assert json.loads((out / "last" / "trainer_state.json").read_text())["world_size"] == 2
    logs = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "log"]
    assert [r["iter"] for r in logs] == [2, 4, 6]  # written once, by rank 0


@pytest.mark.parametrize("preset", ["gpt2", "modern"])
def test_a_continued_model_with_a_shorter_context_computes_what_the_original_did(preset, tmp_path):
    """`--init-from CKPT --set block_size=N` crops per-position tables; on N tokens the model
    is the one it was (dropout aside), for learned and rotary positions alike."""
    text = "the cat sat on the mat. the dog sat on the log.\n" * 12
    tok = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    original = GPT(preset_config(preset, vocab_size=tok.vocab_size, n_layer=2, n_embd=32, n_head=4, block_size=64),
                   tokenizer=tok).eval()
    original.save(tmp_path / "ckpt")
    model, data = continued_model_and_data(str(tmp_path / "ckpt"), text, "text", assignments=["block_size=16"])
    assert model.config.block_size == 16 and model.training and data.vocab_size == tok.vocab_size
    ids = original.to_tokens(text[:16])
    with torch.no_grad():
        assert torch.allclose(model.eval()(ids), original(ids), atol=1e-6)
