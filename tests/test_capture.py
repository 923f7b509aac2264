"""lnlib.capture on tiny models: hook counts against a manual forward, response-only counting, padding,
hook removal, saving, and generation."""

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import capture, identify, models

TEXTS = ["w1 w2 w3 w4 w5 w6 w7", "w9 w8", "w3 w3 w3 w1 w2", "w40 w41 w42 w43", "w7"]
PAIRS = [("w1 w2 w3", "w4 w5 w6 w7"), ("w9", "w8 w8"), ("w3 w3 w3 w1", "w2"), ("w40 w41", "w42 w43 w44 w45 w46")]
FAMILIES = ["llama", "gemma3_text", "gemma3", "gpt2"]


def _manual_counts(model, tokenizer, texts):
    """Counts from the definition, one unpadded text at a time: capture each MLP's input x and count
    gate(x) > 0 (c_fc(x) > 0 for GPT-2), the sign of the pre-activation, without lnlib's hooks."""
    mlps = [models.blocks(model)[i].mlp for i in range(models.n_layers(model))]
    inputs = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, i=i: inputs.__setitem__(i, args[0]))
               for i, m in enumerate(mlps)]
    total = torch.zeros(models.n_layers(model), models.n_neurons(model), dtype=torch.int64)
    n = 0
    try:
        with torch.no_grad():
            for text in texts:
                ids = tokenizer(text, return_tensors="pt").input_ids
                model(input_ids=ids)
                n += ids.shape[1]
                for i, mlp in enumerate(mlps):
                    pre = mlp.c_fc(inputs[i]) if hasattr(mlp, "c_fc") else mlp.gate_proj(inputs[i])
                    total[i] += (pre[0] > 0).sum(0)
    finally:
        for h in handles:
            h.remove()
    return total, n


@pytest.mark.parametrize("family", FAMILIES)
def test_counts_equal_manual_forward(family):
    model, tok = tiny_model(family), word_tokenizer()
    counts = capture.count_activations(model, tok, TEXTS, batch_size=2, progress=False)
    manual, n = _manual_counts(model, tok, TEXTS)
    assert counts.n_tokens == n == sum(len(t.split()) for t in TEXTS)
    assert counts.over_zero.dtype == torch.int64 and counts.shape == (2, models.n_neurons(model))
    assert torch.equal(counts.over_zero, manual)
    assert 0 < manual.sum() < n * manual.numel()  # some neurons on, not all: the comparison can fail
    assert counts.n_examples == len(TEXTS)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_one_pass_response_counts_equal_two_pass_subtraction(family):
    """The paper's statistic: full pass (prompt + response) minus prefix pass (prompt) = response tokens only."""
    model, tok = tiny_model(family), word_tokenizer()
    one = capture.count_activations(model, tok, PAIRS, batch_size=3, progress=False)
    full = capture.count_activations(model, tok, [f"{p} {r}" for p, r in PAIRS], batch_size=3, progress=False)
    prefix = capture.count_activations(model, tok, [p for p, _ in PAIRS], batch_size=3, progress=False)
    assert one.n_tokens == full.n_tokens - prefix.n_tokens == sum(len(r.split()) for _, r in PAIRS)
    assert torch.equal(one.over_zero, full.over_zero - prefix.over_zero)
    # and the prompt tokens really are left out: counting the full texts gives more
    assert full.over_zero.sum() > one.over_zero.sum()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_padding_never_counts(family):
    model, tok = tiny_model(family), word_tokenizer()
    examples = TEXTS + PAIRS
    single = capture.count_activations(model, tok, examples, batch_size=1, progress=False)  # no padding at all
    for batch_size in (2, 4, len(examples)):
        padded = capture.count_activations(model, tok, examples, batch_size=batch_size, progress=False)
        assert padded.n_tokens == single.n_tokens
        assert torch.equal(padded.over_zero, single.over_zero)


def test_hooks_are_removed_on_exit_and_on_error():
    model, tok = tiny_model("gemma3_text"), word_tokenizer()
    acts = models.mlp_activations(model)
    capture.count_activations(model, tok, TEXTS, progress=False)
    assert all(not a._forward_hooks for a in acts)
    with pytest.raises(RuntimeError, match="boom"), capture.counting_hooks(model):
        assert all(len(a._forward_hooks) == 1 for a in acts)
        raise RuntimeError("boom")
    assert all(not a._forward_hooks for a in acts)


def test_counts_leave_the_model_output_unchanged():
    model, tok = tiny_model("llama"), word_tokenizer()
    ids = tok("w1 w2 w3 w4", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(input_ids=ids).logits
        with capture.counting_hooks(model) as counter:
            counter.set_mask(torch.ones_like(ids, dtype=torch.bool))
            during = model(input_ids=ids).logits
    assert torch.equal(before, during)
    assert counter.over_zero.sum() > 0


def test_bad_examples_are_refused():
    model, tok = tiny_model("llama"), word_tokenizer()
    with pytest.raises(ValueError, match="empty"):
        capture.count_activations(model, tok, [], progress=False)
    with pytest.raises(ValueError, match="not a single one"):
        capture.count_activations(model, tok, "w1 w2", progress=False)
    with pytest.raises(ValueError, match="example 1"):
        capture.count_activations(model, tok, ["w1", ("w1", "w2", "w3")], progress=False)


def test_add_stack_probs_and_identify_input():
    model, tok = tiny_model("llama"), word_tokenizer()
    by_lang = capture.count_by_language(model, tok, {"a": TEXTS[:2], "b": TEXTS[2:], "c": PAIRS}, progress=False)
    over_zero, n_tokens = capture.stack_counts(by_lang, langs=("a", "b", "c"))
    assert over_zero.shape == (2, 48, 3) and n_tokens.tolist() == [c.n_tokens for c in by_lang.values()]
    probs = capture.stacked_probs(by_lang, langs=("a", "b", "c"))
    assert torch.allclose(probs[..., 1], by_lang["b"].probs())
    identify.check_probs(probs)  # a valid input for lnlib.identify
    both = by_lang["a"] + by_lang["b"]
    whole = capture.count_activations(model, tok, TEXTS, progress=False)
    assert torch.equal(both.over_zero, whole.over_zero) and both.n_tokens == whole.n_tokens
    with pytest.raises(ValueError, match="no counts for d"):
        capture.stack_counts(by_lang, langs=("a", "d"))


def test_save_and_load_counts(tmp_path):
    model, tok = tiny_model("gpt2"), word_tokenizer()
    by_lang = capture.count_by_language(model, tok, {"en": TEXTS, "de": PAIRS}, progress=False)
    path = capture.save_counts(by_lang, tmp_path / "counts.safetensors", {"model": "tiny"})
    loaded, provenance = capture.load_counts(path)
    assert provenance == {"model": "tiny"} and list(loaded) == ["en", "de"]
    for lang in by_lang:
        assert torch.equal(loaded[lang].over_zero, by_lang[lang].over_zero)
        assert loaded[lang].n_tokens == by_lang[lang].n_tokens
    with pytest.raises(FileExistsError):
        capture.save_counts(by_lang, path)


def test_count_cache_is_reused_and_keyed_on_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("LNLIB_CACHE_DIR", str(tmp_path))
    model, tok = tiny_model("llama"), word_tokenizer()
    examples = {"en": TEXTS, "de": PAIRS}
    first = capture.count_by_language(model, tok, examples, cache=True, progress=False)
    assert len(list((tmp_path / "counts").glob("*.safetensors"))) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cached counts should have been read")

    with monkeypatch.context() as patch:
        patch.setattr(capture, "count_activations", must_not_run)
        again = capture.count_by_language(model, tok, examples, cache=True)
    for lang in examples:
        assert torch.equal(again[lang].over_zero.cpu(), first[lang].over_zero.cpu())
        assert again[lang].n_tokens == first[lang].n_tokens
    with torch.no_grad():  # new weights (as after alignment) or new examples: a new key
        models.mlps(model)[0].down_proj.weight.add_(1.0)
    assert capture.counts_key(model, examples) != capture.counts_key(tiny_model("llama"), examples)
    assert capture.counts_key(model, examples) != capture.counts_key(model, {"en": TEXTS})
    capture.count_by_language(model, tok, examples, cache=True, progress=False)
    assert len(list((tmp_path / "counts").glob("*.safetensors"))) == 2


def test_prompt_pairs_keep_the_instruction_out():
    pairs = capture.prompt_pairs(["Hallo Welt", "Bonjour"])
    assert pairs == [(capture.INSTRUCTION, "Hallo Welt"), (capture.INSTRUCTION, "Bonjour")]


def test_generation_is_deterministic_and_independent_of_batching():
    model, tok = tiny_model("llama"), word_tokenizer()
    model.generation_config.eos_token_id = None  # a random model: never stop early
    prompts = ["w1 w2 w3 w4 w5", "w9", "w3 w3 w1", "w7 w8 w9 w10 w11 w12 w13"]
    greedy = capture.generate_responses(model, tok, prompts, max_new_tokens=6, batch_size=4, progress=False)
    again = capture.generate_responses(model, tok, prompts, max_new_tokens=6, batch_size=4, progress=False)
    one_by_one = capture.generate_responses(model, tok, prompts, max_new_tokens=6, batch_size=1, progress=False)
    assert greedy == again == one_by_one
    # greedy = repeatedly appending the argmax of a plain forward pass
    for prompt, text in zip(prompts, greedy, strict=True):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            for _ in range(6):
                ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], 1)
        new = ids[0, len(tok(prompt).input_ids):]
        assert text == tok.decode(new, skip_special_tokens=True)
    sampled = [capture.generate_responses(model, tok, prompts, max_new_tokens=6, do_sample=True, seed=s,
                                          temperature=2.0, progress=False) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]


def test_generation_stops_at_stop_strings():
    model, tok = tiny_model("llama"), word_tokenizer()
    model.generation_config.eos_token_id = None
    full = capture.generate_responses(model, tok, ["w1 w2"], max_new_tokens=8, progress=False)[0]
    stop_word = full.split()[2]
    cut = capture.generate_responses(model, tok, ["w1 w2"], max_new_tokens=8, stop=[stop_word], progress=False)[0]
    assert cut == full[:full.index(stop_word)]


def test_mathoctopus_prompt():
    from lnlib.data import Problem

    text = capture.mathoctopus_prompt(Problem("de", 0, "Wie viel?", 3.0, "How much?"))
    assert "in German. Please answer in German." in text and text.endswith("Wie viel?\n\n### Response:")
