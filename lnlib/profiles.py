"""Compute profiles: which model and sizes a chapter uses on a laptop CPU, a free Colab GPU or an A100.

A chapter's parameter cell sets ``PROFILE = "auto"``; `get_profile` turns that into a `Profile`, so one
parameter switches a chapter between the CPU default and the GPU settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Profile:
    """name; hardware it is meant for; model: model id (None = the embedded Gemma 3 270M);
    aligned_model: an aligned counterpart when one is published (None: the book aligns the model itself);
    dtype: weights' dtype; scale: multiplier a chapter applies to its sample sizes (CPU = 1);
    generate: whether chapters generate long answers (accuracy under deactivation)."""

    name: str
    hardware: str
    model: str | None
    aligned_model: str | None
    dtype: torch.dtype
    scale: int
    generate: bool


PROFILES: dict[str, Profile] = {
    "cpu": Profile("cpu", "a laptop or CI machine: 2 CPU cores, 8 GB of memory", None, None, torch.float32, 1, False),
    "t4": Profile("t4", "a free Colab T4 GPU (16 GB)", "Qwen/Qwen2.5-1.5B", None, torch.float16, 4, True),
    "a100": Profile("a100", "an A100 (40 or 80 GB)", "kevinpro/MistralMathOctopus-7B",
                    "kevinpro/MistralMathOctopus-MAPO-DPO-7B", torch.bfloat16, 10, True),
}


def detect_profile() -> str:
    """"cpu" without a GPU; "a100" on a GPU with at least 35 GB of memory; "t4" on a smaller one."""
    if not torch.cuda.is_available():
        return "cpu"
    memory_gb = torch.cuda.get_device_properties(0).total_memory / 2**30
    return "a100" if memory_gb >= 35 else "t4"


def get_profile(name: str = "auto") -> Profile:
    """The profile called `name` ("cpu", "t4", "a100"), or the one that fits this machine for "auto"."""
    if name == "auto":
        name = detect_profile()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of auto, {', '.join(PROFILES)}")
    return PROFILES[name]
