"""Hostile input: every public entry point fed what a user might get wrong. Each case asserts a clear error (matched
on the words that name the problem and the fix) or the right result with a warning; where a model is involved, that
no hook is left on it; where files are involved, that no file the user had is changed and no `.partial` file is left.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import (
    align,
    cache,
    capture,
    counts,
    data,
    evaluate,
    generation,
    grids,
    hooks,
    intervene,
    lens,
    models,
    store,
)
from lnlib import identify as idf
from lnlib.batching import SkippedWarning
from lnlib.data import Problem

TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "w9 w8", "w3 w3 w3 w1 w2"]
PAIRS = [("w1 w2 w3", " w10 w11 w12"), ("w4 w5", " w13 w14"), ("w6 w7 w8 w9", " w15"), ("w2 w9", " w16 w17")]
IDS = torch.tensor([[1, 5, 6, 7, 8]])
PROBS = torch.rand(2, 12, 3, generator=torch.Generator().manual_seed(0))
LANGS3 = ("a", "b", "c")


# ----------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture
def llama():
    return tiny_model("llama"), word_tokenizer()


def no_hooks(model) -> None:
    assert hooks.hook_count(model) == 0 and not hooks.is_edited(model)


def snapshot(folder) -> dict[str, bytes | None]:
    """Every entry of a folder tree: its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def no_partials(folder) -> None:
    assert not [p for p in folder.rglob("*") if ".partial" in p.name]


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def rewrite_lnlib_file(path, record=None, tensor=None) -> None:
    """Edit a saved lnlib file as a user with a hex editor would: change its header record (`record(dict)`) or the
    bytes of one tensor (`tensor = (name, fn(tensor) -> tensor)`), without updating the digest."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header, body = json.loads(raw[8:8 + size]), bytearray(raw[8 + size:])
    if record is not None:
        fields = json.loads(header["__metadata__"][store.KEY])
        record(fields)
        header["__metadata__"][store.KEY] = json.dumps(fields)
    if tensor is not None:
        name, fn = tensor
        start, end = header[name]["data_offsets"]
        dtype = {"I64": torch.int64, "BOOL": torch.bool}[header[name]["dtype"]]
        old = torch.frombuffer(bytearray(body[start:end]), dtype=dtype).clone()
        body[start:end] = fn(old).contiguous().view(torch.uint8).numpy().tobytes()
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(body))


def toy_ident():
    return idf.identify(PROBS, 0.1, rate=0.2, bar=0.8, langs=LANGS3)


def toy_counts(model, tok):
    return capture.count_by_language(model, tok, {"en": TEXTS, "de": PAIRS}, progress=False)


# ----------------------------------------------------------------------------------------------
# Data


def test_unknown_language_names_the_known_ones(data_dir):
    with pytest.raises(ValueError, match="language 'xx' is not in MGSM; known: en, ru"):
        data.problems("mgsm", "xx")


def test_telugu_is_mgsm_only(data_dir):
    with pytest.raises(ValueError, match="'te' is not in MSVAMP"):
        data.problems("msvamp", "te")


def test_unknown_dataset_names_the_known_ones_and_how_to_add_one():
    with pytest.raises(ValueError, match="unknown dataset 'gsm8k'; known: mgsm, msvamp .*register_dataset"):
        data.problems("gsm8k", "en")


@pytest.mark.parametrize("items", [range(240, 260), range(-1, 2), [0, 250]], ids=["past end", "negative", "list"])
def test_items_beyond_the_dataset_are_refused(data_dir, items):
    with pytest.raises(ValueError, match="mgsm has 250 problems per language; items .* reach beyond them"):
        data.problems("mgsm", "en", items)


@pytest.mark.parametrize("items", [5, [0.5, 1.0], "abc"], ids=["int", "floats", "str"])
def test_items_that_are_not_indices_are_refused(data_dir, items):
    with pytest.raises(ValueError, match="items must be a range or list of whole-number problem indices"):
        data.problems("mgsm", "en", items)


@pytest.mark.parametrize("n", [2.5, True, -1, "3"])
def test_a_bad_number_of_problems_is_refused(data_dir, n):
    with pytest.raises(ValueError, match="n must be a whole number >= 0 or None"):
        data.load_mgsm("en", n=n)


def test_unknown_data_file_is_refused():
    with pytest.raises(data.DataError, match="'../etc/passwd' is not a known data file"):
        data.data_file("../etc/passwd")


def test_a_tampered_data_file_is_refused_and_left_as_it_is(data_dir, isolated, monkeypatch):
    root = isolated / "data"
    (root / "mgsm").mkdir(parents=True)
    path = root / "mgsm" / "mgsm_en.tsv"
    blob = bytearray((data_dir / "mgsm" / "mgsm_en.tsv").read_bytes())
    blob[100] ^= 1
    path.write_bytes(bytes(blob))
    before = snapshot(isolated)
    monkeypatch.setenv("LNLIB_DATA_DIR", str(root))
    with pytest.raises(data.DataError, match="mgsm_en.tsv does not match its SHA256.*Replace it with the upstream"):
        data.load_mgsm("en")
    assert snapshot(isolated) == before  # neither deleted, "repaired" nor cached


def test_offline_with_nothing_cached_names_the_file_and_the_way_out(isolated):
    with pytest.raises(data.DataError, match="'msvamp/test_Swahili.json' is not available offline.*Set "
                                             "LNLIB_DATA_DIR to a folder holding msvamp/test_Swahili.json"):
        data.load_msvamp("sw")
    no_partials(isolated)
    assert not list(isolated.rglob("*.json"))  # nothing was written in its place


# ----------------------------------------------------------------------------------------------
# Models


@pytest.mark.parametrize("dtype", ["float61", 16, torch.int8], ids=["typo", "int", "integer dtype"])
def test_bad_dtype_is_refused_before_loading(tmp_path, dtype):
    with pytest.raises(ValueError, match="dtype must be one of float32, float16, bfloat16"):
        models.load_model(tmp_path, dtype=dtype)


def test_cuda_without_a_gpu_says_to_use_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU is available here; use device='cpu'"):
        models.load_model(tmp_path, device="cuda")


def test_a_device_that_is_no_device_name(tmp_path):
    with pytest.raises(ValueError, match="'gpu0' is not a device name; use 'cpu', 'cuda'"):
        models.load_model(tmp_path, device="gpu0")


def test_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist; give a folder holding config.json"):
        models.load_model(tmp_path / "nowhere", device="cpu")


def test_a_file_given_as_the_model_folder(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder; give a folder holding config.json"):
        models.load_model(weights, device="cpu")
    assert weights.read_bytes() == b"x"


def test_a_folder_without_a_saved_model_explains_what_it_needs(tmp_path):
    with pytest.raises(OSError, match="(?s)could not load model.*must hold a model saved with save_pretrained"):
        models.load_model(tmp_path, device="cpu")
    assert not list(tmp_path.iterdir())


def test_an_unsupported_family_fails_before_its_weights_load(tmp_path):
    import transformers

    transformers.T5Config(vocab_size=32, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2).save_pretrained(
        tmp_path)
    with pytest.raises(models.UnsupportedArchitectureError, match="'t5' is not in .*register_architecture"):
        models.load_model(tmp_path, device="cpu")


def test_an_unsupported_model_object_is_refused_by_counting_and_keeps_no_hook():
    import transformers

    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=128, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2))
    with pytest.raises(models.UnsupportedArchitectureError, match="'t5' is not in .*register_architecture"):
        capture.count_activations(t5, word_tokenizer(), TEXTS, progress=False)
    assert hooks.hook_count(t5) == 0


def test_offline_a_hub_id_fails_fast_with_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("LNLIB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(OSError, match="offline .* loads only from the local hub cache: download it once online"):
        models.load_model("someone/some-model", device="cpu")
    assert time.perf_counter() - start < 10


# ----------------------------------------------------------------------------------------------
# Counting


@pytest.mark.parametrize("examples, message", [
    ("w1 w2", "not a single one: wrap it in a list"),
    (["w1", None], r"examples\[1\] is NoneType None; each entry must be a text"),
    (["w1", 3], r"examples\[1\] is int 3; each entry must be a text"),
    ([("w1", "w2", "w3")], r"examples\[0\] is tuple"),
    ([], "examples is empty: give at least one text"),
    (None, "must be a list of texts .* got NoneType"),
    ({"en": ["w1 w2"]}, "not a mapping of 1 entries .*count_by_language"),
], ids=["single string", "None entry", "int entry", "3-tuple", "empty", "None", "dict"])
def test_bad_examples_are_refused(llama, examples, message):
    model, tok = llama
    with pytest.raises(ValueError, match=message):
        capture.count_activations(model, tok, examples, progress=False)
    no_hooks(model)


@pytest.mark.parametrize("option, value", [("batch_size", 0), ("batch_size", 2.5), ("batch_size", True),
                                           ("max_length", 0), ("groups", 2.5), ("groups", -1)])
def test_bad_sizes_are_refused(llama, option, value):
    model, tok = llama
    with pytest.raises(ValueError, match=f"{option} must be a whole number of at least 1, got {value!r}"):
        capture.count_activations(model, tok, TEXTS, progress=False, **{option: value})
    no_hooks(model)


def test_examples_with_no_counted_token_are_left_out_with_a_count(llama):
    model, tok = llama
    good = [("w1 w2", "w3 w4")]
    with pytest.warns(SkippedWarning, match="2 of 3 examples have no token to count"):
        found = capture.count_activations(model, tok, good + [("w5", ""), ("w6 w7 w8 w9", "w10")], max_length=4,
                                          progress=False)
    alone = capture.count_activations(model, tok, good, progress=False)
    assert found.n_empty == 2 and found.n_examples == 3 and found.n_tokens == alone.n_tokens == 2
    assert torch.equal(found.over_zero, alone.over_zero)
    no_hooks(model)


def test_all_examples_empty_is_an_error(llama):
    model, tok = llama
    with pytest.raises(ValueError, match="no example has a token to count; check the responses and max_length"), \
            pytest.warns(SkippedWarning, match="2 of 2"):
        capture.count_activations(model, tok, [("w1", ""), ("w2", "")], progress=False)
    no_hooks(model)


def test_a_model_left_in_training_mode_counts_as_in_eval_and_keeps_its_mode(llama):
    model, tok = llama
    expected = capture.count_activations(model, tok, TEXTS, progress=False)
    model.config.attention_dropout = 0.9
    for layer in models.blocks(model):
        layer.self_attn.attention_dropout = 0.9
    model.train()
    found = capture.count_activations(model, tok, TEXTS, progress=False)
    assert model.training and torch.equal(found.over_zero, expected.over_zero)
    no_hooks(model)


def test_a_tokenizer_of_another_model_is_named_not_an_index_error(llama):
    model, _ = llama
    import transformers
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel

    backend = Tokenizer(WordLevel({f"v{i}": i for i in range(300)}, unk_token="v0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    other = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="v0", unk_token="v0")
    for call in (lambda: capture.count_activations(model, other, ["v1 v250"], progress=False),
                 lambda: evaluate.text_nll(model, other, ["v1 v250"], progress=False)):
        with pytest.raises(ValueError, match="token id 250 but the model's input embedding has 128 rows: this "
                                             "tokenizer does not belong to this model"):
            call()
    no_hooks(model)


def test_count_by_language_needs_a_mapping(llama):
    model, tok = llama
    with pytest.raises(ValueError, match="examples_by_lang must map each language code to its examples"):
        capture.count_by_language(model, tok, [TEXTS], progress=False)
    no_hooks(model)


# ----------------------------------------------------------------------------------------------
# Identification


@pytest.mark.parametrize("lam", [math.nan, math.inf, "0.1", None, True])
def test_lambda_must_be_a_finite_number(lam):
    with pytest.raises(ValueError, match="λ must be a finite number"):
        idf.identify(PROBS, lam, rate=0.2, langs=LANGS3)


@pytest.mark.parametrize("name, value", [("rate", 0), ("rate", 1), ("rate", -0.1), ("rate", 1.5), ("rate", math.nan),
                                         ("rate", "0.01"), ("rate", None), ("bar", 1.0), ("bar", 0), ("bar", "0.95")])
def test_rate_and_bar_must_lie_strictly_between_0_and_1(name, value):
    with pytest.raises(ValueError, match=f"{name} must lie strictly between 0 and 1"):
        idf.identify(PROBS, 0.1, langs=LANGS3, **{"rate": 0.2, name: value})


@pytest.mark.parametrize("probs, langs, message", [
    (torch.zeros(2, 12, 3), LANGS3, "every probability is 0: no neuron was ever active"),
    (torch.full((2, 12, 3), 0.3), LANGS3, "same probability in every language"),
    (PROBS[0], LANGS3, "rank 3 .*stack per-language"),
    (PROBS[..., :1], ("a",), "1 language.* needs at least 2"),
    (PROBS, ("a", "b"), "langs must hold 3 distinct codes"),
    (PROBS, ("a", "a", "b"), "langs must hold 3 distinct codes"),
    (PROBS, ("en", 3, None), r"langs must hold 3 distinct codes \(strings"),
    (PROBS, None, "probs has 3 languages; pass langs="),
    (PROBS * 100, LANGS3, "not counts or logits"),
    (PROBS.masked_fill(PROBS > 0.9, math.nan), LANGS3, "NaN value"),
    ((PROBS * 100).long(), LANGS3, "floating-point torch.Tensor"),
], ids=["all zero", "constant", "rank 2", "one language", "too few langs", "duplicate langs", "non-string langs",
        "no langs", "counts", "NaN", "integer"])
def test_bad_probabilities_and_languages_are_refused(probs, langs, message):
    with pytest.raises(ValueError, match=message):
        idf.identify(probs, 0.1, rate=0.2, langs=langs)


EDITS = {
    "languages": dict(record=lambda r: r.update(langs=r["langs"][::-1])),
    "rate": dict(record=lambda r: r.update(rate=0.5)),
    "indices": dict(tensor=("selected", lambda t: t.flip(0))),
    "assignments": dict(tensor=("high", lambda t: ~t)),
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_identification_file_is_refused(tmp_path, edit):
    path = idf.save(toy_ident(), tmp_path / "ident.safetensors")
    rewrite_lnlib_file(path, **EDITS[edit])
    edited = path.read_bytes()
    with pytest.raises(store.StoreError, match=f"{path} was changed after lnlib wrote it.*write it again"):
        idf.load(path)
    assert path.read_bytes() == edited and sorted(os.listdir(tmp_path)) == ["ident.safetensors"]


def test_an_identification_of_other_languages_or_model_is_refused(tmp_path):
    path = idf.save(toy_ident(), tmp_path / "ident.safetensors")
    with pytest.raises(ValueError, match=r"holds languages \('a', 'b', 'c'\), expected \('a', 'c', 'b'\)"):
        idf.load(path, expect_langs=("a", "c", "b"))
    with pytest.raises(ValueError, match="belongs to a different model"):
        idf.load(path, expect_shape=(2, 13))


# ----------------------------------------------------------------------------------------------
# Saving and loading


def _savers(model, tok):
    ident, found = toy_ident(), toy_counts(model, tok)
    return {
        "counts": (lambda path, **kw: counts.save_counts(found, path, **kw), lambda path: counts.load_counts(path)),
        "identification": (lambda path, **kw: idf.save(ident, path, **kw), lambda path: idf.load(path)),
        "aligned": (lambda path, **kw: align.save_aligned(model, path, {"note": "x"}, **kw),
                    lambda path: align.read_aligned_record(path)),
    }


KINDS = ["counts", "identification", "aligned"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_existing_file_is_not_overwritten_unless_asked(llama, tmp_path, kind):
    save, load = _savers(*llama)[kind]
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"the user's own file")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True to replace it"):
        save(path)
    assert path.read_bytes() == b"the user's own file"
    save(path, overwrite=True)
    load(path)
    no_partials(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["x.safetensors"]


def _half_written(exc):
    import safetensors.torch

    real = safetensors.torch.save_file

    def write_half_then_fail(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as fh:
            fh.truncate(os.path.getsize(filename) // 2)
        raise exc

    return write_half_then_fail


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("failure", ["disk full", "interrupt", "rename"])
def test_a_failure_in_the_middle_of_overwriting_keeps_the_old_file(llama, tmp_path, monkeypatch, kind, failure):
    import safetensors.torch

    save, load = _savers(*llama)[kind]
    path = save(tmp_path / "x.safetensors")
    old = path.read_bytes()
    if failure == "rename":
        def no_rename(*args):
            raise OSError("rename failed")
        monkeypatch.setattr(os, "replace", no_rename)
        expected = OSError
    else:
        expected = OSError if failure == "disk full" else KeyboardInterrupt
        monkeypatch.setattr(safetensors.torch, "save_file", _half_written(expected("disk full")))
    with pytest.raises(expected):
        save(path, overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == old and sorted(os.listdir(tmp_path)) == ["x.safetensors"]
    load(path)  # still whole


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_given_as_the_file_path(llama, tmp_path, kind):
    save, _ = _savers(*llama)[kind]
    (tmp_path / "mine.txt").write_text("keep me")
    before = snapshot(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a folder; give a file path such as .*result.safetensors"):
        save(tmp_path)
    assert snapshot(tmp_path) == before


def test_a_folder_that_cannot_be_written_gives_a_clear_error(llama, tmp_path, monkeypatch):
    save, load = _savers(*llama)["counts"]
    path = save(tmp_path / "x.safetensors")
    old = path.read_bytes()

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(OSError, match="cannot write into .*Permission denied.*choose a writable folder"):
        save(path, overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == old and sorted(os.listdir(tmp_path)) == ["x.safetensors"]


def test_a_path_under_a_file_gives_a_clear_error(llama, tmp_path):
    save, _ = _savers(*llama)["identification"]
    (tmp_path / "notes").write_text("a file, not a folder")
    with pytest.raises(OSError, match="cannot write into .*notes.*choose a writable folder"):
        save(tmp_path / "notes" / "x.safetensors")
    assert (tmp_path / "notes").read_text() == "a file, not a folder"


@pytest.mark.parametrize("damage, message", [
    ("truncate", "is damaged or not a safetensors file"),
    ("garbage", "is damaged or not a safetensors file"),
    ("foreign", "is not an lnlib file"),
    ("other kind", "holds lnlib 'identification' data, not 'counts'"),
    ("old version", "has counts format version 1; this lnlib reads version 2: write it again"),
    ("folder", "does not exist or is not a file"),
])
def test_a_counts_file_that_cannot_be_used_is_a_store_error_naming_it(llama, tmp_path, damage, message):
    from safetensors.torch import save_file

    path = counts.save_counts(toy_counts(*llama), tmp_path / "counts.safetensors")
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a safetensors file at all")
    elif damage == "foreign":
        path.unlink()
        save_file({"weight": torch.zeros(3)}, str(path))
    elif damage == "other kind":
        path.unlink()
        idf.save(toy_ident(), path)
    elif damage == "old version":
        rewrite_lnlib_file(path, record=lambda r: r.update(version=1))
    else:
        path.unlink()
        path.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(store.StoreError, match=f"{path}.* {message}" if damage != "folder" else message) as err:
        counts.load_counts(path)
    assert str(path) in str(err.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["counts", "identification"])
def test_provenance_that_is_not_json_writes_nothing(llama, tmp_path, kind):
    model, tok = llama
    bad = {"tokens": torch.tensor(3)}
    with pytest.raises(ValueError, match="must hold JSON values only .*Tensor is not JSON serializable.*tolist"):
        if kind == "counts":
            counts.save_counts(toy_counts(model, tok), tmp_path / "x.safetensors", provenance=bad)
        else:
            idf.save(toy_ident(), tmp_path / "x.safetensors", provenance=bad)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", [[1, 2], {}, {"en": "not counts"}], ids=["list", "empty", "wrong values"])
def test_save_counts_needs_counts_by_language(tmp_path, value):
    with pytest.raises(ValueError, match="counts must map each language code to its ActivationCounts"):
        counts.save_counts(value, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# The count cache


@pytest.fixture
def cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


EXAMPLES = {"en": TEXTS, "de": PAIRS}


@pytest.mark.parametrize("damage", ["truncate", "a folder in its place"])
def test_a_damaged_cache_entry_is_reported_and_recomputed(llama, cache_root, damage):
    model, tok = llama
    fresh = capture.count_by_language(model, tok, EXAMPLES, progress=False)
    path = cache.entry_path(cache.counts_key(model, tok, EXAMPLES))
    if damage == "truncate":
        cache.cached_counts(model, tok, EXAMPLES, progress=False)
        path.write_bytes(path.read_bytes()[:100])
    else:
        path.mkdir(parents=True)
    with pytest.warns(cache.CacheWarning) as caught:
        again = cache.cached_counts(model, tok, EXAMPLES, progress=False)
    assert f"cached counts {path} could not be read" in str(caught[0].message)
    assert all(torch.equal(again[k].over_zero, fresh[k].over_zero) for k in EXAMPLES)
    if damage == "truncate":  # rewritten whole
        assert torch.equal(counts.load_counts(path)[0]["de"].over_zero, fresh["de"].over_zero)
    else:  # the folder is not the cache's to remove: counted, not cached, and said so
        assert any("could not be cached" in str(w.message) for w in caught) and path.is_dir()
    no_partials(cache_root)
    no_hooks(model)


def test_counting_under_deactivation_bypasses_the_cache(llama, cache_root):
    model, tok = llama
    with intervene.deactivate(model, [torch.arange(24), torch.arange(24)]), \
            pytest.warns(cache.CacheWarning, match="neither read from nor written to the cache"):
        ablated = cache.cached_counts(model, tok, EXAMPLES, progress=False)
    assert not cache_root.exists() or not list(cache_root.rglob("*.safetensors"))
    intact = cache.cached_counts(model, tok, EXAMPLES, progress=False)
    assert not torch.equal(intact["en"].over_zero, ablated["en"].over_zero)
    no_hooks(model)


def test_a_cache_folder_that_cannot_be_written_still_returns_the_counts(llama, tmp_path, monkeypatch):
    model, tok = llama
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.warns(cache.CacheWarning, match="could not be cached .*cannot write into"):
        found = cache.cached_counts(model, tok, EXAMPLES, progress=False)
    assert torch.equal(found["en"].over_zero, capture.count_by_language(model, tok, EXAMPLES, progress=False)[
        "en"].over_zero)
    assert (tmp_path / "cache").read_text() == "a file where the cache folder should be"
    no_hooks(model)


def test_cached_counts_need_a_mapping(llama, cache_root):
    model, tok = llama
    with pytest.raises(ValueError, match="examples_by_lang must map each language code"):
        cache.cached_counts(model, tok, TEXTS, progress=False)
    no_hooks(model)


# ----------------------------------------------------------------------------------------------
# Deactivation


EMPTY = torch.zeros(0, dtype=torch.int64)
BAD_SETS = {
    "None inside": ([torch.tensor([1]), None], "layer 1: got None; give an empty index list"),
    "bool mask": ([torch.zeros(48, dtype=torch.bool), EMPTY], "layer 0: got a boolean mask; pass neuron indices"),
    "float indices": ([torch.tensor([1.0, 2.0]), EMPTY], "layer 0: neuron indices must be integers, got dtype "
                                                         "torch.float32"),
    "2-D indices": ([torch.tensor([[1, 2]]), EMPTY], r"layer 0: neuron indices must be 1-D, got shape \(1, 2\)"),
    "out of range": ([torch.tensor([3, 48]), EMPTY], r"layer 0: neuron indices must lie in \[0, 48\)"),
    "negative": ([EMPTY, torch.tensor([-1])], r"layer 1: neuron indices must lie in \[0, 48\)"),
    "wrong number of layers": ([torch.tensor([1])], "1 layer entries but the model has 2 layers"),
    "a tensor": (torch.tensor([[1, 2], [3, 4]]), "one 1-D index tensor per layer .*not Tensor"),
    "a flat list": ([3, 5], r"layer 0: neuron indices must be 1-D, got shape \(\)"),
    "a dict": ({0: [1]}, "neurons must be a list .*not dict"),
    "strings": ([["a"], []], "layer 0: neuron indices must be a list or tensor of integers"),
}


@pytest.mark.parametrize("case", BAD_SETS)
def test_a_bad_neuron_set_is_refused_and_changes_nothing(llama, case):
    model, _ = llama
    neurons, message = BAD_SETS[case]
    before = logits(model)
    with pytest.raises(ValueError, match=message), intervene.deactivate(model, neurons):
        pass
    no_hooks(model)
    assert torch.equal(logits(model), before)


def test_a_steering_vector_of_the_wrong_size_leaves_no_hook(llama):
    model, _ = llama
    before = logits(model)
    with pytest.raises(ValueError, match="direction has 5 entries, the residual stream 32"), \
            intervene.steer(model, 0, torch.ones(5), 1.0):
        logits(model)
    with pytest.raises(ValueError, match=r"layer must be an integer in \[0, 2\)"), \
            intervene.steer(model, 99, torch.ones(32), 1.0):
        pass
    no_hooks(model)
    assert torch.equal(logits(model), before)


# ----------------------------------------------------------------------------------------------
# Evaluation


SINGLE_TEXT_CALLS = {
    "text_nll": lambda m, t: evaluate.text_nll(m, t, "w1 w2 w3", progress=False),
    "perplexity": lambda m, t: evaluate.perplexity(m, t, "w1 w2 w3", progress=False),
    "mean_hidden_states": lambda m, t: evaluate.mean_hidden_states(m, t, "w1 w2 w3", layer=0),
    "logit_lens": lambda m, t: lens.logit_lens(m, t, "w1 w2 w3"),
    "generate_responses": lambda m, t: generation.generate_responses(m, t, "w1 w2 w3", max_new_tokens=2),
}


@pytest.mark.parametrize("call", SINGLE_TEXT_CALLS)
def test_a_single_string_is_not_read_as_a_list_of_texts(llama, call):
    model, tok = llama
    with pytest.raises(ValueError, match="not a single (one|text): wrap it in a list"):
        SINGLE_TEXT_CALLS[call](model, tok)
    no_hooks(model)


@pytest.mark.parametrize("extra", ["w5", ("w1 w2", ""), ("w1 w2 w3 w4 w5 w6", "w7")],
                         ids=["one token", "empty response", "cut off by max_length"])
def test_texts_with_nothing_to_score_are_left_out_never_perplexity_one(llama, extra):
    model, tok = llama
    clean = evaluate.perplexity(model, tok, TEXTS, max_length=6, progress=False)
    with pytest.warns(SkippedWarning, match="1 of 4 texts have no token to score and were left out"):
        assert evaluate.perplexity(model, tok, TEXTS + [extra], max_length=6, progress=False) == pytest.approx(clean)
    with pytest.raises(ValueError, match="no text has a token to score .*raise max_length"):
        evaluate.perplexity(model, tok, [extra], max_length=6, progress=False)
    assert clean > 1
    no_hooks(model)


EMPTY_TEXT_CALLS = {
    "mean_hidden_states": lambda m, t: evaluate.mean_hidden_states(m, t, ["", "w1 w2"], layer=0),
    "logit_lens": lambda m, t: lens.logit_lens(m, t, ["", "w1 w2"]),
    "logit_lens all": lambda m, t: lens.logit_lens(m, t, [""], position="all"),
    "generate_responses": lambda m, t: generation.generate_responses(m, t, [""], max_new_tokens=2, progress=False),
}


@pytest.mark.parametrize("call", EMPTY_TEXT_CALLS)
def test_an_empty_text_is_named_not_averaged_into_nan_or_decoded_as_padding(llama, call):
    model, tok = llama
    with pytest.raises(ValueError, match=r"(texts|prompts)\[0\] has no token .*drop the empty ones"):
        EMPTY_TEXT_CALLS[call](model, tok)
    no_hooks(model)


@pytest.mark.parametrize("layer", [99, -3, 1.0, "0"])
def test_a_layer_the_model_lacks(llama, layer):
    model, tok = llama
    with pytest.raises(ValueError, match=r"layer must be an integer in \[0, 2\) for this model of 2 layers"):
        evaluate.mean_hidden_states(model, tok, ["w1 w2"], layer=layer)
    no_hooks(model)


@pytest.mark.parametrize("top_k", [0, 129, 1000, True, 2.0])
def test_top_k_outside_the_vocabulary(llama, top_k):
    model, tok = llama
    with pytest.raises(ValueError, match="top_k must be a whole number between 1 and the vocabulary size 128"):
        lens.logit_lens(model, tok, ["w1 w2"], top_k=top_k)
    no_hooks(model)


def test_top_k_equal_to_the_vocabulary_is_allowed(llama):
    model, tok = llama
    assert lens.logit_lens(model, tok, ["w1 w2"], top_k=128).top_ids.shape == (2, 1, 128)
    no_hooks(model)


def test_lens_chunk_positions_zero(llama):
    model, tok = llama
    with pytest.raises(ValueError, match="chunk_positions must be a whole number of at least 1, got 0"):
        lens.logit_lens(model, tok, ["w1 w2"], chunk_positions=0)
    no_hooks(model)


@pytest.mark.parametrize("prompts, stop, message", [
    ([None], (), r"prompts\[0\] is NoneType None; each prompt must be a text"),
    ([("w1", "w2")], (), r"prompts\[0\] is tuple .*each prompt must be a text"),
    (["w1"], "###", r"stop must be a list of strings, not a single string: wrap it in a list, \['###'\]"),
], ids=["None", "pair", "stop string"])
def test_bad_generation_input(llama, prompts, stop, message):
    model, tok = llama
    with pytest.raises(ValueError, match=message):
        generation.generate_responses(model, tok, prompts, max_new_tokens=2, stop=stop, progress=False)
    no_hooks(model)


def test_generation_refuses_training_mode_and_leaves_it(llama):
    model, tok = llama
    model.train()
    with pytest.raises(ValueError, match="training mode .*call model.eval"):
        generation.generate_responses(model, tok, ["w1"], max_new_tokens=2, progress=False)
    assert model.training
    no_hooks(model)


# ----------------------------------------------------------------------------------------------
# Grids


SET = {"en": [torch.tensor([1, 2]), EMPTY]}
GRID_TEXTS = {"en": ["w1 w2 w3 w4"], "de": ["w5 w6 w7"]}


@pytest.mark.parametrize("options, message", [
    (dict(neuron_sets={"none": SET["en"]}), "'none' and names starting with 'random:' are reserved"),
    (dict(neuron_sets={"random:en": SET["en"]}), "'none' and names starting with 'random:' are reserved"),
    (dict(control="yes"), "control must be False, True, 'all' or 'diagonal', got 'yes'"),
    (dict(control=2), "control must be False, True, 'all' or 'diagonal', got 2"),
    (dict(control=True, controls=0), "controls must be a whole number of at least 1, got 0"),
    (dict(cells="diag"), "cells must be 'all' or 'diagonal', got 'diag'"),
    (dict(rows_per_pass=0), "rows_per_pass must be a whole number of at least 1, got 0"),
    (dict(batch_size=2.5), "batch_size must be a whole number of at least 1, got 2.5"),
    (dict(cells="diagonal", neuron_sets={"th": SET["en"]}), "cells='diagonal' .* th name.* no language of "
                                                           "texts_by_lang .*use cells='all'"),
    (dict(texts_by_lang=["w1 w2"]), "texts_by_lang must map at least one language"),
    (dict(neuron_sets=[SET["en"]]), "neuron_sets must map a name to a per-layer neuron set"),
    (dict(neuron_sets={"en": [None, []]}), "layer 0: got None"),
], ids=["none", "random:", "control yes", "control 2", "controls 0", "cells", "rows_per_pass 0", "batch_size 2.5",
        "diagonal unnamed", "texts list", "sets list", "bad set"])
def test_ppl_grid_refuses_bad_settings(llama, options, message):
    model, tok = llama
    options = {"texts_by_lang": GRID_TEXTS, "neuron_sets": SET, **options}
    with pytest.raises(ValueError, match=message):
        grids.ppl_grid(model, tok, progress=False, **options)
    no_hooks(model)


def test_ppl_grid_with_a_one_token_text_warns_and_scores_the_rest(llama):
    model, tok = llama
    grid = grids.ppl_grid(model, tok, {"en": ["w1", "w2 w3 w4"]}, SET, progress=False)
    with pytest.warns(SkippedWarning, match="1 of 2 texts have no token to score"):
        table = grid.ppl()
    assert table.loc["none", "en"] == pytest.approx(evaluate.perplexity(model, tok, ["w2 w3 w4"], progress=False))
    no_hooks(model)


@pytest.mark.parametrize("sets, message", [
    ({"none": SET["en"]}, "'none' is reserved for the baseline"),
    ([SET["en"]], "neuron_sets each name to a per-layer neuron set"),
    ({"en": [torch.tensor([99]), EMPTY]}, r"layer 0: neuron indices must lie in \[0, 48\)"),
], ids=["none", "list", "bad set"])
def test_accuracy_grid_refuses_bad_sets_before_generating(llama, sets, message):
    model, tok = llama
    calls = []

    def stub(model_, tokenizer, prompts, **options):
        calls.append(prompts)
        return ["1"] * len(prompts)

    problems = {"en": [Problem("en", 0, "w1 w2", 1.0, "w1 w2")]}
    with pytest.raises(ValueError, match=message):
        grids.accuracy_grid(model, tok, problems, sets, prompt=lambda p: p.question, generate=stub, progress=False)
    assert not calls
    no_hooks(model)


# ----------------------------------------------------------------------------------------------
# Alignment


def _config(**changes):
    return align.AlignConfig(**{"steps": 4, "batch_size": 2, "lr": 1e-2, **changes})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_training_stays_finite(dtype):
    model, tok = tiny_model("llama").to(dtype), word_tokenizer()
    run = align.align(model, tok, PAIRS, _config(steps=8, lr=5e-3), progress=False)
    assert all(math.isfinite(loss) for loss in run.losses)
    assert all(torch.isfinite(p).all() and p.dtype == dtype for p in model.parameters())
    no_hooks(model)


def test_a_diverging_learning_rate_stops_with_advice_and_restores_the_model(llama):
    model, tok = llama
    with pytest.raises(FloatingPointError, match="the loss is .* lower the learning rate"):
        align.align(model, tok, PAIRS, _config(lr=1e30, steps=6), progress=False)
    assert not model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    no_hooks(model)


@pytest.mark.parametrize("method, examples, message", [
    ("question", ["w1 w2", "w3 w4"], "method 'question' trains on tuple examples; build them with "
                                     "lnlib.protocols.alignment_pairs"),
    ("question", {"xx": PAIRS}, "not a mapping"),
    ("question", ("w1", "w2"), "not a single one: wrap it in a list"),
    ("dpo", PAIRS, "method 'dpo' trains on PreferencePair examples; build them with preference_pairs"),
    ("dpo", align.PreferencePair("w1", " w2", " w3", 0.5), "not PreferencePair: wrap a single one in a list"),
    ("dpo", [], "no training examples"),
], ids=["texts", "dict", "one pair", "pairs for dpo", "one preference pair", "no dpo examples"])
def test_wrong_training_examples_are_refused(llama, method, examples, message):
    model, tok = llama
    with pytest.raises(ValueError, match=message):
        align.align(model, tok, examples, _config(method=method), progress=False)
    no_hooks(model)


def test_examples_with_nothing_to_train_on_are_left_out_or_refused(llama):
    model, tok = llama
    with pytest.warns(SkippedWarning, match="1 of 5 examples have no token to train on"):
        run = align.align(model, tok, PAIRS + [("w1 w2", "")], _config(), progress=False)
    assert all(math.isfinite(loss) for loss in run.losses)
    with pytest.raises(ValueError, match="no example has a response token to train on .*raise max_length"), \
            pytest.warns(SkippedWarning):
        align.align(model, tok, [("w1 w2", ""), ("w3", "")], _config(), progress=False)
    no_hooks(model)


@pytest.mark.parametrize("changes, message", [
    (dict(lr=True), "lr must be a positive number, got True"),
    (dict(lr="1e-4"), "lr must be a positive number, got '1e-4'"),
    (dict(lr=0), "lr must be a positive number, got 0"),
    (dict(lr=math.nan), "lr must be a positive number, got nan"),
    (dict(steps=0), "steps must be a whole number of at least 1"),
    (dict(checkpoint_every=-1), "checkpoint_every must be a whole number of at least 0, got -1"),
    (dict(checkpoint_every=2), "checkpoint_every is set but no checkpoint_dir was given"),
])
def test_bad_training_settings_are_refused(llama, changes, message):
    model, tok = llama
    before = {name: p.clone() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match=message):
        align.align(model, tok, PAIRS, _config(**changes), progress=False)
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    no_hooks(model)


def test_the_cached_run_refuses_wrong_examples_clearly(llama, cache_root):
    model, tok = llama
    with pytest.raises(ValueError, match="trains on tuple examples"):
        align.aligned(model, tok, ["w1 w2", "w3"], _config(), progress=False)
    with pytest.raises(ValueError, match="not a single one: wrap it in a list"):
        align.aligned(model, tok, align.PreferencePair("w1", " w2", " w3", 0.5), _config(method="dpo"),
                      progress=False)
    no_hooks(model)


def test_apply_aligned_with_a_wrong_shaped_tensor_changes_nothing(tmp_path):
    path = align.save_aligned(tiny_model("llama", seed=1), tmp_path / "a.safetensors", {})
    old = path.read_bytes()
    other = tiny_model("llama")
    other.model.layers[1].mlp.up_proj = torch.nn.Linear(32, 47, bias=False)
    before = {name: p.clone() for name, p in other.named_parameters()}
    with pytest.raises(ValueError, match="does not fit this model .*nothing was changed"):
        align.apply_aligned(other, path)
    assert all(torch.equal(before[name], p) for name, p in other.named_parameters())
    assert path.read_bytes() == old
    no_hooks(other)


def test_apply_aligned_refuses_a_file_of_another_kind(llama, tmp_path):
    model, tok = llama
    path = counts.save_counts(toy_counts(model, tok), tmp_path / "counts.safetensors")
    before = logits(model)
    with pytest.raises(store.StoreError, match="holds lnlib 'counts' data, not 'aligned'"):
        align.apply_aligned(model, path)
    assert torch.equal(logits(model), before)


def test_save_aligned_to_a_folder(llama, tmp_path):
    model, _ = llama
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a folder; give a file path such as"):
        align.save_aligned(model, tmp_path / "run", {})
    assert snapshot(tmp_path) == before

