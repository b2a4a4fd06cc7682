"""Faults a training run must survive: SIGKILL at every step of a checkpoint commit, two runs
started at once on one folder, a kill -9 of the lock holder, and losses that stop being numbers.

Each test asserts on the files left behind, not only on exit codes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from nanolens.cli import main
from nanolens.models import GPT, CharTokenizer, preset_config
from nanolens.training import Trainer
from nanolens.training.guard import TrainingDiverged
from nanolens.training.lock import RunLock, RunLockedError

TEXT = "a cat and a hat. the sun and the moon. one fish, two fish.\n" * 10

BUILD = textwrap.dedent('''
    import torch
    from nanolens.models import GPT, CharTokenizer, preset_config
    from nanolens.training import Trainer, TrainConfig, TokenData

    def build(text, **train):
        tok = CharTokenizer.from_text(text)
        torch.manual_seed(0)
        model = GPT(preset_config("gpt2", vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=16), tok)
        settings = dict(batch_size=4, max_iters=20, eval_interval=5, eval_iters=2, log_interval=1, sample_interval=0,
                        warmup_iters=2, learning_rate=1e-2, min_lr=1e-3, progress=False, verbose=False, plot=False,
                        device="cpu")
        return model, TokenData.from_text(text, tok), TrainConfig(**{**settings, **train})
''')
_ns: dict = {}
exec(BUILD, _ns)
build = _ns["build"]

# Kill at every step of the commit of iteration 20, the run's last evaluation (it improves the
# best val loss, so it writes best/ and last/; being the last, no later evaluation can mask a lie). Steps are counted by wrapping what the commit calls; one
# subprocess pays the imports once and forks a child per step (single-threaded torch, so fork is
# safe). Step 0 is the moment before the evaluation; step k the moment after the k-th call.
KILLER = BUILD + textwrap.dedent('''
    import json, os, signal, sys
    from pathlib import Path
    import nanolens.files as files
    import nanolens.training.checkpoints as trainer_module

    root, text = Path(sys.argv[1]), sys.argv[2]
    steps, plan = [], {"on": False, "kill_at": None}

    def step(name):
        if plan["on"]:
            steps.append(name)
            if plan["kill_at"] == len(steps):
                os.kill(os.getpid(), signal.SIGKILL)

    def wrap(owner, attr, name):
        real = getattr(owner, attr)
        def wrapper(*args, **kwargs):
            out = real(*args, **kwargs)
            step(name(*args))
            return out
        setattr(owner, attr, wrapper)

    def checkpoint_of(path):
        return Path(path).name.split(".")[1] if Path(path).name.startswith(".") else Path(path).name

    wrap(trainer_module, "write_model_files", lambda model, tmp: f"model files of {checkpoint_of(tmp.parent / tmp.name)}")
    wrap(trainer_module, "write_trainer_files", lambda tmp, *a: f"trainer state of {checkpoint_of(tmp)}")
    wrap(files.os, "replace", lambda src, dst: f"rename {Path(src).name.split('-')[0]} -> {Path(dst).name.split('-')[0]}")
    wrap(files.shutil, "rmtree", lambda path, **k: f"remove {Path(path).name.split('-')[0]}")
    real_emit, real_evaluate = Trainer._emit, Trainer._evaluate

    def emit(self, record):
        real_emit(self, record)
        if record["kind"] == "eval":
            step("eval row")

    def evaluate(self, it, *args):
        plan["on"] = it == 20
        if plan["on"] and plan["kill_at"] == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            return real_evaluate(self, it, *args)
        finally:
            plan["on"] = False

    Trainer._emit, Trainer._evaluate = emit, evaluate

    model, data, cfg = build(text)
    summary = Trainer(model, data, cfg, root / "reference").train()
    (root / "steps.json").write_text(json.dumps(steps))
    statuses = {}
    for k in range(len(steps) + 1):
        pid = os.fork()
        if pid == 0:
            try:
                steps.clear()
                plan["kill_at"] = k
                model, data, cfg = build(text)
                Trainer(model, data, cfg, root / f"k{k}").train()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        statuses[k] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)
    (root / "statuses.json").write_text(json.dumps(statuses))
''')


@pytest.fixture(scope="module")
def killed_commits(tmp_path_factory):
    root = tmp_path_factory.mktemp("commit")
    (root / "killer.py").write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(root / "killer.py"), str(root), TEXT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, json.loads((root / "steps.json").read_text()), json.loads((root / "statuses.json").read_text())


def _rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]  # every line parses: nothing torn, nothing interleaved


def test_the_commit_has_the_steps_the_order_promises(killed_commits):
    _, steps, _ = killed_commits
    assert steps == [
        "eval row",
        "model files of best", "trainer state of best", "rename best -> .best.old", "rename .best.tmp -> best", "remove .best.old",
        "model files of last", "trainer state of last", "rename last -> .last.old", "rename .last.tmp -> last", "remove .last.old",
    ]


def test_a_kill_at_every_step_of_the_commit_resumes_to_the_truth(killed_commits, tmp_path):
    root, steps, statuses = killed_commits
    reference = root / "reference"
    ref_rows = _rows(reference)
    ref_params = GPT.load(reference / "last").state_dict()
    for k in range(len(steps) + 1):
        run = shutil.copytree(root / f"k{k}", tmp_path / f"k{k}")  # the killed folders stay as they were left
        assert statuses[str(k)] == signal.SIGKILL, f"step {k} did not die of SIGKILL"
        for name in ("best", "last"):
            if (run / name).exists():
                GPT.load(run / name)  # whatever is visible is complete
        _rows(run)
        model, data, cfg = build(TEXT)
        summary = Trainer(model, data, cfg, run, resume=True).train()
        best_state = json.loads((run / "best" / "trainer_state.json").read_text())
        last_state = json.loads((run / "last" / "trainer_state.json").read_text())
        rows = _rows(run)
        evals = [r for r in rows if r["kind"] == "eval"]
        assert [r["iter"] for r in evals] == [0, 5, 10, 15, 20], f"step {k} ({steps[k - 1] if k else 'before'})"
        assert summary["best_val_loss"] == best_state["val_loss"] == min(r["val_loss"] for r in evals), f"step {k}"
        assert last_state["iter"] == summary["iter"] == 20 and last_state["best_val_loss"] == summary["best_val_loss"]
        assert [r["val_loss"] for r in evals] == [r["val_loss"] for r in ref_rows if r["kind"] == "eval"], f"step {k}"
        params = GPT.load(run / "last").state_dict()
        assert all(torch.allclose(params[n], ref_params[n], atol=1e-6, rtol=0) for n in params), f"step {k}"


def test_a_kill_between_best_and_last_is_reported_and_repaired_on_resume(killed_commits, tmp_path):
    """Killed after best/ holds iteration 20 but last/ still iteration 15: the resume says so and
    takes best/'s val loss as the best, so the report and best/ agree."""
    root, steps, _ = killed_commits
    k = steps.index("remove .best.old") + 1
    run = tmp_path / "run"
    shutil.copytree(root / f"k{k}", run)
    assert json.loads((run / "best" / "trainer_state.json").read_text())["iter"] == 20
    assert json.loads((run / "last" / "trainer_state.json").read_text())["iter"] == 15
    model, data, cfg = build(TEXT)
    trainer = Trainer(model, data, cfg, run, resume=True)
    assert trainer.iter_num == 15 and len(trainer.notes) == 1 and "killed between writing them" in trainer.notes[0]
    assert trainer.best_val_loss == json.loads((run / "best" / "trainer_state.json").read_text())["val_loss"]
    trainer.close()


# ---- one run per folder ----------------------------------------------------------------------
RACER = textwrap.dedent('''
    import sys, time
    from nanolens.cli import main
    start = float(sys.argv[1])
    time.sleep(max(0.0, start - time.time()))   # both processes reach the CLI at the same instant
    sys.exit(main(sys.argv[2:]))
''')


def _train_args(out: Path, corpus: Path, iters: int = 120) -> list[str]:
    return ["train", "--data", str(corpus), "--out", str(out), "--max-iters", str(iters), "--eval-interval", "40",
            "--eval-iters", "2", "--sample-interval", "0", "--batch-size", "4", "--set", "n_layer=1", "--set", "n_embd=32",
            "--set", "n_head=2", "--set", "block_size=16", "--device", "cpu"]


def test_two_runs_started_at_once_on_one_folder(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 5, encoding="utf-8")
    (tmp_path / "racer.py").write_text(RACER)
    out = tmp_path / "run"
    start = time.time() + 8.0  # after both have imported torch
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "racer.py"), str(start), *_train_args(out, corpus)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.pid, *p.communicate(timeout=300), p.returncode) for p in procs]
    codes = sorted(code for *_, code in results)
    assert codes == [0, 2], results
    (winner,) = [pid for pid, _, _, code in results if code == 0]
    (loser_err,) = [err for _, _, err, code in results if code == 2]
    assert f"in use by another run (process {winner} " in loser_err, loser_err
    rows = _rows(out)  # one writer: every row parses, each iteration is logged once
    assert [r["iter"] for r in rows if r["kind"] == "eval"] == [0, 40, 80, 120]
    assert [r["iter"] for r in rows if r["kind"] == "log"] == list(range(10, 121, 10))
    assert json.loads((out / "last" / "trainer_state.json").read_text())["iter"] == 120
    GPT.load(out / "best")


def test_a_killed_holder_leaves_a_folder_the_next_run_can_take(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 5, encoding="utf-8")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nanolens", *_train_args(out, corpus, iters=100000)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.2)
    with pytest.raises(RunLockedError, match=f"process {proc.pid} "):  # it holds the folder now
        RunLock.acquire(out)
    proc.kill()  # kill -9: no clean-up runs
    proc.wait(timeout=30)
    with RunLock.acquire(out):  # the OS dropped the dead holder's lock
        pass
    assert main(["train", "--out", str(out), "--resume", "--max-iters", "80", "--eval-interval", "40"]) == 0
    rows = _rows(out)
    assert rows[-1]["kind"] == "eval" and rows[-1]["iter"] == 80
    assert json.loads((out / "last" / "trainer_state.json").read_text())["iter"] == 80


# ---- losses that stop being numbers ----------------------------------------------------------
@pytest.mark.parametrize("flags", [["--lr", "inf"], ["--lr", "1e30", "--grad-clip", "0"]], ids=["lr_inf", "lr_1e30_no_clip"])
def test_an_exploding_loss_stops_the_run_with_a_message_and_keeps_the_checkpoints(tmp_path, capsys, flags):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 5, encoding="utf-8")
    out = tmp_path / "run"
    assert main([*_train_args(out, corpus, iters=40), "--eval-interval", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert "training stopped at iteration" in err and "Lower --lr" in err and "--grad-clip" in err
    assert "learning_rate" not in err  # the command line names its flags
    rows = _rows(out)  # strict JSON: no NaN or Infinity in any row
    assert rows[-1]["kind"] == "stop" and "training stopped at iteration" in rows[-1]["reason"]
    assert all(r["kind"] != "eval" or math.isfinite(r["val_loss"]) for r in rows)
    for name in ("best", "last"):
        model = GPT.load(out / name)
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters()), name


def _poison_at(iteration: int, trainer_ref: dict):
    """A forward hook that makes the loss NaN during training step `iteration` only."""
    def hook(module, args, output):
        trainer = trainer_ref["trainer"]
        if module.training and trainer.iter_num == iteration:
            return output * float("nan")
        return None
    return hook


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_nan_step_stops_or_is_skipped(tmp_path, policy):
    model, data, cfg = build(TEXT, on_nan=policy, max_iters=12, eval_interval=4)
    ref: dict = {}
    model.blocks[0].register_forward_hook(_poison_at(6, ref))
    trainer = ref["trainer"] = Trainer(model, data, cfg, tmp_path / "run")
    if policy == "stop":
        with pytest.raises(TrainingDiverged, match="iteration 6: the training loss is nan"):
            trainer.train()
        rows = _rows(tmp_path / "run")
        assert rows[-1]["kind"] == "stop" and rows[-1]["iter"] == 6
        assert json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())["iter"] == 4
    else:
        summary = trainer.train()
        rows = _rows(tmp_path / "run")
        assert [r["iter"] for r in rows if r["kind"] == "skip"] == [7] and summary["iter"] == 12
        assert math.isfinite(summary["val_loss"])
    assert all(bool(torch.isfinite(p).all()) for p in GPT.load(tmp_path / "run" / "last").parameters())


def test_sampling_refuses_broken_logits_with_a_message():
    tok = CharTokenizer.from_text(TEXT)
    model = GPT(preset_config("gpt2", vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=16), tok)
    with torch.no_grad():
        model.blocks[0].mlp.fc_out.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="logits hold NaN or inf"):
        model.generate("a cat", max_new_tokens=3)
    banned = [("unembed.hook_out", lambda logits, hook: logits.index_fill(-1, torch.tensor([0]), float("-inf")))]
    model = GPT(preset_config("gpt2", vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, block_size=16,
                              use_hook_unembed=True), tok)
    ids = model.generate(model.to_tokens("a cat"), max_new_tokens=20, fwd_hooks=banned, seed=0)
    assert 0 not in ids[0, 5:].tolist()  # -inf marks a banned token: still allowed
