"""Where a run computes: the device, the autocast dtype, the processes of a data-parallel run,
and the seeds of its random streams."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from nanolens.models import ConfigError

from .peak import BF16_PAYS, bf16_speedup, native_bf16_cpu

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str = "auto") -> str:
    """`auto` picks cuda, then mps, then cpu; any other name is used as given."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(name: str, device_type: str, width: int | None = None) -> tuple[torch.dtype, str]:
    """The autocast dtype and why. `auto` is bfloat16 (or float16 without bf16 support) on CUDA;
    on a CPU it is bfloat16 only where the CPU multiplies bf16 natively and a measured matmul at
    the model's `width` runs faster in bf16 (`bf16_speedup`), else float32; elsewhere float32.
    float16 needs CUDA; mps runs float32 only."""
    if name == "auto":
        if device_type == "cuda":
            return (torch.bfloat16, "bf16 autocast on CUDA") if torch.cuda.is_bf16_supported() else (
                torch.float16, "fp16 autocast on CUDA (no bf16 on this GPU)")
        if device_type == "cpu":
            if not native_bf16_cpu():
                return torch.float32, (f"float32: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16, "
                                       "so bf16 autocast would be emulated and slower")
            speedup = bf16_speedup(width or 256)
            if speedup >= BF16_PAYS:
                return torch.bfloat16, f"bf16 autocast: measured {speedup:.2f}x fp32's matmul speed at width {width}"
            return torch.float32, f"float32: bf16 measured {speedup:.2f}x fp32 at width {width}, below {BF16_PAYS}x"
        return torch.float32, f"float32 on {device_type}"
    dtype = DTYPES[name]
    if dtype == torch.float16 and device_type != "cuda":
        raise ConfigError("float16 mixed precision needs a CUDA GPU; use bfloat16 or float32 here")
    if dtype != torch.float32 and device_type == "mps":
        raise ConfigError("mixed precision is not supported on mps; use dtype float32")
    return dtype, f"{name}, as asked"


def stream_seed(*parts: Any) -> int:
    """A 63-bit seed derived from `parts` (e.g. seed, stream name, rank, iteration)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def distributed_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) without it."""
    if int(os.environ.get("RANK", "-1")) < 0:
        return 0, 0, 1
    return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
