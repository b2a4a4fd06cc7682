"""bf16 autocast against fp32, and what `--dtype auto` picks, measured in one run; every speed
with its MFU against this machine's measured peak (`nanolens bench`).

    python benchmarks/bench_precision.py              # the full run
    python benchmarks/bench_precision.py --quick      # a smoke run
    python benchmarks/bench_precision.py --out benchmarks/results/bench_precision.md

Rows: the training step (forward, backward, AdamW; fp32 master weights and optimizer state, loss
in fp32) at 4L/128 (nanoGPT's CPU recipe), 6L/384 (nanoGPT's Shakespeare model, block 256) and
12L/768 (GPT-2 small's shape, block 256), and greedy KV-cached decode at 6L/384 and 12L/768.
Each row times fp32, bf16 autocast and auto in alternating order (bench_model's `interleaved`).
On a CPU without native bf16 (AVX-512 BF16 or AMX) torch emulates bf16 at a few GFLOP/s: a bf16
side whose estimated trial (model FLOPs over the measured bf16 peak) would exceed
`--max-trial-seconds` is not run, and the row says so with the estimate.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from bench_model import Side, header, interleaved, timed  # a sibling script: its timing helpers
from nanolens.models import GPT, preset_config
from nanolens.models.costs import forward_flops_per_token, train_flops_per_token
from nanolens.tables import markdown_table
from nanolens.training.peak import native_bf16_cpu, peak_flops
from nanolens.training.runtime import resolve_dtype

SHAPES = {"4L/128": dict(n_layer=4, n_head=4, n_embd=128, block_size=64), "6L/384": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
          "12L/768": dict(n_layer=12, n_head=12, n_embd=768, block_size=256)}


@dataclass
class Measured:
    tokens_per_s: float | None
    mfu: float | None
    note: str = ""


def autocast(dtype: torch.dtype):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()


def train_sides(shape: str, batch: int, steps: int) -> tuple[GPT, dict[torch.dtype, Side], int]:
    torch.manual_seed(0)
    model = GPT(preset_config("gpt2", vocab_size=65, dropout=0.0, **SHAPES[shape])).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    block = model.config.block_size
    data = torch.randint(0, 65, (batch, block + 1), generator=torch.Generator().manual_seed(0))

    def side(dtype: torch.dtype) -> Side:
        def run() -> None:
            for _ in range(steps):
                with autocast(dtype):
                    loss = model(data[:, :-1], targets=data[:, 1:], return_type="loss")
                loss.float().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return Side(run)

    return model, {d: side(d) for d in (torch.float32, torch.bfloat16)}, steps * batch * block


def decode_sides(shape: str, tokens: int) -> tuple[GPT, dict[torch.dtype, Side], int]:
    torch.manual_seed(0)
    model = GPT(preset_config("gpt2", vocab_size=65, dropout=0.0, **SHAPES[shape])).eval()
    prompt = torch.randint(0, 65, (1, 16), generator=torch.Generator().manual_seed(0))

    def side(dtype: torch.dtype) -> Side:
        def run() -> None:
            with autocast(dtype):
                model.generate(prompt, max_new_tokens=tokens, temperature=0)
        return Side(run)

    return model, {d: side(d) for d in (torch.float32, torch.bfloat16)}, tokens


def measure(kind: str, shape: str, args: argparse.Namespace) -> dict[str, Measured]:
    if kind == "train":
        model, sides, tokens = train_sides(shape, args.batch, args.steps)
        flops = train_flops_per_token(model.config)
    else:
        model, sides, tokens = decode_sides(shape, args.decode_tokens)
        flops = forward_flops_per_token(model.config, model.config.block_size // 2)
    peaks = {d: peak_flops(str(d).removeprefix("torch."), "cpu") for d in sides}
    auto, _ = resolve_dtype("auto", "cpu", model.config.n_embd)
    run = dict(sides)
    estimate = tokens * flops / peaks[torch.bfloat16]
    skipped = ""
    if estimate > args.max_trial_seconds:
        run.pop(torch.bfloat16)
        skipped = f"not run: ~{estimate:,.0f} s per trial at the measured bf16 peak ({peaks[torch.bfloat16] / 1e9:.1f} GFLOP/s)"
    for side in run.values():  # warm-up
        timed(side.run)
    times = dict(zip(run, interleaved(*run.values(), rounds=args.rounds)))
    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("auto", auto)):
        if dtype not in times:
            out[name] = Measured(None, None, skipped)
            continue
        tps = tokens / statistics.median(times[dtype])
        out[name] = Measured(tps, tps * flops / peaks[dtype], "" if name != "auto" else f"= {str(auto).removeprefix('torch.')}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="training steps per trial")
    p.add_argument("--decode-tokens", type=int, default=None)
    p.add_argument("--max-trial-seconds", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 6)
    args.steps = args.steps or (1 if args.quick else 2)
    args.decode_tokens = args.decode_tokens or (8 if args.quick else 64)
    args.decode_rounds, args.notes = args.rounds, []
    if args.threads:
        torch.set_num_threads(args.threads)
    head = header(args)
    head[0] = head[0].replace("bench_model", "bench_precision")
    native = "yes" if native_bf16_cpu() else f"no ({torch.backends.cpu.get_cpu_capability()})"
    head.append(f"native bf16 on this CPU: {native}; auto: {resolve_dtype('auto', 'cpu', 768)[1]}")
    print("\n".join(head), flush=True)
    rows = []
    plan = [("train", s) for s in SHAPES] + ([("decode", s) for s in ("6L/384", "12L/768")] if not args.quick else [("decode", "4L/128")])
    for kind, shape in plan:
        print(f"... {kind} {shape}", file=sys.stderr, flush=True)
        m = measure(kind, shape, args)
        fp32 = m["float32"].tokens_per_s

        def cell(x: Measured) -> str:
            return f"{x.tokens_per_s:,.0f} tok/s, MFU {x.mfu:.1%}" if x.tokens_per_s else x.note

        rows.append({"row": f"{'training step' if kind == 'train' else 'greedy decode'} {shape}", "fp32": cell(m["float32"]),
                     "bf16 autocast": cell(m["bfloat16"]),
                     "bf16 / fp32": f"{m['bfloat16'].tokens_per_s / fp32:.3f}" if m["bfloat16"].tokens_per_s else "-",
                     "auto": f"{cell(m['auto'])} ({m['auto'].note})", "auto / fp32": f"{m['auto'].tokens_per_s / fp32:.3f}"})
    table = markdown_table(pd.DataFrame(rows))
    print(table)
    if args.out:
        args.out.write_text("# " + head[0] + "\n\n" + "  \n".join(head[1:]) + "\n\n" + table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
