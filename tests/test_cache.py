"""The count cache: reused when nothing changed, never when anything the counts depend on changed, bypassed while
the model is edited, and recomputed when an entry is damaged."""

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import cache, capture, intervene, models

TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "w9 w8", "w3 w3 w3 w1 w2"]
PAIRS = [("w1 w2 w3", "w4 w5 w6 w7"), ("w9", "w8 w8")]
EXAMPLES = {"en": TEXTS, "de": PAIRS}


@pytest.fixture
def cached(monkeypatch, tmp_path):
    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path))
    return tmp_path / "counts"


def _entries(folder):
    return sorted(folder.glob("*.safetensors"))


def test_counts_are_reused(cached, monkeypatch):
    model, tok = tiny_model("llama"), word_tokenizer()
    first = cache.cached_counts(model, tok, EXAMPLES, progress=False)
    assert len(_entries(cached)) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached counts should have been read")

    monkeypatch.setattr(cache, "count_activations", must_not_run)
    again = cache.cached_counts(model, tok, EXAMPLES)
    for lang in EXAMPLES:
        assert torch.equal(again[lang].over_zero, first[lang].over_zero)
        assert again[lang].n_tokens == first[lang].n_tokens


def _edit(name):
    def change(model, tok):
        with torch.no_grad():
            dict(model.named_parameters())[name].view(-1)[7] += 0.5
        return model, tok
    return change


def _buffer(model, tok):
    name, buf = next((n, b) for n, b in model.named_buffers() if b.is_floating_point())
    buf.mul_(1.001)
    return model, tok


def _tokenizer(model, tok):
    tok.add_tokens(["w999"])
    return model, tok


CHANGES = {
    "embedding": _edit("model.embed_tokens.weight"),
    "attention": _edit("model.layers.0.self_attn.q_proj.weight"),
    "an MLP weight no sample would see": _edit("model.layers.1.mlp.up_proj.weight"),
    "final norm": _edit("model.norm.weight"),
    "a buffer": _buffer,
    "the tokenizer": _tokenizer,
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_any_change_the_counts_depend_on_gives_a_new_key(change):
    model, tok = tiny_model("llama"), word_tokenizer()
    before = cache.counts_key(model, tok, EXAMPLES)
    model, tok = CHANGES[change](model, tok)
    assert cache.counts_key(model, tok, EXAMPLES) != before


def test_settings_and_examples_are_part_of_the_key():
    model, tok = tiny_model("llama"), word_tokenizer()
    key = cache.counts_key(model, tok, EXAMPLES)
    assert key == cache.counts_key(tiny_model("llama"), word_tokenizer(), EXAMPLES)  # same content, same key
    assert key != cache.counts_key(model, tok, {"en": TEXTS})
    assert key != cache.counts_key(model, tok, {"de": PAIRS, "en": TEXTS})  # order is the languages' order
    assert key != cache.counts_key(model, tok, EXAMPLES, max_length=4)
    assert key != cache.counts_key(model, tok, EXAMPLES, groups=2)


def test_counting_inside_a_deactivation_never_touches_the_cache(cached):
    model, tok = tiny_model("llama"), word_tokenizer()
    off = [torch.arange(24), torch.arange(24)]
    with intervene.deactivate(model, off), pytest.warns(cache.CacheWarning, match="neither read from nor written"):
        ablated = cache.cached_counts(model, tok, EXAMPLES, progress=False)
    assert not _entries(cached)
    intact = cache.cached_counts(model, tok, EXAMPLES, progress=False)
    fresh = capture.count_by_language(model, tok, EXAMPLES, progress=False)
    assert torch.equal(intact["en"].over_zero, fresh["en"].over_zero)
    assert not torch.equal(intact["en"].over_zero, ablated["en"].over_zero)


def test_a_foreign_hook_bypasses_the_cache(cached):
    model, tok = tiny_model("llama"), word_tokenizer()
    handle = models.mlp_activations(model)[0].register_forward_hook(lambda m, a, out: out * 0)
    try:
        with pytest.warns(cache.CacheWarning):
            cache.cached_counts(model, tok, EXAMPLES, progress=False)
    finally:
        handle.remove()
    assert not _entries(cached)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "edit"])
def test_a_damaged_entry_is_reported_and_recomputed(cached, damage):
    model, tok = tiny_model("gpt2"), word_tokenizer()
    first = cache.cached_counts(model, tok, EXAMPLES, progress=False)
    (path,) = _entries(cached)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    else:  # flip a byte of the tensor data: the digest in the header no longer matches
        path.write_bytes(raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:])
    with pytest.warns(cache.CacheWarning, match=str(path.name)):
        again = cache.cached_counts(model, tok, EXAMPLES, progress=False)
    assert torch.equal(again["de"].over_zero, first["de"].over_zero)
    assert cache.cached_counts(model, tok, EXAMPLES)["de"].n_tokens == first["de"].n_tokens  # rewritten whole


def test_scalar_buffers_and_parameters_are_hashed():
    model, tok = tiny_model("llama"), word_tokenizer()
    model.register_buffer("scale", torch.tensor(1.5))
    before = cache.counts_key(model, tok, EXAMPLES)
    model.scale.fill_(2.0)
    assert cache.counts_key(model, tok, EXAMPLES) != before
