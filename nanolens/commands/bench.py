"""`nanolens bench`: this machine's measured matmul peak (fp32 and bf16, per thread count),
the denominator of every MFU figure nanolens prints; measured once and cached."""

from __future__ import annotations

import argparse
import os

import pandas as pd
import torch

from nanolens.files import cache_dir
from nanolens.tables import markdown_table
from nanolens.training.peak import PEAK_FILE, native_bf16_cpu, peak_flops, processor


def run(args: argparse.Namespace) -> int:
    cores = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, torch.get_num_threads(), cores})
    rows = []
    for n in threads:
        fp32 = peak_flops("float32", "cpu", n, refresh=args.refresh)
        bf16 = peak_flops("bfloat16", "cpu", n, refresh=args.refresh)
        rows.append({"threads": n, "fp32 GFLOP/s": fp32 / 1e9, "bf16 GFLOP/s": bf16 / 1e9, "bf16 / fp32": f"{bf16 / fp32:.3f}"})
    if torch.cuda.is_available():
        for dtype in ("float32", "bfloat16"):
            rows.append({"threads": f"cuda ({dtype})", f"{'fp32' if dtype == 'float32' else 'bf16'} GFLOP/s":
                         peak_flops(dtype, "cuda", refresh=args.refresh) / 1e9})
    native = "yes" if native_bf16_cpu() else f"no ({torch.backends.cpu.get_cpu_capability()}: bf16 is emulated)"
    print(f"{processor()}, {cores} cores, torch {torch.__version__}; native bf16 matmul: {native}")
    print(markdown_table(pd.DataFrame(rows).fillna(float("nan")), floatfmt=".1f"))
    print(f"cached in {cache_dir() / PEAK_FILE}; MFU figures divide by the row of the thread count in use")
    return 0
