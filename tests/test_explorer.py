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
    top = explorer.top_activating_tokens(model, tok, TEXTS, layer=1, neuron=5, k=3, batch_size=2)
    assert [t for t, _, _ in top] == [t for _, t in flat[:3]]
    assert [v for _, v, _ in top] == pytest.approx([v for v, _ in flat[:3]], abs=1e-5)


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
    monkeypatch.setenv("LNLIB_STATIC", "1")
    assert explorer.static_only()
    monkeypatch.delenv("LNLIB_STATIC")
    assert not explorer.static_only()
