"""lnlib.capture on tiny models: hook counts against a manual forward, response-only counting, padding, groups,
hook removal and training mode."""

import warnings

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import capture, hooks, models
from lnlib.batching import SkippedWarning

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
    capture.count_activations(model, tok, TEXTS, progress=False)
    assert hooks.hook_count(model) == 0
    with pytest.raises(RuntimeError, match="boom"), hooks.on_layers(model, lambda layer, out: None):
        assert hooks.hook_count(model) == models.n_layers(model)
        raise RuntimeError("boom")
    assert hooks.hook_count(model) == 0


def test_counts_leave_the_model_output_unchanged_and_restore_training_mode():
    model, tok = tiny_model("llama"), word_tokenizer()
    ids = tok("w1 w2 w3 w4", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(input_ids=ids).logits
    model.config.hidden_dropout = model.config.attention_dropout = 0.5
    model.train()
    counts = capture.count_activations(model, tok, TEXTS, progress=False)
    assert model.training  # the caller's mode is restored
    model.eval()
    assert torch.equal(counts.over_zero, capture.count_activations(model, tok, TEXTS, progress=False).over_zero)
    with torch.no_grad():
        assert torch.equal(before, model(input_ids=ids).logits)


def test_bad_examples_are_refused():
    model, tok = tiny_model("llama"), word_tokenizer()
    with pytest.raises(ValueError, match="empty"):
        capture.count_activations(model, tok, [], progress=False)
    with pytest.raises(ValueError, match="not a single one"):
        capture.count_activations(model, tok, "w1 w2", progress=False)
    with pytest.raises(ValueError, match=r"examples\[1\]"):
        capture.count_activations(model, tok, ["w1", ("w1", "w2", "w3")], progress=False)
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        capture.count_activations(model, tok, TEXTS, batch_size=2.5, progress=False)


def test_examples_without_a_counted_token_are_left_out_with_a_warning():
    model, tok = tiny_model("llama"), word_tokenizer()
    with pytest.warns(SkippedWarning, match="3 of 4 examples have no token to count"):
        counts = capture.count_activations(model, tok, PAIRS[:2] + [("w1", ""), ("w1 w2 w3", "w4 w5")],
                                           max_length=3, progress=False)
    assert counts.n_empty == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        capture.count_activations(model, tok, PAIRS, progress=False)
    with pytest.raises(ValueError, match="no example has a token to count"), pytest.warns(SkippedWarning):
        capture.count_activations(model, tok, [("w1", "")], progress=False)


def test_groups_add_up_to_the_counts_and_resample():
    model, tok = tiny_model("llama"), word_tokenizer()
    examples = TEXTS + PAIRS
    counts = capture.count_activations(model, tok, examples, batch_size=3, groups=3, progress=False)
    assert counts.groups.shape == (3, 2, 48) and counts.group_tokens.sum() == counts.n_tokens
    assert torch.equal(counts.groups.sum(0), counts.over_zero)
    first = capture.count_activations(model, tok, examples[:3], progress=False)  # group 0 = examples 0, 1, 2
    assert torch.equal(counts.groups[0].long(), first.over_zero)
    twice = counts.select(torch.tensor([0, 0]))
    assert torch.equal(twice.over_zero, 2 * first.over_zero) and twice.n_tokens == 2 * first.n_tokens
