"""Activation extraction: throughput against a plain forward pass, and peak memory.

Extracts `resid_post` at every layer (plus the embeddings) for N texts of 64 tokens with
`nanolens.probes.extract_activations`, and runs a plain forward pass (`model(tokens)`, logits and
all) over the same batches as the reference. Each measurement runs in a fresh subprocess, so its
peak RSS (`ru_maxrss`) is its own. Rows:

- `forward`: the reference, no hooks;
- `extract last`: one row per text, kept in memory ([N, d_model] per hook);
- `extract all -> disk`: one row per token (N * 64 rows per hook), streamed to .npy files with
  `out_dir` (an output far larger than what stays resident), read back memory-mapped.

    python benchmarks/bench_probes.py            # N = 10,000 (the issue's setting)
    python benchmarks/bench_probes.py --quick    # N = 1,000, a smoke run
    python benchmarks/bench_probes.py --out benchmarks/results/bench_probes.md   # also write the table

Peak RSS includes torch itself (a few hundred MB before any activation exists: see "RSS
before"); what extraction adds is the difference. Timings under load from other processes are
noisy; `--rounds` repeats the runs in alternating order and reports medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    """The current resident set size (Linux /proc; psutil elsewhere if installed)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2**20
        except ImportError:
            return float("nan")


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def build(args):
    import torch

    from nanolens.models import GPT, preset_config

    torch.manual_seed(0)
    config = preset_config(args.preset, vocab_size=65, n_layer=args.layers, n_embd=args.d_model, block_size=args.seq)
    model = GPT(config).eval().to(args.device)
    tokens = torch.randint(0, 65, (args.n, args.seq), generator=torch.Generator().manual_seed(0))
    return model, tokens


def phase(args) -> dict:
    import torch

    from nanolens.probes import extract_activations

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokens = build(args)
    with torch.inference_mode():  # warm up (kernels, allocator) outside the timing
        model(tokens[: args.batch_size].to(args.device))
    base = rss_mb()
    out_mb = 0.0
    sync = torch.cuda.synchronize if str(args.device).startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    if args.phase == "forward":
        with torch.inference_mode():
            for i in range(0, args.n, args.batch_size):
                model(tokens[i : i + args.batch_size].to(args.device))
        sync()
    elif args.phase == "last":
        acts = extract_activations(model, tokens, hooks=["blocks.0.hook_resid_pre", "resid_post"], positions="last",
                                   batch_size=args.batch_size, progress=False)
        out_mb = sum(a.nbytes for a in acts.acts.values()) / 2**20
    elif args.phase == "all-disk":
        out_dir = Path(args.scratch) / "acts"
        acts = extract_activations(model, tokens, hooks=["blocks.0.hook_resid_pre", "resid_post"], positions="all",
                                   batch_size=args.batch_size, progress=False, out_dir=out_dir)
        out_mb = sum(a.nbytes for a in acts.acts.values()) / 2**20
    seconds = time.perf_counter() - start
    return {"phase": args.phase, "seconds": seconds, "base_rss_mb": base, "peak_rss_mb": peak_rss_mb(), "output_mb": out_mb}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="texts (default 10,000; 1,000 with --quick)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seq", type=int, default=64, help="tokens per text")
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--phase", choices=("forward", "last", "all-disk"), help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip-disk", action="store_true", help="leave out the all-positions-to-disk row")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds, alternating the order (default 1; 3 with --quick)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as markdown to this file")
    parser.add_argument("--in-process", action="store_true",
                        help="run every row in this process (a quick smoke run; peak RSS is then not per row)")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 1_000 if args.quick else 10_000
    if args.phase:
        print(json.dumps(phase(args)))
        return 0

    phases = ["forward", "last"] + ([] if args.skip_disk else ["all-disk"])
    rounds = args.rounds or (3 if args.quick else 1)
    scratch = tempfile.mkdtemp(prefix="bench_probes_")
    runs: dict[str, list[dict]] = {name: [] for name in phases}
    try:
        for r in range(rounds):
            # alternate the order, so that load from other processes falls on every row alike
            for name in (phases if r % 2 == 0 else phases[::-1]):
                if args.in_process:  # smoke tests: no fresh process, so peak RSS is the whole run's
                    runs[name].append(phase(argparse.Namespace(**{**vars(args), "phase": name, "scratch": scratch})))
                else:
                    cmd = [sys.executable, __file__, "--phase", name, "--scratch", scratch, "--n", str(args.n), "--seq", str(args.seq),
                           "--preset", args.preset, "--layers", str(args.layers), "--d-model", str(args.d_model),
                           "--batch-size", str(args.batch_size), "--device", args.device, "--threads", str(args.threads)]
                    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        print(done.stderr, file=sys.stderr)
                        return done.returncode
                    runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                shutil.rmtree(Path(scratch) / "acts", ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    labels = {"forward": "forward (reference)", "last": "extract last -> memory", "all-disk": "extract all -> disk"}
    head = (f"{args.n:,} texts x {args.seq} tokens, {args.preset} {args.layers} layers d_model {args.d_model}, "
            f"batch {args.batch_size}, {args.device}, {rounds} round(s) in alternating order (medians); "
            f"hooks: blocks.0.hook_resid_pre + resid_post x {args.layers}; each run in a fresh process")
    lines = ["| run | seconds | texts/s | time vs forward | peak RSS MB | RSS before MB | output MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in phases:
        rs = runs[name]
        seconds = statistics.median(r["seconds"] for r in rs)
        ratio = statistics.median(r["seconds"] / f["seconds"] for r, f in zip(rs, runs["forward"]))
        lines.append(f"| {labels[name]} | {seconds:.2f} | {args.n / seconds:,.0f} | {ratio:.2f}x | "
                     f"{max(r['peak_rss_mb'] for r in rs):.0f} | {statistics.median(r['base_rss_mb'] for r in rs):.0f} | "
                     f"{rs[0]['output_mb']:.0f} |")
    print("# " + head)
    print()
    print("\n".join(lines))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(["# bench_probes", "", head, "", *lines, ""]), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
