"""This machine's measured matmul peak, the denominator of every MFU figure nanolens prints.

nanoGPT divides by an A100's 312 TFLOPS, which on a laptop CPU prints 0.02% and says nothing.
Here the peak is measured: the best throughput of large square matrix multiplies at the thread
count (and dtype, device) in use, measured once and cached in the user cache
(`peak.json`), keyed by the processor, torch's version, the device and the thread count.
`nanolens bench` measures and prints it. bf16 is "native" on a CPU with AVX-512 BF16 or AMX;
elsewhere torch emulates it and it runs tens of times slower than fp32.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nanolens.files import atomic_write_text, cache_dir

PEAK_FILE = "peak.json"
BF16_PAYS = 1.15  # `--dtype auto` takes bf16 on a CPU where a model-shaped matmul runs this much faster
DTYPE_OF = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def processor() -> str:
    """The processor's name (Linux reads /proc/cpuinfo; elsewhere platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX), as torch sees it."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _key(device: str, dtype: str, threads: int) -> str:
    name = torch.cuda.get_device_name() if device.startswith("cuda") else processor()
    return f"{name} | torch {torch.__version__} | {device} | {dtype} | {threads} threads"


def measure_matmul(dtype: str = "float32", device: str = "cpu", size: int | None = None, seconds: float = 0.4) -> float:
    """The best FLOP/s of `size` x `size` matrix multiplies over about `seconds`, through
    `F.linear`, the op the model's layers call (on a CPU, torch's bf16 `@` takes a far slower
    path than the oneDNN kernel `F.linear` and autocast reach)."""
    kind = DTYPE_OF[dtype]
    if size is None:  # emulated bf16 is slow: a smaller matrix keeps the measurement short
        size = 1024 if device != "cpu" or kind == torch.float32 or native_bf16_cpu() else 512
    a = torch.randn(size, size, device=device).to(kind)
    b = torch.randn(size, size, device=device).to(kind)
    best, deadline = 0.0, time.perf_counter() + seconds
    F.linear(a, b)  # warm-up
    while True:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        F.linear(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
        if time.perf_counter() > deadline:
            return best


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def peak_flops(dtype: str = "float32", device: str = "cpu", threads: int | None = None, refresh: bool = False) -> float:
    """This machine's matmul peak in FLOP/s for `dtype` on `device` at `threads` (default: the
    current count), measured on first use and cached."""
    threads = threads or torch.get_num_threads()
    path = cache_dir() / PEAK_FILE
    cache = _read_cache(path)
    key = _key(device, dtype, threads)
    if not refresh and isinstance(cache.get(key), (int, float)) and cache[key] > 0:
        return float(cache[key])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        value = measure_matmul(dtype, device)
    finally:
        torch.set_num_threads(before)
    cache[key] = value
    try:
        atomic_write_text(path, json.dumps(cache, indent=1) + "\n")
    except OSError:  # a read-only cache: the figure still serves this process
        pass
    return value


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation: the share of the measured peak the model's own FLOPs reach."""
    return tokens_per_s * flops_per_token / peak if peak > 0 else float("nan")


def bf16_speedup(width: int, tokens: int = 1024, refresh: bool = False) -> float:
    """How much faster a [tokens, width] x [width, 4 * width] matmul (an MLP's) runs in bf16
    than in fp32 on this CPU: the measurement `--dtype auto` decides by (cached)."""
    path = cache_dir() / PEAK_FILE
    cache = _read_cache(path)
    key = f"{_key('cpu', 'bf16/fp32', torch.get_num_threads())} | width {width}"
    if not refresh and isinstance(cache.get(key), (int, float)):
        return float(cache[key])
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, w = torch.randn(tokens, width).to(dtype), torch.randn(4 * width, width).to(dtype)
        F.linear(x, w)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            F.linear(x, w)
            best = min(best, time.perf_counter() - start)
        times[dtype] = best
    cache[key] = value = times[torch.float32] / times[torch.bfloat16]
    try:
        atomic_write_text(path, json.dumps(cache, indent=1) + "\n")
    except OSError:
        pass
    return value
