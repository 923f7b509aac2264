"""Compute profiles: the CPU default is unchanged, detection follows the GPU's memory, sizes scale, and the
tables on the README and the instructor page are exactly what lnlib.profiles renders."""

from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lnlib import profiles

ROOT = Path(__file__).resolve().parents[1]


def test_profiles_keep_their_fields():
    names = {f.name for f in fields(profiles.Profile)}
    assert {"model", "aligned_model", "dtype", "scale", "generate", "protocol"} <= names
    assert list(profiles.PROFILES) == ["cpu", "t4", "a100"]
    for name, profile in profiles.PROFILES.items():
        assert profile.name == name and profile.scale >= 1
        assert profile.protocol in {"questions", "answers"}


def test_the_cpu_profile_is_the_embedded_default():
    cpu = profiles.get_profile("cpu")
    assert cpu.model is None and cpu.aligned_model is None
    assert cpu.dtype == torch.float32 and cpu.scale == 1 and not cpu.generate
    assert cpu.protocol == "questions"
    assert cpu.scaled(40, most=250) == 40


def _fake_gpu(monkeypatch, gigabytes):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gigabytes is not None)
    props = SimpleNamespace(total_memory=(gigabytes or 0) * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)


@pytest.mark.parametrize(("gigabytes", "expected"), [(None, "cpu"), (15, "t4"), (22, "t4"), (40, "a100"),
                                                     (80, "a100")])
def test_auto_follows_the_gpu_memory(monkeypatch, gigabytes, expected):
    _fake_gpu(monkeypatch, gigabytes)
    assert profiles.detect_profile() == expected
    assert profiles.get_profile("auto").name == expected
    assert profiles.get_profile().name == expected


def test_a_named_profile_ignores_the_hardware(monkeypatch):
    _fake_gpu(monkeypatch, 80)
    assert profiles.get_profile("cpu").model is None


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match="unknown profile 'h100'; choose one of auto, cpu, t4, a100"):
        profiles.get_profile("h100")


def test_scaled_multiplies_and_caps():
    t4, a100 = profiles.get_profile("t4"), profiles.get_profile("a100")
    assert t4.scaled(40) == 40 * t4.scale
    assert t4.scaled(40, most=250) == 160 and a100.scaled(40, most=250) == 250
    assert a100.scaled(300, most=250) == 300  # a cap never shrinks a size below the CPU's
    with pytest.raises(ValueError, match="non-negative"):
        t4.scaled(-1)


def test_describe_has_one_row_per_profile():
    table = profiles.describe()
    assert list(table.index) == list(profiles.PROFILES)
    assert table.loc["a100", "model"] == "`kevinpro/MistralMathOctopus-7B`"
    assert table.loc["cpu", "dtype"] == "float32" and table.loc["t4", "sample sizes"] == "× 4"
    assert "Gemma 3 270M" in table.loc["cpu", "model"]


def test_gpu_minutes_name_existing_chapters_and_both_gpu_profiles():
    chapters = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    for chapter, minutes in profiles.GPU_MINUTES.items():
        assert chapter in chapters, f"GPU_MINUTES names {chapter}, which is not a notebook"
        assert set(minutes) == {"t4", "a100"}
    assert profiles.minutes_table().count("\n") == len(profiles.GPU_MINUTES) + 1


@pytest.mark.parametrize("page", ["README.md", "book/intro.md", "book/instructors.md"])
def test_pages_show_the_profiles_as_lnlib_defines_them(page):
    text = (ROOT / page).read_text()
    table = profiles.markdown_table()
    assert table in text, (f"{page}: the profile table differs from lnlib.profiles; paste the output of "
                           "`python -c 'from lnlib import profiles; print(profiles.markdown_table())'`")


def test_instructor_page_shows_the_gpu_minutes():
    text = (ROOT / "book/instructors.md").read_text()
    assert profiles.minutes_table() in text, ("book/instructors.md: paste the output of "
                                              "`python -c 'from lnlib import profiles; "
                                              "print(profiles.minutes_table())'`")
    # the CPU minutes and tokens are measured at build time: tools/build_book.py writes book/generated/compute.md
    assert "```{include} generated/compute.md" in text


def test_instructor_page_shows_every_chapters_answer_key():
    text = (ROOT / "book/instructors.md").read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):  # written by tools/answer_key.py in make book
        assert f"```{{include}} generated/answers/{path.stem}.md" in text, f"no answer key for {path.stem}"
