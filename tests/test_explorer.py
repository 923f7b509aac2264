import pytest
import torch
from matplotlib.figure import Figure
from tiny_models import tiny_model, word_tokenizer

from lnlib import explorer, models
from lnlib.identify import Identification

TEXTS = ["w1 w2 w3 w4", "w5 w6", "w7 w8 w9 w10 w11"]


def _ident(model):
    layers, neurons = models.n_layers(model), models.n_neurons(model)
    n_above = torch.zeros(layers, neurons, dtype=torch.int64)
    n_above[1, 7] = 3  # a general neuron
    return Identification(("en", "de", "zh"), "entropy-lambda", 0.1, 0.01, 0.95, 0.5,
                          torch.tensor([2, neurons + 4]), torch.tensor([[False, True, False], [True, True, False]]),
                          n_above)


def test_top_activating_tokens_match_a_manual_forward():
    model, tok = tiny_model("llama"), word_tokenizer()
    values = []
    act = models.mlp_activations(model)[1]
    handle = act.register_forward_hook(lambda m, i, out: values.append(out[0, :, 5]))
    for text in TEXTS:
        model(input_ids=tok(text, return_tensors="pt").input_ids)
    handle.remove()
    flat = sorted(((v, t) for vals, text in zip(values, TEXTS, strict=True)
                   for v, t in zip(vals.tolist(), text.split(), strict=True)), reverse=True)
    tops = explorer.top_activating_tokens(model, tok, TEXTS, [(1, 5), (0, 2)], k=3, batch_size=2)
    top = tops[(1, 5)]
    assert [t for t, _, _ in top] == [t for _, t in flat[:3]]
    assert [v for _, v, _ in top] == pytest.approx([v for v, _ in flat[:3]], abs=1e-5)
    alone = explorer.top_activating_tokens(model, tok, TEXTS, [(0, 2)], k=3, batch_size=2)[(0, 2)]
    assert alone == tops[(0, 2)]  # one pass for several neurons gives each its own tokens


def test_report_figure_and_widget():
    model, tok = tiny_model("gemma3_text"), word_tokenizer()
    ident = _ident(model)
    probs = torch.rand(models.n_layers(model), models.n_neurons(model), 3)
    assert explorer.neuron_kind(ident, 0, 2) == "specific" and explorer.neuron_kind(ident, 1, 4) == "related"
    assert explorer.neuron_kind(ident, 1, 7) == "general" and explorer.neuron_kind(ident, 0, 0) == "other"
    report = explorer.neuron_report(model, tok, probs, ident, 0, 2, {"de": TEXTS}, "w1 w2", k=2, max_new_tokens=3)
    assert report.kind == "specific" and set(report.probs) == {"en", "de", "zh"} and len(report.top_tokens["de"]) == 2
    assert isinstance(explorer.report_figure(report), Figure)
    box = explorer.explorer(model, tok, probs, ident, {"de": TEXTS}, {"en": "w1", "de": "w2", "zh": "w3"})
    assert type(box).__name__ == "VBox"


def test_static_only(monkeypatch):
    from lnlib.config import static_only

    monkeypatch.setenv("LNLIB_STATIC", "1")
    assert static_only()
    monkeypatch.delenv("LNLIB_STATIC")
    assert not static_only()


def test_separation_by_hand():
    probs = torch.tensor([[0.9, 0.2, 0.1],   # above τ in language 0 only: 0.9 − 0.2
                          [0.8, 0.7, 0.3],   # in 0 and 1: 0.7 − 0.3
                          [0.6, 0.9, 0.7],   # everywhere: its smallest, 0.6
                          [0.1, 0.2, 0.3]])  # nowhere: −0.3
    assert explorer.separation(probs, 0.5).tolist() == pytest.approx([0.7, 0.4, 0.6, -0.3])
    assert explorer.separation(probs.reshape(2, 2, 3), 0.5).shape == (2, 2)


def _ranked_setup():
    langs = ("en", "de", "zh")
    probs = torch.full((2, 4, 3), 0.1)
    probs[0, 1] = torch.tensor([0.1, 0.6, 0.2])  # de-specific, separation 0.4
    probs[1, 2] = torch.tensor([0.1, 0.9, 0.1])  # de-specific, separation 0.8: ranked first
    probs[1, 0] = torch.tensor([0.7, 0.8, 0.1])  # en+de related
    probs[0, 3] = torch.tensor([0.9, 0.6, 0.7])  # general, smallest 0.6
    probs[1, 3] = torch.tensor([0.8, 0.9, 0.95])  # general, smallest 0.8: ranked first
    n_above = (probs > 0.5).sum(-1)
    selected = torch.tensor([1, 4 + 2, 4 + 0])
    high = probs.reshape(-1, 3)[selected] > 0.5
    ident = Identification(langs, "entropy-lambda", 0.1, 0.01, 0.95, 0.5, selected, high, n_above)
    return probs, ident


def test_rank_and_pick_take_the_best_separated_neuron_of_each_class():
    probs, ident = _ranked_setup()
    assert explorer.rank_neurons(probs, ident, "specific", "de").tolist() == [[1, 2], [0, 1]]
    assert explorer.rank_neurons(probs, ident, "general").tolist() == [[1, 3], [0, 3]]
    assert explorer.rank_neurons(probs, ident, "related", "zh").tolist() == []
    picks = explorer.pick_neurons(probs, ident, "de")
    assert picks == {"specific": (1, 2), "related": (1, 0), "general": (1, 3)}
    assert [explorer.neuron_kind(ident, *picks[k]) for k in picks] == ["specific", "related", "general"]


def test_pick_falls_back_when_a_class_is_empty():
    probs, ident = _ranked_setup()
    probs[0, 0, 2] = 0.45  # the neuron with the largest p_zh − max of the others (not selected)
    picks = explorer.pick_neurons(probs, ident, "zh")
    assert picks["specific"] == (0, 0) and explorer.neuron_kind(ident, 0, 0) == "other"
    assert picks["related"] == (1, 0)  # no zh-related neuron: the best related neuron of any language
    with pytest.raises(ValueError, match="language 'xx' is not in this identification"):
        explorer.pick_neurons(probs, ident, "xx")


def test_report_table_and_changed():
    model, tok = tiny_model("llama"), word_tokenizer()
    ident = _ident(model)
    probs = torch.rand(models.n_layers(model), models.n_neurons(model), 3)
    report = explorer.neuron_report(model, tok, probs, ident, 1, 4, {"en": TEXTS, "de": TEXTS[:1]}, "w1 w2",
                                    k=3, max_new_tokens=4)
    table = explorer.report_table(report)
    assert list(table.index) == ["en", "de", "zh"] and table.loc["zh", "top tokens (activation)"] == ""
    assert table.loc["en", "top tokens (activation)"].count("(") == 3
    assert table.loc["en", "p"] == pytest.approx(report.probs["en"], abs=1e-3)
    assert report.changed == (report.continuation != report.continuation_off)


def test_the_widget_steps_through_a_class():
    probs, ident = _ranked_setup()
    model, tok = tiny_model("llama"), word_tokenizer()
    box = explorer.explorer(model, tok, probs, ident, {"de": TEXTS}, {"en": "w1", "de": "w2", "zh": "w3"})
    top, middle, _output = box.children
    kind, lang, step, status = top.children
    layer, neuron, _show = middle.children
    assert (lang.value, kind.value) == ("de", "specific") and (layer.value, neuron.value) == (1, 2)
    step.click()
    assert (layer.value, neuron.value) == (0, 1) and status.value == "specific neuron 2 of 2"
    kind.value = "general"
    assert (layer.value, neuron.value) == (1, 3)
    lang.value, kind.value = "zh", "related"
    assert status.value == "no related neurons for zh"
