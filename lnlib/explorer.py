"""The neuron explorer: one neuron's activation probability per language, the tokens that make it fire
most in each language, and what a continuation becomes with it switched off.

`neuron_report` computes everything for one neuron; `report_figure` draws it as a static matplotlib figure
(what the rendered book shows); `explorer` wraps both in ipywidgets for Colab and Jupyter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import nn

from lnlib import capture, intervene, models
from lnlib.data import LANGS
from lnlib.identify import Identification
from lnlib.plot import LANG_COLORS

STATIC_ENV = "LNLIB_STATIC"


def static_only() -> bool:
    """True while the book is built (`make book` sets LNLIB_STATIC=1): show figures, never live widgets."""
    return os.environ.get(STATIC_ENV, "").lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class NeuronReport:
    """layer, neuron; kind: "specific", "related", "general" or "other" in `ident`; probs: activation
    probability per language; top_tokens: per language, (token, activation, context) triples, strongest
    first; prompt, continuation, continuation_off: a greedy continuation with and without the neuron."""

    layer: int
    neuron: int
    kind: str
    probs: dict[str, float]
    tau: float
    top_tokens: dict[str, list[tuple[str, float, str]]]
    prompt: str
    continuation: str
    continuation_off: str


@torch.no_grad()
def top_activating_tokens(model: nn.Module, tokenizer, texts: Sequence[str], layer: int, neuron: int,
                          k: int = 5, batch_size: int = 8) -> list[tuple[str, float, str]]:
    """The `k` token positions of `texts` where neuron `neuron` of layer `layer` has its largest activation:
    (token, activation, a few tokens of context ending at it), strongest first; padding never counts."""
    act = models.mlp_activations(model)[layer]
    found = []  # (activation, token ids of the context ending at the token)
    captured = []
    handle = act.register_forward_hook(lambda m, i, out: captured.append(out[..., neuron].float()))
    device = next(model.parameters()).device
    runs = models.batches(tokenizer, list(texts), batch_size, 256, device)
    try:
        for batch in runs:
            model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        handle.remove()
    for batch, activation in zip(runs, captured, strict=True):
        values = activation.masked_fill(~batch.attention_mask.bool(), float("-inf"))
        best = values.flatten().topk(min(k, values.numel()))
        for value, flat in zip(best.values.tolist(), best.indices.tolist(), strict=True):
            row, pos = divmod(flat, values.shape[1])
            if value != float("-inf"):
                found.append((value, batch.input_ids[row, max(0, pos - 4):pos + 1].tolist()))
    found.sort(key=lambda item: -item[0])
    return [(tokenizer.decode(ids[-1:]), value, tokenizer.decode(ids)) for value, ids in found[:k]]


def neuron_kind(ident: Identification, layer: int, neuron: int) -> str:
    """The class of a neuron in an identification: specific, related, general or other."""
    for kind in ("specific", "related", "general"):
        pairs = ident.neurons(kind)
        if bool(((pairs[:, 0] == layer) & (pairs[:, 1] == neuron)).any()):
            return kind
    return "other"


def neuron_report(model: nn.Module, tokenizer, probs: torch.Tensor, ident: Identification, layer: int,
                  neuron: int, texts_by_lang: Mapping[str, Sequence[str]], prompt: str, k: int = 5,
                  max_new_tokens: int = 24) -> NeuronReport:
    """Everything the explorer shows for neuron `neuron` of layer `layer`.

    probs: [layers, neurons, languages] in `ident.langs` order; texts_by_lang: texts searched for the
    tokens that activate the neuron most; prompt: continued greedily with and without the neuron.
    """
    if not (0 <= layer < probs.shape[0] and 0 <= neuron < probs.shape[1]):
        raise ValueError(f"no neuron ({layer}, {neuron}): the model has {probs.shape[0]} layers of "
                         f"{probs.shape[1]} neurons")
    top = {lang: top_activating_tokens(model, tokenizer, texts, layer, neuron, k)
           for lang, texts in texts_by_lang.items()}
    (plain,) = capture.generate_responses(model, tokenizer, [prompt], max_new_tokens, progress=False)
    off = [torch.zeros(0, dtype=torch.long)] * models.n_layers(model)
    off[layer] = torch.tensor([neuron])
    with intervene.deactivate(model, off):
        (without,) = capture.generate_responses(model, tokenizer, [prompt], max_new_tokens, progress=False)
    return NeuronReport(layer, neuron, neuron_kind(ident, layer, neuron),
                        dict(zip(ident.langs, probs[layer, neuron].tolist(), strict=True)), ident.tau, top,
                        prompt, plain, without)


def report_figure(report: NeuronReport) -> Figure:
    """The static view of a `NeuronReport`: probabilities per language with tau, and the top tokens."""
    langs = [lang for lang in LANGS if lang in report.probs]
    fig, (bars, table) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 1.3]})
    bars.bar(langs, [report.probs[lang] for lang in langs], color=[LANG_COLORS[lang] for lang in langs])
    bars.axhline(report.tau, color="k", ls="--", lw=1, label=f"τ = {report.tau:.3f}")
    bars.set_ylim(0, 1)
    bars.set_xlabel("language")
    bars.set_ylabel("activation probability")
    bars.set_title(f"layer {report.layer}, neuron {report.neuron} ({report.kind})")
    bars.legend(loc="upper right", fontsize=8)
    table.axis("off")
    table.set_title("tokens that activate it most", fontsize=10)
    rows = [[lang, ", ".join(repr(tok.strip() or tok) for tok, _, _ in report.top_tokens.get(lang, [])[:4])]
            for lang in langs if lang in report.top_tokens]
    if rows:
        cells = table.table(cellText=rows, colLabels=["lang", "top tokens"], loc="upper center",
                            cellLoc="left", colWidths=[0.12, 0.88])
        cells.auto_set_font_size(False)
        cells.set_fontsize(8)
    fig.tight_layout()
    return fig


def explorer(model: nn.Module, tokenizer, probs: torch.Tensor, ident: Identification,
             texts_by_lang: Mapping[str, Sequence[str]], prompts: Mapping[str, str]):
    """An ipywidgets explorer: choose a neuron class and language (or type a layer and neuron), see its
    report. prompts: one prompt per language for the with/without continuation."""
    import ipywidgets as widgets
    from IPython.display import display

    kind = widgets.Dropdown(options=["specific", "related", "general"], value="specific", description="class")
    lang = widgets.Dropdown(options=list(ident.langs), value=ident.langs[1], description="language")
    layer = widgets.BoundedIntText(0, min=0, max=probs.shape[0] - 1, description="layer")
    neuron = widgets.BoundedIntText(0, min=0, max=probs.shape[1] - 1, description="neuron")
    pick = widgets.Button(description="first of class")
    show = widgets.Button(description="show", button_style="primary")
    out = widgets.Output()

    def first_of_class(_=None):
        pairs = ident.neurons(kind.value, None if kind.value == "general" else lang.value)
        if len(pairs):
            layer.value, neuron.value = (int(v) for v in pairs[0])

    def render(_=None):
        out.clear_output(wait=True)
        with out:
            report = neuron_report(model, tokenizer, probs, ident, layer.value, neuron.value, texts_by_lang,
                                   prompts[lang.value])
            display(report_figure(report))
            plt.close("all")
            print(f"prompt ({lang.value}): {report.prompt[-120:]!r}")
            print(f"  with the neuron:    {report.continuation!r}")
            print(f"  neuron switched off: {report.continuation_off!r}")

    pick.on_click(first_of_class)
    show.on_click(render)
    first_of_class()
    return widgets.VBox([widgets.HBox([kind, lang, pick]), widgets.HBox([layer, neuron, show]), out])
