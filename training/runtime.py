"""Where a run computes: the device, the autocast dtype, the processes of a data-parallel run,
and the seeds of its random streams."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from nanolens.models import ConfigError

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


def resolve_dtype(name: str, device_type: str) -> torch.dtype:
    """The autocast dtype: `auto` is bfloat16 (or float16 without bf16 support) on CUDA and
    float32 elsewhere. float16 needs CUDA; on CPU only bfloat16 autocast is offered."""
    if name == "auto":
        if device_type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtype = DTYPES[name]
    if dtype == torch.float16 and device_type != "cuda":
        raise ConfigError("float16 mixed precision needs a CUDA GPU; use bfloat16 or float32 here")
    if dtype != torch.float32 and device_type == "mps":
        raise ConfigError("mixed precision is not supported on mps; use dtype float32")
    return dtype



def stream_seed(*parts: Any) -> int:
    """A 63-bit seed derived from `parts` (e.g. seed, stream name, rank, iteration)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def distributed_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) without it."""
    if int(os.environ.get("RANK", "-1")) < 0:
        return 0, 0, 1
    return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
