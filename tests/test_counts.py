"""lnlib.counts: adding, stacking, probabilities, merging shards, and the counts file."""

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import capture, counts, identify, store

TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "w9 w8", "w3 w3 w3 w1 w2", "w40 w41 w42 w43", "w7"]
PAIRS = [("w1 w2 w3", "w4 w5 w6 w7"), ("w9", "w8 w8"), ("w3 w3 w3 w1", "w2"), ("w40 w41", "w42 w43 w44 w45 w46")]


def test_add_stack_probs_and_identify_input():
    model, tok = tiny_model("llama"), word_tokenizer()
    by_lang = capture.count_by_language(model, tok, {"a": TEXTS[:2], "b": TEXTS[2:], "c": PAIRS}, progress=False)
    over_zero, n_tokens = counts.stack_counts(by_lang, langs=("a", "b", "c"))
    assert over_zero.shape == (2, 48, 3) and n_tokens.tolist() == [c.n_tokens for c in by_lang.values()]
    probs = counts.stacked_probs(by_lang)
    assert torch.allclose(probs[..., 1], by_lang["b"].probs())
    identify.check_probs(probs)  # a valid input for lnlib.identify
    both = by_lang["a"] + by_lang["b"]
    whole = capture.count_activations(model, tok, TEXTS, progress=False)
    assert torch.equal(both.over_zero, whole.over_zero) and both.n_tokens == whole.n_tokens
    with pytest.raises(ValueError, match="no counts for d"):
        counts.stack_counts(by_lang, langs=("a", "d"))


def test_merge_of_shards_equals_counting_everything():
    model, tok = tiny_model("gpt2"), word_tokenizer()
    whole = capture.count_by_language(model, tok, {"x": TEXTS, "y": PAIRS}, progress=False)
    halves = [capture.count_by_language(model, tok, {"x": TEXTS[i::2], "y": PAIRS[i::2]}, progress=False)
              for i in (0, 1)]
    merged = counts.merge(halves)
    for lang in whole:
        assert torch.equal(merged[lang].over_zero, whole[lang].over_zero)
        assert merged[lang].n_tokens == whole[lang].n_tokens and merged[lang].n_examples == whole[lang].n_examples
    with pytest.raises(ValueError, match="different languages"):
        counts.merge([halves[0], {"x": halves[1]["x"]}])


def test_probabilities_need_counted_tokens():
    with pytest.raises(ValueError, match="no counted token"):
        counts.activation_probs(torch.zeros(2, 3, 2, dtype=torch.int64), torch.tensor([5, 0]))


def test_save_and_load_counts(tmp_path):
    model, tok = tiny_model("gpt2"), word_tokenizer()
    by_lang = capture.count_by_language(model, tok, {"en": TEXTS, "de": PAIRS}, groups=2, progress=False)
    path = counts.save_counts(by_lang, tmp_path / "counts.safetensors", {"model": "tiny"})
    loaded, provenance = counts.load_counts(path)
    assert provenance == {"model": "tiny"} and list(loaded) == ["en", "de"]
    for lang in by_lang:
        assert torch.equal(loaded[lang].over_zero, by_lang[lang].over_zero)
        assert torch.equal(loaded[lang].groups, by_lang[lang].groups)
        assert loaded[lang].n_tokens == by_lang[lang].n_tokens
    with pytest.raises(FileExistsError):
        counts.save_counts(by_lang, path)
    with pytest.raises(store.StoreError, match="holds lnlib 'counts' data, not 'identification'"):
        counts.load_counts(path, kind="identification")
