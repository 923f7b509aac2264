"""The neuron explorer: one neuron's activation probability per language, the tokens that make it fire
most in each language, and what a continuation becomes with it switched off.

`separation` and `rank_neurons` order the neurons of a class by how cleanly they separate their languages
from the rest, and `pick_neurons` takes the best of each class for one language. `neuron_report` computes
everything for one neuron; `report_figure` draws it as a static matplotlib figure and `report_table` lists
its top tokens and continuations (what the rendered book shows); `explorer` wraps both in ipywidgets for
Colab and Jupyter. The figure holds no token text: matplotlib's default fonts lack Thai, Bengali, Chinese and
Japanese glyphs, so tokens go into the table, which the browser renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from lnlib import hooks, intervene, models, work
from lnlib.batching import batches, check_examples
from lnlib.data import LANGS
from lnlib.generation import generate_responses
from lnlib.identify import Identification
from lnlib.plot import lang_color


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

    @property
    def changed(self) -> bool:
        """Whether switching the neuron off changed the greedy continuation."""
        return self.continuation != self.continuation_off

    def peaks(self) -> pd.Series:
        """Per language, the strongest activation the neuron reaches on its texts (0 where none was searched)."""
        return pd.Series({lang: (top[0][1] if top else 0.0) for lang, top in self.top_tokens.items()})

    def digit_share(self) -> float:
        """The share of the neuron's top tokens, over every language, that are digits."""
        tokens = [tok.strip() for top in self.top_tokens.values() for tok, _, _ in top]
        return sum(tok.isdigit() for tok in tokens) / max(len(tokens), 1)


@torch.no_grad()
def top_activating_tokens(model: nn.Module, tokenizer, texts: Sequence[str], neurons: Sequence[tuple[int, int]],
                          k: int = 5, batch_size: int = 8) -> dict[tuple[int, int], list[tuple[str, float, str]]]:
    """For each (layer, neuron) of `neurons`, the `k` token positions of `texts` where its activation is largest:
    (token, activation, a few tokens of context ending at it), strongest first; padding never counts. One forward
    pass over the texts serves every neuron."""
    width = models.n_neurons(model)
    neurons = [(models.check_layer(model, layer), neuron) for layer, neuron in neurons]
    if any(not 0 <= neuron < width for _, neuron in neurons):
        raise ValueError(f"neurons must lie in [0, {width}), got {[n for _, n in neurons]}")
    found = {pair: [] for pair in neurons}  # (activation, token ids of the context ending at the token)
    captured: dict = {}

    def keep(layer: int, out: torch.Tensor) -> None:
        captured.update({(layer, n): out[..., n].float() for lay, n in neurons if lay == layer})

    with models.evaluating(model), hooks.on_layers(model, keep, "act", layers=sorted({lay for lay, _ in neurons})):
        for batch in batches(tokenizer, check_examples(texts, "texts"), batch_size, 256, models.input_device(model)):
            models.body(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            work.add("forward", batch.n_tokens)
            for pair in neurons:
                values = captured[pair].cpu().masked_fill(~batch.attention_mask.bool().cpu(), float("-inf"))
                best = values.flatten().topk(min(k, values.numel()))
                for value, flat in zip(best.values.tolist(), best.indices.tolist(), strict=True):
                    row, pos = divmod(flat, values.shape[1])
                    if value != float("-inf"):
                        found[pair].append((value, batch.input_ids[row, max(0, pos - 4):pos + 1].tolist()))
    return {pair: [(tokenizer.decode(ids[-1:]), value, tokenizer.decode(ids))
                   for value, ids in sorted(items, key=lambda item: -item[0])[:k]] for pair, items in found.items()}


def neuron_kind(ident: Identification, layer: int, neuron: int) -> str:
    """The class of a neuron in an identification: specific, related, general or other."""
    for kind in ("specific", "related", "general"):
        pairs = ident.neurons(kind)
        if bool(((pairs[:, 0] == layer) & (pairs[:, 1] == neuron)).any()):
            return kind
    return "other"


def separation(probs: torch.Tensor, tau: float) -> torch.Tensor:
    """How cleanly each neuron separates its languages from the others: the lowest activation probability
    among the languages where it is above `tau`, minus the highest among the rest; an empty group counts
    as 0. probs: [..., languages]; returns [...].

    For a language-specific neuron (above τ in one language k) this is p_k − max_{j≠k} p_j; for a general
    neuron (above τ everywhere) it is its smallest probability; a neuron above τ nowhere gets −max p.
    """
    above = probs > tau
    lowest_above = torch.where(above, probs, torch.inf).amin(-1)
    lowest_above = torch.where(above.any(-1), lowest_above, torch.zeros_like(lowest_above))
    highest_rest = torch.where(above, -torch.inf, probs).amax(-1)
    highest_rest = torch.where(above.all(-1), torch.zeros_like(highest_rest), highest_rest)
    return lowest_above - highest_rest


def rank_neurons(probs: torch.Tensor, ident: Identification, kind: str, lang: str | None = None) -> torch.Tensor:
    """The (layer, neuron) pairs of class `kind` ("specific", "related", "general"; with `lang`, those
    assigned to that language) as int64 [n, 2], best separated first (`separation` at the identification's
    τ; ties: lower layer, then lower index). probs: [layers, neurons, languages] in `ident.langs` order."""
    pairs = ident.neurons(kind, None if kind == "general" else lang)
    if not len(pairs):
        return pairs
    score = separation(probs[pairs[:, 0], pairs[:, 1]].float(), ident.tau)
    order = sorted(range(len(pairs)), key=lambda i: (-float(score[i]), int(pairs[i, 0]), int(pairs[i, 1])))
    return pairs[order]


def pick_neurons(probs: torch.Tensor, ident: Identification, lang: str) -> dict[str, tuple[int, int]]:
    """One neuron per class to look at for language `lang`: the best-separated specific and related neurons
    of `lang` and the best-separated general neuron (`rank_neurons`). A class with no neuron falls back to
    the best-separated neuron of all: for "specific" by p_lang − max of the others, for "related" among the
    related neurons of any language, for "general" by the smallest probability. `neuron_kind` tells what a
    picked neuron is."""
    k = ident.lang_index(lang)
    picks = {}
    for kind in ("specific", "related", "general"):
        ranked = rank_neurons(probs, ident, kind, lang)
        if not len(ranked) and kind == "related":
            ranked = rank_neurons(probs, ident, kind)
        if len(ranked):
            picks[kind] = (int(ranked[0, 0]), int(ranked[0, 1]))
            continue
        if kind == "specific":
            others = torch.cat([probs[..., :k], probs[..., k + 1:]], -1).amax(-1)
            score = probs[..., k] - others
        else:
            score = probs.amin(-1)
        flat = int(score.reshape(-1).argmax())
        picks[kind] = divmod(flat, probs.shape[1])
    return picks


def neuron_reports(model: nn.Module, tokenizer, probs: torch.Tensor, ident: Identification,
                   neurons: Sequence[tuple[int, int]], texts_by_lang: Mapping[str, Sequence[str]], prompt: str,
                   k: int = 5, max_new_tokens: int = 24) -> list[NeuronReport]:
    """Everything the explorer shows for each (layer, neuron) of `neurons`.

    probs: [layers, neurons, languages] in `ident.langs` order; texts_by_lang: texts searched for the tokens that
    activate each neuron most (one pass per language for all neurons); prompt: continued greedily with nothing
    and with each neuron switched off.
    """
    for layer, neuron in neurons:
        if not (0 <= layer < probs.shape[0] and 0 <= neuron < probs.shape[1]):
            raise ValueError(f"no neuron ({layer}, {neuron}): the model has {probs.shape[0]} layers of "
                             f"{probs.shape[1]} neurons")
    tops = {lang: top_activating_tokens(model, tokenizer, texts, neurons, k) for lang, texts in texts_by_lang.items()}
    (plain,) = generate_responses(model, tokenizer, [prompt], max_new_tokens, progress=False)
    reports = []
    for layer, neuron in neurons:
        with intervene.deactivate(model, intervene.single(models.n_layers(model), layer, neuron)):
            (without,) = generate_responses(model, tokenizer, [prompt], max_new_tokens, progress=False)
        reports.append(NeuronReport(layer, neuron, neuron_kind(ident, layer, neuron),
                                    dict(zip(ident.langs, probs[layer, neuron].tolist(), strict=True)), ident.tau,
                                    {lang: top[(layer, neuron)] for lang, top in tops.items()}, prompt, plain,
                                    without))
    return reports


def neuron_report(model: nn.Module, tokenizer, probs: torch.Tensor, ident: Identification, layer: int,
                  neuron: int, texts_by_lang: Mapping[str, Sequence[str]], prompt: str, k: int = 5,
                  max_new_tokens: int = 24) -> NeuronReport:
    """`neuron_reports` for one neuron."""
    return neuron_reports(model, tokenizer, probs, ident, [(layer, neuron)], texts_by_lang, prompt, k,
                          max_new_tokens)[0]


def report_figure(report: NeuronReport) -> Figure:
    """The static view of a `NeuronReport`: activation probability per language with τ, and the strongest
    activation the neuron reaches on each language's texts (its top token's). No token text: see the
    module docstring; `report_table` lists the tokens."""
    langs = [lang for lang in LANGS if lang in report.probs]
    fig, (bars, peaks) = plt.subplots(1, 2, figsize=(11, 3.4))
    colors = [lang_color(lang) for lang in langs]
    bars.bar(langs, [report.probs[lang] for lang in langs], color=colors)
    bars.axhline(report.tau, color="k", ls="--", lw=1, label=f"τ = {report.tau:.3f}")
    bars.set_ylim(0, 1.18)  # headroom above 1 for the legend, so that it never hides a bar
    bars.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    bars.set_xlabel("language")
    bars.set_ylabel("activation probability")
    bars.set_title(f"layer {report.layer}, neuron {report.neuron} ({report.kind})")
    bars.legend(loc="upper left", fontsize=8, ncol=1, frameon=False)
    peak_langs = [lang for lang in langs if report.top_tokens.get(lang)]
    values = [report.top_tokens[lang][0][1] for lang in peak_langs]
    peaks.bar(peak_langs, values, color=[lang_color(lang) for lang in peak_langs])
    peaks.axhline(0, color="k", lw=0.8)
    peaks.set_xlabel("language")
    peaks.set_ylabel("largest activation")
    peaks.set_title("its strongest activation on each language's texts", fontsize=10)
    fig.tight_layout()
    return fig


def _shown(token: str) -> str:
    """A token as a table shows it: without surrounding spaces, or quoted when it is only whitespace."""
    return token.strip() or repr(token)


def report_table(report: NeuronReport, n_tokens: int = 4) -> pd.DataFrame:
    """Per language: activation probability, the `n_tokens` tokens that activate the neuron most (with
    their activation) and the context of the strongest one."""
    rows = {}
    for lang in LANGS:
        if lang not in report.probs:
            continue
        top = report.top_tokens.get(lang, [])
        rows[lang] = {"p": round(report.probs[lang], 3),
                      "top tokens (activation)": ", ".join(f"{_shown(tok)} ({value:.2f})"
                                                           for tok, value, _ in top[:n_tokens]),
                      "context of the strongest": top[0][2].replace("\n", " ⏎ ") if top else ""}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("language")


def explorer(model: nn.Module, tokenizer, probs: torch.Tensor, ident: Identification,
             texts_by_lang: Mapping[str, Sequence[str]], prompts: Mapping[str, str], max_new_tokens: int = 24):
    """An ipywidgets explorer: choose a class and a language and step through that class's neurons, best
    separated first (`rank_neurons`), or type a layer and a neuron; "show" draws its report. prompts: one
    prompt per language for the continuation with and without the neuron (the chosen language's)."""
    import ipywidgets as widgets
    from IPython.display import display

    kind = widgets.Dropdown(options=["specific", "related", "general"], value="specific", description="class")
    lang = widgets.Dropdown(options=list(ident.langs), value=ident.langs[1], description="language")
    layer = widgets.BoundedIntText(0, min=0, max=probs.shape[0] - 1, description="layer")
    neuron = widgets.BoundedIntText(0, min=0, max=probs.shape[1] - 1, description="neuron")
    step = widgets.Button(description="next of class")
    show = widgets.Button(description="show", button_style="primary")
    status = widgets.Label()
    out = widgets.Output()
    state = {"ranked": None, "at": -1}

    def rerank(_=None):
        state["ranked"], state["at"] = rank_neurons(probs, ident, kind.value, lang.value), -1
        next_of_class()

    def next_of_class(_=None):
        ranked = state["ranked"]
        if ranked is None or not len(ranked):
            status.value = f"no {kind.value} neurons for {lang.value}"
            return
        state["at"] = (state["at"] + 1) % len(ranked)
        layer.value, neuron.value = (int(v) for v in ranked[state["at"]])
        status.value = f"{kind.value} neuron {state['at'] + 1} of {len(ranked)}"

    def render(_=None):
        out.clear_output(wait=True)
        with out:
            report = neuron_report(model, tokenizer, probs, ident, layer.value, neuron.value, texts_by_lang,
                                   prompts[lang.value], max_new_tokens=max_new_tokens)
            display(report_figure(report))
            plt.close("all")
            display(report_table(report))
            print(f"prompt ({lang.value}): …{report.prompt[-120:]!r}")
            print(f"  with the neuron:     {report.continuation!r}")
            print(f"  neuron switched off: {report.continuation_off!r}")

    kind.observe(rerank, names="value")
    lang.observe(rerank, names="value")
    step.on_click(next_of_class)
    show.on_click(render)
    rerank()
    return widgets.VBox([widgets.HBox([kind, lang, step, status]), widgets.HBox([layer, neuron, show]), out])
