"""lnlib.hooks: reading and editing hooks are removed on exit, skipped blocks replay their outputs, and edits are
visible to the cache."""

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import hooks, models


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_skipped_blocks_replay_stored_outputs_exactly(family):
    model, tok = tiny_model(family), word_tokenizer()
    ids = tok(["w1 w2 w3 w4"], return_tensors="pt").input_ids
    stored = {}
    with torch.no_grad():
        with hooks.on_layers(model, lambda layer, out: stored.__setitem__(layer, out), "block", raw=True):
            base = model(input_ids=ids).logits
        calls = []
        with hooks.skip_blocks(model, {0: stored[0]}), hooks.on_layers(model, lambda layer, out: calls.append(layer),
                                                                         "act"):
            replayed = model(input_ids=ids).logits
            assert hooks.is_edited(model)
    assert calls == [1]  # block 0 did not run
    assert torch.allclose(replayed, base, atol=1e-6)
    assert not hooks.is_edited(model) and hooks.hook_count(model) == 0
    assert "forward" not in models.blocks(model)[0].__dict__


def test_edits_mark_the_model_and_reading_hooks_do_not():
    model = tiny_model("llama")
    with hooks.on_layers(model, lambda layer, out: None):
        assert not hooks.is_edited(model)
    with hooks.on_layers(model, lambda layer, out: out * 2, edits=True):
        assert hooks.is_edited(model)
    assert not hooks.is_edited(model)


def test_a_reading_hook_may_not_change_outputs():
    model = tiny_model("llama")
    with pytest.raises(RuntimeError, match="edits=True"), torch.no_grad(), \
            hooks.on_layers(model, lambda layer, out: out * 2):
        model(input_ids=torch.tensor([[1, 4, 5]]))
    assert hooks.hook_count(model) == 0


def test_transformers_own_recording_hooks_do_not_count_as_edits():
    model = tiny_model("llama")
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 4, 5]]), output_hidden_states=True)
    assert not hooks.is_edited(model) and hooks.hook_count(model) == 0
