"""Deactivation grids: perplexity and accuracy of every language with each language's neurons switched off (the
paper's Figs 2, 7–13).

`ppl_grid` scores every condition (no intervention, each neuron set, each set's random control) on the same
texts. It runs the baseline once per batch and keeps every block's output; a condition then starts from the
baseline's residual stream at the first layer where its set has a neuron (the layers below are unchanged by it),
and several conditions run in one forward pass, each row with its own neurons switched off. The numbers equal
those of scoring each condition separately under `lnlib.intervene.deactivate` (`bench/ppl.py` checks both, and
the speed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from lnlib import hooks, intervene, models, work
from lnlib.batching import batches, check_examples, check_size, encode_all
from lnlib.config import progress_bar
from lnlib.evaluate import TextNLL, logit_head, scatter_nll, target_logprobs
from lnlib.generation import generate_responses
from lnlib.langid import detect_language, is_correct_number
from lnlib.protocols import mathoctopus_prompt

RESERVED = "none"


@dataclass(frozen=True, eq=False)
class PPLGrid:
    """Perplexity of each evaluated language with each neuron set switched off.

    nll: (condition, target language) -> `TextNLL`; condition "none" (no intervention), a set's name, or
    "random:<name>" for that set's random control. names: the switched-off sets, in row order; langs: the
    evaluated languages (columns); sizes: neurons in each set; seed: the control's base seed.
    Tables come for either aggregation ("official" or "token", see `TextNLL.perplexity`).
    """

    nll: dict
    names: tuple[str, ...]
    langs: tuple[str, ...]
    sizes: dict
    seed: int | None = None

    def _table(self, rows: list[str], labels: list[str], aggregation: str) -> pd.DataFrame:
        values = [[self.nll[(row, lang)].perplexity(aggregation) if (row, lang) in self.nll else float("nan")
                   for lang in self.langs] for row in rows]
        return pd.DataFrame(values, index=pd.Index(labels, name="switched off"),
                            columns=pd.Index(self.langs, name="evaluated"))

    def ppl(self, aggregation: str = "official", control: bool = False) -> pd.DataFrame:
        """Perplexity table: rows "none" and each set (or, with control=True, each set's random control,
        NaN where it was not evaluated), columns the evaluated languages."""
        if control:
            return self._table([f"random:{name}" for name in self.names], list(self.names), aggregation)
        return self._table([RESERVED, *self.names], [RESERVED, *self.names], aggregation)

    def change(self, aggregation: str = "official", relative: bool = False, control: bool = False) -> pd.DataFrame:
        """PPL(set switched off) − PPL(none), per set and evaluated language; relative=True divides by
        PPL(none). control=True: the same for the random controls."""
        base = self.ppl(aggregation).loc[RESERVED]
        delta = self.ppl(aggregation, control).loc[list(self.names)] - base
        return delta / base if relative else delta

    def diagonal(self, aggregation: str = "official", control: bool = False) -> pd.Series:
        """The change where the switched-off set's name is the evaluated language (a Series by language)."""
        change = self.change(aggregation, control=control)
        return pd.Series({n: change.loc[n, n] for n in self.names if n in self.langs}, name="diagonal")

    def off_diagonal(self, aggregation: str = "official") -> pd.Series:
        """The changes of every (set, evaluated language) pair whose names differ, indexed by (set, language)."""
        change = self.change(aggregation)
        return pd.Series({(n, t): change.loc[n, t] for n in self.names for t in self.langs if n != t},
                         name="off-diagonal")

    def summary(self, aggregation: str = "official", statistic: str = "mean") -> pd.DataFrame:
        """Per switched-off language: neurons, ΔPPL on its own language (diagonal), the `statistic` ("mean" or
        "median") of the ΔPPL on the other languages (off-diagonal), and the same two for the random control
        (NaN where it was not evaluated)."""
        if statistic not in ("mean", "median"):
            raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
        change, rand = self.change(aggregation), self.change(aggregation, control=True)
        rows = {}
        for name in self.names:
            others = [lang for lang in self.langs if lang != name]
            rows[name] = {"neurons": self.sizes[name],
                          "diagonal": change.loc[name, name] if name in self.langs else float("nan"),
                          f"off-diagonal {statistic}": getattr(change.loc[name, others], statistic)(),
                          "random: diagonal": rand.loc[name, name] if name in self.langs else float("nan"),
                          f"random: off-diagonal {statistic}": getattr(rand.loc[name, others], statistic)()}
        return pd.DataFrame(rows).T.rename_axis("switched off")

    def resample(self, index: Mapping[str, torch.Tensor]) -> PPLGrid:
        """The grid over a resample of each language's texts (`index`: language -> text positions, repeats
        allowed), the same resample in every condition: a bootstrap replicate."""
        nll = {(c, lang): value.subset(index[lang]) for (c, lang), value in self.nll.items()}
        return PPLGrid(nll, self.names, self.langs, self.sizes, self.seed)

    def n_texts(self, lang: str) -> int:
        return len(self.nll[(RESERVED, lang)].n_tokens)


def _tile_rows(output, rows: torch.Tensor):
    """A block's output (a tensor or a tuple of them) at batch rows `rows` (repeats allowed)."""
    if isinstance(output, tuple):
        return tuple(x.index_select(0, rows.to(x.device)) if isinstance(x, torch.Tensor) else x for x in output)
    return output.index_select(0, rows.to(output.device))


def _first_layer(neurons: list[torch.Tensor] | None) -> int | None:
    layers = [i for i, idx in enumerate(neurons or []) if len(idx)]
    return layers[0] if layers else None


@torch.no_grad()
def ppl_grid(model: nn.Module, tokenizer, texts_by_lang: Mapping[str, Sequence], neuron_sets: Mapping[str, Sequence],
             control: bool | str = False, seed: int = 0, batch_size: int = 8, max_length: int = 512,
             chunk_positions: int = 256, rows_per_pass: int | None = None, progress: bool = True) -> PPLGrid:
    """Perplexity of every language of `texts_by_lang` (lang -> texts or (prompt, response) pairs, see
    `lnlib.evaluate.text_nll`) with no intervention (row "none") and with each set of `neuron_sets`
    (name -> per-layer neuron indices, usually a language code -> that language's neurons) switched off.

    control: False; True or "all" adds, per set, a random control of the same size in every layer
    (`lnlib.intervene.random_like`, seed `seed` + the set's row number) evaluated on every language;
    "diagonal" evaluates each control only on the language named like its set (cheaper: one cell per row).
    rows_per_pass: (condition, text) rows run in one forward pass (default 2 × batch_size).
    """
    if control not in (False, True, "all", "diagonal"):
        raise ValueError(f"control must be False, True, 'all' or 'diagonal', got {control!r}")
    if not isinstance(texts_by_lang, Mapping) or not texts_by_lang:
        raise ValueError("texts_by_lang must map at least one language to a list of texts")
    texts_by_lang = {lang: check_examples(texts, f"texts of {lang!r}") for lang, texts in texts_by_lang.items()}
    if not isinstance(neuron_sets, Mapping):
        raise ValueError("neuron_sets must map a name to a per-layer neuron set, e.g. {'th': ident.mask()[8]}")
    if RESERVED in neuron_sets or any(str(name).startswith("random:") for name in neuron_sets):
        raise ValueError("'none' and names starting with 'random:' are reserved for the baseline and controls")
    rows_per_pass = check_size("rows_per_pass", rows_per_pass or 2 * batch_size)
    width, depth = models.n_neurons(model), models.n_layers(model)
    checked = {name: intervene.check_neurons(neurons, depth, width) for name, neurons in neuron_sets.items()}
    langs = list(texts_by_lang)
    conditions = [(RESERVED, None, langs)] + [(name, neurons, langs) for name, neurons in checked.items()]
    if control:
        for row, (name, neurons) in enumerate(checked.items()):
            targets = langs if control in (True, "all") else [lang for lang in langs if lang == name]
            if targets:
                conditions.append((f"random:{name}", intervene.random_like(neurons, width, seed=seed + row), targets))

    texts = [text for lang in langs for text in texts_by_lang[lang]]
    lang_of = [lang for lang in langs for _ in texts_by_lang[lang]]
    encoded = encode_all(tokenizer, texts, check_size("max_length", max_length))
    nll_sum = {c: torch.zeros(len(texts), dtype=torch.float64) for c, _, _ in conditions}
    n_tok = torch.zeros(len(texts), dtype=torch.int64)
    head, runner = logit_head(model), models.body(model)
    # per condition: its first changed layer and, per layer, a keep mask (0 where a neuron is switched off)
    first = {c: _first_layer(neurons) for c, neurons, _ in conditions}
    keep = {}
    for c, neurons, _ in conditions:
        if first[c] is not None:
            keep[c] = torch.ones(depth, width)
            for layer, idx in enumerate(neurons):
                keep[c][layer, idx] = 0.0

    with models.evaluating(model):
        for batch in progress_bar(batches(tokenizer, texts, batch_size, max_length, models.input_device(model),
                                          encoded), "perplexity grid", progress):
            stored = {}
            with hooks.on_layers(model, lambda layer, out: stored.__setitem__(layer, out), "block", raw=True):
                hidden = runner(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
            rows, logp = target_logprobs(model, batch, head, chunk_positions, hidden)
            nll, tokens = scatter_nll(len(texts), batch, rows, logp)
            n_tok += tokens
            work.add("forward", batch.n_tokens)
            jobs = []  # (condition, batch row) pairs that need a pass of their own
            for c, _, targets in conditions:
                rows_of_c = [r for r, i in enumerate(batch.index) if lang_of[i] in targets]
                if first[c] is None:  # no neuron switched off: the baseline's numbers
                    for r in rows_of_c:
                        nll_sum[c][batch.index[r]] += nll[batch.index[r]]
                else:
                    jobs += [(c, r) for r in rows_of_c]
            jobs.sort(key=lambda job: first[job[0]])
            for start in range(0, len(jobs), rows_per_pass):
                _run_pass(model, runner, head, batch, stored, jobs[start:start + rows_per_pass], first, keep,
                          nll_sum, chunk_positions)
    grid_nll = {}
    for c, _, targets in conditions:
        for lang in targets:
            index = torch.tensor([i for i, owner in enumerate(lang_of) if owner == lang])
            grid_nll[(c, lang)] = TextNLL(nll_sum[c][index], n_tok[index])
    sizes = {name: intervene.n_neurons_in(neurons) for name, neurons in checked.items()}
    return PPLGrid(grid_nll, tuple(checked), tuple(langs), sizes, seed if control else None)


def _run_pass(model, runner, head, batch, stored, jobs, first, keep, nll_sum, chunk_positions) -> None:
    """One forward pass over (condition, batch row) jobs: blocks below the jobs' first changed layer replay the
    baseline's outputs; above it, each row's neurons are switched off by its condition's keep mask."""
    start = min(first[c] for c, _ in jobs)
    rows = torch.tensor([r for _, r in jobs])
    masks = {}

    def switch_off(layer: int, out: torch.Tensor) -> torch.Tensor:
        if layer not in masks:
            masks[layer] = torch.stack([keep[c][layer] for c, _ in jobs]).to(out.device, out.dtype).unsqueeze(1)
        return out * masks[layer]

    sub = type(batch)(batch.input_ids[rows], batch.attention_mask[rows], batch.target_mask[rows],
                      [batch.index[r] for r in rows.tolist()])
    replay = {layer: _tile_rows(stored[layer], rows) for layer in range(start)}
    changed = sorted({layer for c, _ in jobs for layer in range(start, len(keep[c])) if (keep[c][layer] == 0).any()})
    with hooks.skip_blocks(model, replay), hooks.on_layers(model, switch_off, "act", layers=changed, edits=True):
        hidden = runner(input_ids=sub.input_ids, attention_mask=sub.attention_mask).last_hidden_state
    positions, logp = target_logprobs(model, sub, head, chunk_positions, hidden)
    per_row = torch.zeros(len(jobs), dtype=torch.float64).index_add_(0, positions.cpu(), -logp.double().cpu())
    for (c, _), text, value in zip(jobs, sub.index, per_row.tolist(), strict=True):
        nll_sum[c][text] += value
    work.add("forward", sub.n_tokens)


# ----------------------------------------------------------------------------------------------
# Accuracy under deactivation (the paper's Figs 2, 7–9)


@dataclass(frozen=True, eq=False)
class AccuracyGrid:
    """Answers generated with each neuron set switched off, and whether each is right.

    outputs: (condition, language) -> generated texts; correct: -> bool [n] (last number within tolerance);
    in_language: -> bool [n] (detected language is the question's). condition "none" or a set's name.
    """

    outputs: dict
    correct: dict
    in_language: dict
    names: tuple[str, ...]
    langs: tuple[str, ...]

    def hits(self, condition: str, lang: str, require_language: bool = True) -> torch.Tensor:
        """bool [n]: the answers that count (correct, and in the question's language unless not required)."""
        ok = self.correct[(condition, lang)]
        return ok & self.in_language[(condition, lang)] if require_language else ok

    def accuracy(self, require_language: bool = True) -> pd.DataFrame:
        """Share of answers that are correct (and, by default, in the question's language): rows "none" and
        each set, columns the evaluated languages."""
        rows = [RESERVED, *self.names]
        values = [[float(self.hits(r, lang, require_language).float().mean()) for lang in self.langs] for r in rows]
        return pd.DataFrame(values, index=pd.Index(rows, name="switched off"),
                            columns=pd.Index(self.langs, name="evaluated"))

    def change(self, require_language: bool = True) -> pd.DataFrame:
        """Accuracy with a set switched off minus accuracy with none (the paper's Fig. 2 cells)."""
        table = self.accuracy(require_language)
        return table.loc[list(self.names)] - table.loc[RESERVED]


def accuracy_grid(model: nn.Module, tokenizer, problems_by_lang: Mapping[str, Sequence], neuron_sets: Mapping,
                  prompt=mathoctopus_prompt, max_new_tokens: int = 256, batch_size: int = 8, stop=(),
                  tolerance: float = 1e-2, generate=generate_responses, progress: bool = True) -> AccuracyGrid:
    """Greedy answers to `problems_by_lang` (lang -> `lnlib.data.Problem`s) with no intervention and with
    each set of `neuron_sets` switched off; an answer counts when its last number is within `tolerance` of
    the gold answer and `lnlib.langid.detect_language` finds the question's language (the paper's "correct and
    in the correct language"). prompt: Problem -> text; generate: the generation function (tests pass a stub)."""
    conditions = [(RESERVED, None)] + list(neuron_sets.items())
    outputs, correct, in_language = {}, {}, {}
    jobs = [(c, n, lang) for c, n in conditions for lang in problems_by_lang]
    for condition, neurons, lang in progress_bar(jobs, "accuracy grid", progress):
        problems = list(problems_by_lang[lang])
        prompts = [prompt(p) for p in problems]
        options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, stop=stop, progress=False)
        if neurons is None:
            texts = generate(model, tokenizer, prompts, **options)
        else:
            with intervene.deactivate(model, neurons):
                texts = generate(model, tokenizer, prompts, **options)
        outputs[(condition, lang)] = texts
        correct[(condition, lang)] = torch.tensor([is_correct_number(t, p.answer, tolerance)
                                                   for t, p in zip(texts, problems, strict=True)], dtype=torch.bool)
        in_language[(condition, lang)] = torch.tensor([detect_language(t) == p.lang
                                                       for t, p in zip(texts, problems, strict=True)],
                                                      dtype=torch.bool)
    return AccuracyGrid(outputs, correct, in_language, tuple(neuron_sets), tuple(problems_by_lang))
