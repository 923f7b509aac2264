"""The quick start of book/own_model.md runs as written: a tiny model saved to a folder, three invented languages."""

import random
import re
from pathlib import Path

import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import identify

PAGE = Path(__file__).resolve().parents[1] / "book" / "own_model.md"


def _texts(seed: int, n: int) -> dict[str, list[str]]:
    """Per language, `n` lines of words drawn mostly from the language's own tenth of the vocabulary."""
    rng = random.Random(seed)
    return {lang: [" ".join(f"w{rng.randrange(10 * k, 10 * k + 10) if rng.random() < 0.8 else rng.randrange(100)}"
                            for _ in range(12)) for _ in range(n)]
            for k, lang in enumerate(("is", "fo", "kl"))}


def test_quick_start_runs_as_written(tmp_path, monkeypatch):
    block = re.search(r"## Quick start.*?```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    folder = tmp_path / "model"
    tiny_model("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path / "cache"))
    scope = {"MODEL_FOLDER": str(folder), "MY_TEXTS": _texts(0, 20), "MY_HELD_OUT": _texts(1, 6)}
    exec(compile(block.replace('dtype="bfloat16"', 'dtype="float32"'), str(PAGE), "exec"), scope)
    ident, provenance = identify.load(tmp_path / "my_model_neurons.safetensors", expect_langs=("is", "fo", "kl"))
    assert ident.langs == ("is", "fo", "kl") and provenance["data"] == "my-texts"
    assert provenance["model"] == str(folder) and provenance["model_type"] == "llama"
    assert list(scope["grid"].change().columns) == ["is", "fo", "kl"]
    assert [t.get_text() for t in scope["fig"].axes[0].get_xticklabels()] == ["is", "fo", "kl"]
    assert torch.equal(ident.selected, scope["study"].ident.selected)
