"""lnlib.intervene on tiny models: deactivation leaves nothing behind, equals removing the neuron's weights,
acts at every position, and refuses malformed neuron sets."""

import copy

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import generation, identify, intervene, models

IDS = torch.tensor([[1, 5, 7, 9, 11, 4], [2, 8, 8, 3, 60, 61]])
FAMILIES = ["llama", "gemma3_text", "gemma3", "gpt2"]


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _some_neurons(model, per_layer=(3, 0)):
    width = models.n_neurons(model)
    return [torch.arange(0, width, max(1, width // n))[:n] if n else torch.tensor([], dtype=torch.long)
            for n in per_layer]


@pytest.mark.parametrize("family", FAMILIES)
def test_empty_set_changes_nothing_and_exit_restores(family):
    model = tiny_model(family)
    base = _logits(model)
    with intervene.deactivate(model, [[] for _ in range(models.n_layers(model))]):
        assert torch.equal(_logits(model), base)
    with intervene.deactivate(model, _some_neurons(model, (5, 5))):
        changed = _logits(model)
    assert not torch.allclose(changed, base)
    assert torch.equal(_logits(model), base)
    assert all(not a._forward_hooks for a in models.mlp_activations(model))


def test_hooks_removed_when_the_body_raises():
    model = tiny_model("llama")
    base = _logits(model)
    with pytest.raises(KeyError), intervene.deactivate(model, _some_neurons(model, (4, 4))):
        assert all(len(a._forward_hooks) == 1 for a in models.mlp_activations(model))
        raise KeyError("inside")
    assert all(not a._forward_hooks for a in models.mlp_activations(model))
    assert torch.equal(_logits(model), base)


def _zero_down_weights(model, neurons):
    """The same ablation done on the weights: neuron j's column of the down projection (a Linear stores
    (out, in)); GPT-2's Conv1D stores (in, out), so there it is row j."""
    edited = copy.deepcopy(model)
    for down, idx in zip(models.mlp_down_projections(edited), neurons, strict=True):
        with torch.no_grad():
            if isinstance(down, torch.nn.Linear):
                down.weight[:, idx] = 0
            else:
                down.weight[idx, :] = 0
    return edited


@pytest.mark.parametrize("family", FAMILIES)
def test_hook_equals_zeroing_the_down_projection(family):
    model = tiny_model(family)
    neurons = _some_neurons(model, (6, 2))
    edited = _zero_down_weights(model, neurons)
    with intervene.deactivate(model, neurons):
        hooked = _logits(model)
    assert torch.allclose(hooked, _logits(edited), atol=1e-5)
    assert not torch.allclose(hooked, _logits(model), atol=1e-3)


def test_deactivation_acts_on_generated_tokens_too():
    model, tok = tiny_model("llama"), word_tokenizer()
    model.generation_config.eos_token_id = None
    neurons = _some_neurons(model, (10, 10))
    edited = _zero_down_weights(model, neurons)
    edited.generation_config.eos_token_id = None
    prompts = ["w1 w2 w3", "w9 w8 w7 w6 w5"]
    with intervene.deactivate(model, neurons):
        hooked = generation.generate_responses(model, tok, prompts, max_new_tokens=8, batch_size=2, progress=False)
    plain = generation.generate_responses(model, tok, prompts, max_new_tokens=8, batch_size=2, progress=False)
    assert hooked == generation.generate_responses(edited, tok, prompts, max_new_tokens=8, batch_size=2,
                                                progress=False)
    assert hooked != plain


def test_zeroing_reaches_the_activation_output():
    model = tiny_model("gemma3_text")
    neurons = [torch.tensor([0, 7, 47]), torch.tensor([3])]
    seen = {}
    act = models.mlp_activations(model)[0]
    with intervene.deactivate(model, neurons):
        handle = act.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))  # runs after lnlib's hook
        _logits(model)
        handle.remove()
    assert (seen["out"][..., [0, 7, 47]] == 0).all() and (seen["out"][..., 1] != 0).all()


def test_bad_neuron_sets_are_refused():
    model = tiny_model("llama")  # 2 layers of 48 neurons
    cases = [
        ([torch.tensor([1])], "2 layers"),
        ([torch.tensor([1]), torch.tensor([48])], r"\[0, 48\)"),
        ([torch.tensor([-1]), []], r"\[0, 48\)"),
        ([torch.tensor([1.0]), []], "integers"),
        ([torch.ones(48, dtype=torch.bool), []], "boolean mask"),
        ([torch.tensor([[1, 2]]), []], "1-D"),
        (torch.tensor([1, 2]), "one 1-D index tensor per layer"),
    ]
    for neurons, message in cases:
        with pytest.raises(ValueError, match=message), intervene.deactivate(model, neurons):
            pass
    assert all(not a._forward_hooks for a in models.mlp_activations(model))


def test_check_neurons_normalises():
    out = intervene.check_neurons([[5, 1, 5], torch.tensor([], dtype=torch.long)], 2, 10)
    assert [t.tolist() for t in out] == [[1, 5], []] and out[0].dtype == torch.int64


def test_union_and_sizes():
    a = [torch.tensor([1, 2]), torch.tensor([], dtype=torch.long)]
    b = [torch.tensor([2, 3]), torch.tensor([9])]
    assert [t.tolist() for t in intervene.union(a, b)] == [[1, 2, 3], [9]]
    assert intervene.layer_sizes(intervene.union(a, b)) == [3, 1] and intervene.n_neurons_in(b) == 3
    with pytest.raises(ValueError, match="different numbers of layers"):
        intervene.union(a, [torch.tensor([1])])


def test_random_control_matches_sizes_per_layer_and_is_seeded():
    neurons = [torch.tensor([0, 1, 2, 3]), torch.tensor([], dtype=torch.long), torch.tensor([5])]
    first = intervene.random_like(neurons, 100, seed=3)
    assert intervene.layer_sizes(first) == [4, 0, 1]
    assert all(len(torch.unique(t)) == len(t) and (t >= 0).all() and (t < 100).all() for t in first)
    assert all(torch.equal(x, y) for x, y in zip(first, intervene.random_like(neurons, 100, seed=3), strict=True))
    assert not torch.equal(first[0], intervene.random_like(neurons, 100, seed=4)[0])
    with pytest.raises(ValueError, match="cannot draw 4"):
        intervene.random_like(neurons, 3)


def test_deactivation_sets_follow_the_three_settings():
    # 2 layers x 4 neurons x 3 languages; tau is the 95th percentile, so only values near 1 count as high
    probs = torch.full((2, 4, 3), 0.01)
    probs[0, 0] = torch.tensor([0.99, 0.02, 0.02])   # specific to a
    probs[0, 1] = torch.tensor([0.99, 0.99, 0.02])   # related to a and b
    probs[1, 2] = torch.tensor([0.99, 0.99, 0.99])   # general
    ident = identify.identify(probs, lam=0.0, rate=0.25, bar=0.7, langs=("a", "b", "c"))
    assert ident.neurons("specific", "a").tolist() == [[0, 0]]
    sets = {s: intervene.deactivation_sets(ident, s) for s in intervene.SETTINGS}
    as_lists = {s: {lang: [t.tolist() for t in v] for lang, v in d.items()} for s, d in sets.items()}
    assert as_lists["specific"]["a"] == [[0], []] and as_lists["specific"]["b"] == [[], []]
    assert as_lists["specific+related"]["a"] == [[0, 1], []] and as_lists["specific+related"]["b"] == [[1], []]
    assert as_lists["specific+related+general"]["c"] == [[], [2]]
    assert as_lists["specific+related+general"]["a"] == [[0, 1], [2]]
    with pytest.raises(ValueError, match="setting must be one of"):
        intervene.deactivation_sets(ident, "general")


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_columns_equals_deactivate_and_restores_the_weights(family):
    model = tiny_model(family)
    neurons = _some_neurons(model, (6, 2))
    before = [down.weight.detach().clone() for down in models.mlp_down_projections(model)]
    with intervene.deactivate(model, neurons):
        hooked = _logits(model)
    with intervene.zero_columns(model, neurons):
        edited = _logits(model)
        down = models.mlp_down_projections(model)[0]
        zeroed = down.weight[:, neurons[0]] if isinstance(down, torch.nn.Linear) else down.weight[neurons[0], :]
        assert (zeroed == 0).all() and not torch.equal(down.weight, before[0])
    assert torch.allclose(hooked, edited, atol=1e-5)
    assert not torch.allclose(edited, _logits(model), atol=1e-3)
    assert all(torch.equal(d.weight, w) for d, w in zip(models.mlp_down_projections(model), before, strict=True))
    with pytest.raises(KeyError), intervene.zero_columns(model, neurons):
        raise KeyError("inside")
    assert all(torch.equal(d.weight, w) for d, w in zip(models.mlp_down_projections(model), before, strict=True))
    with pytest.raises(ValueError, match="layer entries"):
        with intervene.zero_columns(model, neurons[:1]):
            pass


def test_sizes_table_counts_each_setting_per_language():
    empty = torch.tensor([], dtype=torch.long)
    sets = {"one": {"en": [torch.tensor([1, 2]), torch.tensor([3])], "de": [empty, empty]},
            "two": {"en": [torch.tensor([1, 2, 2]), torch.tensor([3, 4])], "de": [torch.tensor([7])] * 2}}
    table = intervene.sizes_table(sets)
    assert list(table.columns) == ["one", "two"] and list(table.index) == ["en", "de"]
    assert table.index.name == "language"
    assert table.to_dict() == {"one": {"en": 3, "de": 0}, "two": {"en": 4, "de": 2}}
