"""How fast the explorer answers on the demo-sized model (4 layers, 4 heads, 128 wide), CPU.

    python benchmarks/bench_app.py            # median of 5 repeats per row
    python benchmarks/bench_app.py --quick    # 1 repeat (smoke run)
    python benchmarks/bench_app.py --out bench_app.md

Rows (every number measured in this run, on this machine, with one intra-op thread as the app
uses for small models; goal: under 2 s for each page):

1. Attention page data for a 64-token prompt: every layer's patterns, the per-head figure and the
   token view (what a new prompt costs).
2. Head summary: every head scored on 16 corpus windows of 64 tokens plus the induction test,
   and the head grid (computed once per checkpoint, then cached).
3. Attention page, full Streamlit rerun after typing a new 64-token prompt (AppTest: the script,
   the computation, figure serialisation).
4. Steered/unsteered pair: the contrast-pair vector, then two 80-token generations from the
   64-token prompt with the same seed, one plain and one steered (what the playground does).
5. Steering page, full Streamlit rerun after moving the coefficient slider (AppTest).
6. Logit lens and hook map for the 64-token prompt.

Each row also gives its time as a ratio to one plain forward pass of the 64-token prompt
measured in the same run (the reference). Nothing asserts on a timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

GOAL_S = 2.0
PROMPT_TOKENS = 64
NEW_TOKENS = 80


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def demo_run(folder: Path) -> Path:
    """A run folder holding a demo-sized model (random weights: speed does not depend on them)."""
    from nanolens.models import GPT, CharTokenizer, preset_config
    from nanolens.training.batches import TokenData
    from nanolens.corpora.sentiment import generate_corpus

    text = generate_corpus(100_000, seed=0).text
    tok = CharTokenizer.from_text(text)
    config = preset_config("gpt2", vocab_size=tok.vocab_size, n_layer=4, n_head=4, n_embd=128, block_size=256)
    torch.manual_seed(0)
    model = GPT(config, tokenizer=tok).eval()
    run = folder / "runs" / "demo"
    model.save(run / "best")
    TokenData.from_text(text, tok, 0.1, meta={"data": "sentiment"}).save(run / "data")
    (run / "metrics.jsonl").write_text('{"kind": "eval", "iter": 0, "train_loss": 4.0, "val_loss": 4.0}\n')
    return run


def prompt_of(model, n: int) -> str:
    from nanolens.corpora.sentiment import generate_corpus

    text = generate_corpus(5_000, seed=7).text
    return text[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat per row")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the table as markdown to this file")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    torch.set_num_threads(int(os.environ.get("NANOLENS_THREADS", "1")))

    from nanolens.apps import analysis as A
    from nanolens.apps import common
    from nanolens.apps import figures
    from nanolens.steering import Steering, contrast_pair

    with tempfile.TemporaryDirectory() as tmp:
        run = demo_run(Path(tmp))
        model = common.load_model(run / "best")
        prompt = prompt_of(model, PROMPT_TOKENS)
        tokens = model.to_tokens(prompt)
        assert tokens.shape[1] == PROMPT_TOKENS

        def forward():
            with torch.no_grad():
                model(tokens)

        reference = median_time(forward, max(repeats, 5) * 4)

        def attention_page():
            with common.using(model):
                data = A.attention_patterns(model, prompt)
            figures.attention_figure(data, 0, 0).to_json()
            figures.token_view_html(data.tokens, A.attends_to(data, 0, 0, PROMPT_TOKENS - 1), PROMPT_TOKENS - 1)

        ids, _ = A.corpus_ids(model, run)
        windows = A.corpus_windows(ids, 64, 16, seed=0)

        def head_summary():
            with common.using(model):
                scores = A.head_scores(model, windows)
            figures.head_grid_figure(scores, "previous_token", "L0H0").to_json()

        def steering_pair():
            with common.using(model):
                vector = contrast_pair(model, "She felt happy and calm.", "She felt sad and upset.", 2, position="mean")
                plain = "".join(model.generate_stream(prompt, max_new_tokens=NEW_TOKENS, temperature=0.8, seed=0))
                steered = "".join(model.generate_stream(prompt, max_new_tokens=NEW_TOKENS, temperature=0.8, seed=0,
                                                        steering=Steering(vector, coeff=4.0, relative=True)))
            return plain, steered

        def lens_and_hooks():
            with common.using(model):
                lens = A.logit_lens(model, prompt)
                summary, _ = A.hook_summary(model, prompt)
            figures.logit_lens_figure(lens).to_json()
            figures.hook_diagram(summary).to_json()

        rows = [
            ("attention page data (64-token prompt)", median_time(attention_page, repeats)),
            ("head summary + grid (once per checkpoint)", median_time(head_summary, repeats)),
        ]
        rows.append(("attention page, full Streamlit rerun (AppTest)", _apptest_row(run, prompt, repeats, "Attention")))
        rows.append((f"steered/unsteered pair ({NEW_TOKENS} new tokens each)", median_time(steering_pair, repeats)))
        rows.append(("steering page, full Streamlit rerun (AppTest)", _apptest_row(run, prompt, repeats, "Steering")))
        rows.append(("logit lens + hook map data", median_time(lens_and_hooks, repeats)))

    lines = [
        f"# explorer speed: demo-sized model (4 layers, 4 heads, d_model 128), {PROMPT_TOKENS}-token prompt",
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), median of {repeats}",
        f"# reference: one plain forward pass of the prompt = {reference * 1000:.2f} ms",
        "",
        f"| {'row':<50} | {'seconds':>8} | {'x forward':>9} | goal < {GOAL_S:g} s |",
        f"|{'-' * 52}|{'-' * 10}|{'-' * 11}|{'-' * 13}|",
    ]
    for name, seconds in rows:
        met = "met" if seconds < GOAL_S else "MISSED"
        lines.append(f"| {name:<50} | {seconds:8.3f} | {seconds / reference:9.1f} | {met:>11} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")
    return 0


def _apptest_row(run: Path, prompt: str, repeats: int, page: str) -> float:
    """Median seconds of an AppTest rerun of `page` after a widget change (the first run is untimed)."""
    from streamlit.testing.v1 import AppTest

    from nanolens.apps import APP_PATH

    at = AppTest.from_file(str(APP_PATH), default_timeout=300)
    at.session_state["source"] = str(run)
    at.session_state["page"] = page
    if page == "Steering":
        at.session_state["steer_tokens"] = NEW_TOKENS
        at.session_state["steer_prompt"] = prompt
    else:
        at.session_state["attention_prompt"] = prompt
    at.run()
    times = []
    for i in range(repeats):
        if page == "Steering":
            at.slider(key="steer_coeff").set_value(float(i % 8) + 1.0)
        else:  # a new prompt of the same length: the pattern cache misses
            at.text_area(key="attention_prompt").input(prompt[i + 1:] + prompt[: i + 1])
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
        if at.exception:
            raise RuntimeError(at.exception[0].value)
    return statistics.median(times)


if __name__ == "__main__":
    sys.exit(main())
