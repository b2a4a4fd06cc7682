"""The Streamlit explorer, page by page, through streamlit.testing.v1.AppTest: each test drives
the page's widgets and checks what it shows, that no exception escaped, and that no hook is left
attached on the shared model after the rerun."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

from streamlit.testing.v1 import AppTest  # noqa: E402

from nanolens.apps import APP_PATH, analysis, common  # noqa: E402
from nanolens.apps.demo_run import make_run  # noqa: E402

TIMEOUT = 120  # seconds per script run: the first one imports torch, transformer-lens and loads the model
PROMPT = "The sky was bright and she felt happy."


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A tiny model trained for 30 iterations, with a checkpoint kept at iterations 0, 10, 20, 30."""
    return make_run(tmp_path_factory.mktemp("explorer") / "runs" / "tiny", iters=30, eval_interval=10)


@pytest.fixture(scope="session")
def model(run_dir):
    return common.load_model(run_dir / "best")


def open_app(source, page: str, **state) -> AppTest:
    at = AppTest.from_file(str(APP_PATH), default_timeout=TIMEOUT)
    at.session_state["source"] = str(source)
    at.session_state["page"] = page
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def no_hooks_left() -> None:
    assert common.attached_hooks() == {}
    for model in common.loaded_models().values():
        assert model.attached_hooks() == {}


def healthy(at: AppTest) -> AppTest:
    """No traceback shown, no hook attached after the rerun."""
    assert not at.exception, [e.value for e in at.exception]
    no_hooks_left()
    return at


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def array(value) -> np.ndarray:
    """A plotly data array from a figure's JSON (plotly 6 writes numpy arrays as base64 "bdata")."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            data = data.reshape([int(n) for n in str(shape).split(",")])
        return data
    return np.asarray(value, dtype=object)


def traces(fig: dict, kind: str) -> list[dict]:
    return [t for t in fig["data"] if t.get("type") == kind]


# ---------------------------------------------------------------------------------------------
def test_model_page(run_dir, model):
    at = healthy(open_app(run_dir.parent, "Model"))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == f"{model.num_params():,}"
    assert metrics["Preset"] == "gpt2"
    assert metrics["Val loss"] != "—" and float(metrics["Val loss"]) > 0
    assert "Ladder rung" in " ".join(m.value for m in at.markdown)
    assert not at.error and not at.warning


def test_attention_page_heads_and_token_view(run_dir, model):
    at = healthy(open_app(run_dir, "Attention"))
    at.text_area(key="attention_prompt").input(PROMPT).run()
    healthy(at)
    attn = figures(at)[0]
    n_heads = model.config.n_head
    assert len(traces(attn, "heatmap")) == n_heads  # one panel per head
    # pick a head of another layer: the figure follows it
    at.selectbox(key="attn_head").set_value("L1H2").run()
    healthy(at)
    attn = figures(at)[0]
    assert "Layer 1" in attn["layout"]["title"]["text"]
    assert any("head 2 ◀" in a["text"] for a in attn["layout"]["annotations"])
    # the token view: move to token 5 and look at what it attends to
    at.slider(key="attn_token").set_value(5).run()
    healthy(at)
    view = next(m.value for m in at.markdown if "nanolens-token-view" in m.value)
    assert "position 5" in view and view.count("<span") == len(PROMPT)
    # attention weights of a causal head: nothing after the query position
    assert 'title="position 6: 0.000"' in view
    # the head summary scores every head
    table = at.dataframe[0].value
    assert len(table) == model.config.n_layer * n_heads
    for col in analysis.HEAD_SCORES:
        assert table[col].between(0, 1).all()
    grid = figures(at)[1]
    assert array(traces(grid, "heatmap")[0]["z"]).shape == (model.config.n_layer, n_heads)
    assert len(traces(grid, "scatter")[0]["customdata"]) == len(table)


def test_attention_page_bad_prompts(run_dir):
    at = open_app(run_dir, "Attention")
    at.text_area(key="attention_prompt").input("").run()
    healthy(at)
    assert any("empty" in w.value for w in at.warning)
    at.text_area(key="attention_prompt").input("snow ☃ falls").run()
    healthy(at)
    assert any("vocabulary" in w.value and "☃" in w.value for w in at.warning)
    assert not at.get("plotly_chart")


def test_logit_lens_page(run_dir, model):
    at = healthy(open_app(run_dir, "Logit lens"))
    at.text_area(key="lens_prompt").input(PROMPT).run()
    at.slider(key="lens_k").set_value(3).run()
    healthy(at)
    lens, true_next = figures(at)[:2]
    heat = traces(lens, "heatmap")[0]
    assert heat["y"] == ["embed"] + [f"L{i}" for i in range(model.config.n_layer)]
    assert array(heat["z"]).shape == (model.config.n_layer + 1, len(PROMPT))
    assert array(traces(true_next, "heatmap")[0]["z"]).shape == (model.config.n_layer + 1, len(PROMPT) - 1)
    assert "<br>" in heat["customdata"][0][0]  # the hover lists the top 3


def test_steering_page_large_coefficient_changes_the_text(run_dir):
    at = open_app(run_dir, "Steering", steer_tokens=40, steer_layer=1)
    healthy(at)
    at.slider(key="steer_coeff").set_value(10.0).run()
    healthy(at)
    result = at.session_state["steer_result"]
    assert result["steered"] != result["unsteered"]
    assert "touched" in result["report"]
    shown = " ".join(m.value for m in at.markdown)
    assert "Steered: +10" in shown
    assert [m.label for m in at.metric].count("Sentiment of the continuation") == 2
    # coefficient 0 with the same seed gives exactly the unsteered text
    at.slider(key="steer_coeff").set_value(0.0).run()
    healthy(at)
    result = at.session_state["steer_result"]
    assert result["steered"] == result["unsteered"]


def test_steering_page_bad_inputs(run_dir, tmp_path):
    at = open_app(run_dir, "Steering", steer_tokens=10)
    at.text_input(key="steer_pos").input("über").run()
    healthy(at)
    assert any("positive prompt" in w.value for w in at.warning)
    at.text_input(key="steer_pos").input("happy").run()
    at.text_area(key="steer_prompt").input("").run()
    healthy(at)
    assert any("empty" in w.value for w in at.warning)
    at.radio(key="steer_source").set_value("load a saved vector").run()
    at.text_input(key="steer_file").input(str(tmp_path / "missing.safetensors")).run()
    healthy(at)
    assert at.error and "Cannot use" in at.error[0].value


def test_probes_page(run_dir, model):
    at = open_app(run_dir, "Probes", probe_n=60)
    healthy(at)
    fig = figures(at)[0]
    acc = fig["data"][0]
    assert acc["x"] == ["embed"] + [str(i) for i in range(model.config.n_layer)]
    assert ((array(acc["y"]) >= 0) & (array(acc["y"]) <= 1)).all()
    at.selectbox(key="probe_layer").set_value("1").run()
    at.text_area(key="probes_prompt").input(PROMPT).run()
    healthy(at)
    view = next(m.value for m in at.markdown if "nanolens-probe-view" in m.value)
    assert view.count("<span") == len(PROMPT)


def test_training_page(run_dir):
    at = healthy(open_app(run_dir, "Training"))
    loss = figures(at)[0]
    names = [t["name"] for t in loss["data"]]
    assert "val (estimate)" in names and "train (per step)" in names
    val = next(t for t in loss["data"] if t["name"] == "val (estimate)")
    assert array(val["x"]).tolist() == [0, 10, 20, 30]
    at.select_slider(key="train_sample").set_value(10).run()
    healthy(at)
    samples = dict(analysis.read_run_metrics(run_dir).samples)
    assert at.code[0].value.strip() == samples[10].strip()
    assert any("iter 30" in m.value for m in at.markdown)


def test_training_page_shows_the_rows_it_can_read_and_says_how_many_it_skipped(run_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    lines = (broken / "metrics.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["iter"] = "x"
    lines[2] = json.dumps(row)
    (broken / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    at = healthy(open_app(broken, "Training"))
    assert any("1 did not and are left out" in w.value and "line 3: iter: expected an integer, got 'x'" in w.value
               for w in at.warning)
    val = next(t for t in figures(at)[0]["data"] if t["name"] == "val (estimate)")
    assert array(val["x"]).tolist() == [0, 10, 20, 30]  # the page still shows what could be read


def test_training_page_is_live_while_a_run_is_fresh(run_dir, tmp_path):
    import shutil

    live = tmp_path / "live"
    shutil.copytree(run_dir, live)
    # a run that stopped short of its planned iterations, and wrote metrics just now
    lines = [line for line in (live / "metrics.jsonl").read_text().splitlines() if json.loads(line)["iter"] <= 10]
    (live / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert analysis.is_training(live)
    at = healthy(open_app(live, "Training"))
    assert at.toggle(key="train_live").value is True
    assert not analysis.is_training(run_dir, now=time.time() + 3600)


def test_across_training_page(run_dir):
    at = healthy(open_app(run_dir, "Across training"))
    at.selectbox(key="lapse_head").set_value("L0H1").run()
    healthy(at)
    lapse = figures(at)[0]
    assert [f["name"] for f in lapse["frames"]] == ["iter 0", "iter 10", "iter 20", "iter 30"]
    assert "L0H1" in lapse["layout"]["title"]["text"]
    history = figures(at)[1]
    assert array(history["data"][0]["x"]).tolist() == [0, 10, 20, 30]


def test_across_training_probes_and_steering(run_dir):
    at = healthy(open_app(run_dir, "Across training", lapse_probe_n=40, lapse_max=2, lapse_samples=1))
    at.toggle(key="lapse_probes").set_value(True).run()
    healthy(at)
    table = at.session_state["lapse_probe_table"]
    assert sorted(table["iter"].unique()) == [0, 30]  # the first and the last of the 4 checkpoints
    assert table["accuracy"].between(0, 1).all()
    at.toggle(key="lapse_probes").set_value(False)
    at.toggle(key="lapse_steer").set_value(True).run()
    healthy(at)
    steer = at.session_state["lapse_steer_table"]
    assert steer["iter"].tolist() == [0, 30]
    assert steer[["unsteered", "steered"]].abs().le(1).all().all()


def test_across_training_needs_several_checkpoints(run_dir, tmp_path):
    import shutil

    lone = tmp_path / "lone"
    shutil.copytree(run_dir / "best", lone)  # a checkpoint outside any run
    at = healthy(open_app(lone, "Across training"))
    assert "not inside a run" in at.info[0].value
    one = tmp_path / "one"
    shutil.copytree(run_dir / "best", one / "best")
    shutil.copy(run_dir / "metrics.jsonl", one / "metrics.jsonl")
    at = healthy(open_app(one, "Across training"))
    assert "1 distinct saved checkpoint" in at.info[0].value


def test_hook_map_page(run_dir, model):
    at = healthy(open_app(run_dir, "Hook map"))
    at.text_area(key="hooks_prompt").input(PROMPT).run()
    at.selectbox(key="hook_pick").set_value("blocks.1.attn.hook_pattern").run()
    healthy(at)
    table = at.dataframe[0].value
    assert table["hook"].tolist() == model.hook_names()
    metrics = {m.label: m.value for m in at.metric}
    n = len(PROMPT)
    assert metrics["shape"] == str([1, model.config.n_head, n, n])
    diagram = figures(at)[0]
    assert diagram["data"][0]["customdata"] == model.hook_names()
    # an optional hook behind a switch says how to turn it on
    at.selectbox(key="hook_pick").set_value("blocks.0.attn.hook_result").run()
    healthy(at)
    assert any("use_attn_result" in i.value for i in at.info)


def test_ladder_rungs_without_attention_heads(model, tmp_path):
    """The bigram rung has no blocks, the average rung one parameter-free head: pages say so."""
    from nanolens.models import GPT, preset_config

    for name in ("bigram", "average"):
        cfg = preset_config(name, vocab_size=model.config.vocab_size, n_embd=16, block_size=64)
        GPT(cfg, tokenizer=model.tokenizer).save(tmp_path / name / "best")
    at = healthy(open_app(tmp_path / "bigram", "Attention"))
    assert "no attention layers" in at.info[0].value
    for page, words in (("Steering", "no blocks"), ("Probes", "no blocks")):
        at.radio(key="page").set_value(page).run()
        healthy(at)
        assert words in at.info[0].value
    at = healthy(open_app(tmp_path / "average", "Attention"))
    assert len(traces(figures(at)[0], "heatmap")) == 1


def test_not_a_run_shows_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for source in (tmp_path / "empty", tmp_path / "missing", APP_PATH):
        at = healthy(open_app(source, "Attention"))
        assert at.error
        text = at.error[0].value
        assert "not a nanolens run" in text or "does not exist" in text or "not a folder" in text


def test_every_page_leaves_no_hooks_after_every_rerun(run_dir):
    at = open_app(run_dir, "Model", steer_tokens=10, probe_n=40)
    for page in ("Attention", "Logit lens", "Steering", "Probes", "Training", "Across training", "Hook map", "Model"):
        at.radio(key="page").set_value(page).run()
        healthy(at)
        assert not at.error, (page, [e.value for e in at.error])


def test_using_removes_leftover_hooks(model):
    with common.using(model):
        model.add_hook("blocks.0.hook_resid_pre", lambda act, hook: act)
        assert model.attached_hooks()
    assert model.attached_hooks() == {}


def test_an_interrupted_stream_removes_its_steering_hooks(model):
    """The playground closes its generator in a `finally`: a rerun mid-stream detaches the hooks."""
    from nanolens.steering import Steering, contrast_pair

    vector = contrast_pair(model, "happy", "sad", 1, position="mean")
    gen = model.generate_stream(PROMPT, max_new_tokens=20, seed=0, steering=Steering(vector, coeff=4.0, relative=True))
    next(gen)
    assert model.attached_hooks()  # steering is live while the stream is open
    gen.close()
    no_hooks_left()


def test_steering_in_one_session_never_leaks_into_another(model):
    """A steering held by one thread (one browser session) must not change what another computes."""
    from nanolens.steering import Steering, contrast_pair

    baseline = analysis.logit_lens(model, PROMPT).final_logits
    vector = contrast_pair(model, "happy", "sad", 1, position="mean")
    holding = threading.Event()

    def steering_session() -> None:
        with common.using(model), Steering(vector, coeff=50.0, relative=True).applied(model):
            holding.set()
            time.sleep(0.5)

    t = threading.Thread(target=steering_session)
    t.start()
    holding.wait(5)
    with common.using(model):  # waits for the other session's steering to finish
        seen = analysis.logit_lens(model, PROMPT).final_logits
    t.join()
    assert (seen == baseline).all()
    no_hooks_left()


def test_explore_cli_dry_run(run_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "nanolens", "explore", "--runs", str(run_dir.parent), "--port", "8599",
                          "--dry-run"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    command, url = out.stdout.strip().splitlines()
    assert "streamlit run" in command and str(APP_PATH) in command and "--server.headless true" in command
    assert "--browser.gatherUsageStats false" in command and command.endswith(f"--runs {run_dir.parent}")
    assert url == "http://127.0.0.1:8599"
    bad = subprocess.run([sys.executable, "-m", "nanolens", "explore", "--ckpt", str(tmp_path / "nope"), "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no such folder" in bad.stderr
