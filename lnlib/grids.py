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

from lnlib import hooks, intervene, models, stats, work
from lnlib.batching import batches, check_encoded, check_examples, check_size, encode_all
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
    "random:<name>#<i>" for that set's i-th random control. names: the switched-off sets, in row order; langs:
    the evaluated languages (columns); sizes: neurons in each set; seed: the controls' base seed; controls: random
    controls per set (0: none). Tables come for either aggregation ("official" or "token", see
    `TextNLL.perplexity`); a control's table is the mean over its random sets.
    """

    nll: dict
    names: tuple[str, ...]
    langs: tuple[str, ...]
    sizes: dict
    seed: int | None = None
    controls: int = 0

    def _value(self, row: str, lang: str, aggregation: str) -> float:
        return self.nll[(row, lang)].perplexity(aggregation) if (row, lang) in self.nll else float("nan")

    def _table(self, rows: list[str], labels: list[str], aggregation: str) -> pd.DataFrame:
        values = [[self._value(row, lang, aggregation) for lang in self.langs] for row in rows]
        return pd.DataFrame(values, index=pd.Index(labels, name="switched off"),
                            columns=pd.Index(self.langs, name="evaluated"))

    def ppl(self, aggregation: str = "official", control: bool = False) -> pd.DataFrame:
        """Perplexity table: rows "none" and each set (or, with control=True, the mean over each set's random
        controls, NaN where none was evaluated), columns the evaluated languages."""
        if control:
            tables = [self._table([f"random:{name}#{i}" for name in self.names], list(self.names), aggregation)
                      for i in range(self.controls)]
            return sum(tables[1:], tables[0]) / len(tables) if tables else self._table([], [], aggregation)
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

    def diagonal_percent(self, aggregation: str = "official") -> dict[str, float]:
        """The diagonal change as % of the perplexity with nothing switched off: {language: %}."""
        return (100 * self.diagonal(aggregation) / self.ppl(aggregation).loc[RESERVED]).to_dict()

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

    def headline(self, aggregation: str = "official") -> dict[str, float]:
        """The numbers a deactivation grid is read by: medians over languages of the diagonal change, of the
        off-diagonal changes and of the random controls' diagonal change; the median over languages of diagonal
        minus control; and in how many columns the largest increase comes from the language's own set."""
        change, diagonal = self.change(aggregation), self.diagonal(aggregation)
        out = {"diagonal": float(diagonal.median()), "off-diagonal": float(self.off_diagonal(aggregation).median()),
               "own column largest": int(sum(change[t].idxmax() == t for t in self.langs if t in self.names))}
        if self.controls:
            control = self.diagonal(aggregation, control=True)
            out["random diagonal"] = float(control.median())
            out["diagonal minus random"] = float((diagonal - control).median())
        return out

    def pairs(self, aggregation: str = "official") -> pd.DataFrame:
        """One row per off-diagonal (set k, evaluated t) pair: the change, the size of set k, and how fragile t is
        (the median change of t under every other set): what a claim about off-diagonal damage must control for."""
        change = self.change(aggregation)
        rows = []
        for k in self.names:
            for t in self.langs:
                if k != t:
                    others = [j for j in self.names if j not in (k, t)]
                    rows.append({"switched off": k, "evaluated": t, "change": change.loc[k, t],
                                 "set size": self.sizes[k], "target fragility": change.loc[others, t].median()})
        return pd.DataFrame(rows)

    def sharing_correlation(self, shared: torch.Tensor, langs: Sequence[str],
                            aggregation: str = "official") -> dict[str, float]:
        """Does off-diagonal damage follow shared neurons? Over the off-diagonal pairs (`pairs`), the rank
        correlation (`lnlib.stats.partial_spearman`) between the neurons the two languages share and the change,
        and the same with the ranks of the target's fragility and the set's size removed from both ("partial rank
        correlation"). shared: int [K, K] over `langs` (e.g. `Identification.coassignment()`)."""
        pairs = self.pairs(aggregation)
        index = {lang: i for i, lang in enumerate(langs)}
        counts = [int(shared[index[k], index[t]]) for k, t in zip(pairs["switched off"], pairs["evaluated"],
                                                                  strict=True)]
        return {"rank correlation": stats.partial_spearman(counts, pairs["change"], []),
                "partial rank correlation": stats.partial_spearman(
                    counts, pairs["change"], [pairs["target fragility"], pairs["set size"]])}

    def rank_correlation(self, reported: Mapping[str, float], aggregation: str = "official") -> float:
        """Rank correlation (`lnlib.stats.rank_correlation`) of the diagonal with a reported one (language -> value
        for every language of the diagonal, e.g. `lnlib.paper.diagonal`)."""
        return _rank_correlation(self.diagonal(aggregation), reported)

    def claims(self, reported: Mapping[str, float], figure: str, aggregation: str = "official") -> dict[str, float]:
        """The paper's statements about a deactivation grid as numbers whose sign decides them (`claim_signs`): the
        median diagonal change minus the median off-diagonal change (a language's own neurons hurt it most),
        English's diagonal change minus the median of the other languages' (English is the least affected), and
        the rank correlation of the diagonal with the paper's (`reported`, transcribed from `figure`)."""
        diagonal = self.diagonal(aggregation)
        return {"diagonal minus off-diagonal": float(diagonal.median() - self.off_diagonal(aggregation).median()),
                "English minus the median of the others": float(diagonal["en"] - diagonal.drop("en").median()),
                f"rank correlation with {figure}": _rank_correlation(diagonal, reported)}

    def bootstrap(self, statistic, n: int = 1000, seed: int = 0):
        """`lnlib.stats.bootstrap` of statistic(grid) over the evaluated texts, resampled within each language and
        the same in every condition (paired)."""
        return stats.bootstrap(lambda index: statistic(self if index is None else self.resample(index)),
                               {lang: self.n_texts(lang) for lang in self.langs}, n=n, seed=seed)

    def resample(self, index: Mapping[str, torch.Tensor]) -> PPLGrid:
        """The grid over a resample of each language's texts (`index`: language -> text positions, repeats
        allowed), the same resample in every condition: a bootstrap replicate."""
        nll = {(c, lang): value.subset(index[lang]) for (c, lang), value in self.nll.items()}
        return PPLGrid(nll, self.names, self.langs, self.sizes, self.seed, self.controls)

    def n_texts(self, lang: str) -> int:
        return len(self.nll[(RESERVED, lang)].n_tokens)


def _rank_correlation(values: pd.Series, reported: Mapping[str, float]) -> float:
    return stats.rank_correlation(values.to_numpy(), [reported[lang] for lang in values.index])


def claim_signs(figure: str) -> dict[str, int]:
    """The paper's statements about a deactivation grid, named by the statistic that tests each (`against_paper`,
    with the rank correlation named after `figure`), and the sign the paper expects of it."""
    return {"diagonal minus off-diagonal": +1, "own minus random (median)": +1,
            "English minus the median of the others": -1, f"rank correlation with {figure}": +1}


@dataclass(frozen=True)
class AgainstPaper:
    """Deactivation grids set beside the paper's diagonal (`against_paper`).

    estimates: grid name -> statistic -> `lnlib.stats.Estimate` (the paper's median diagonal change: a float);
    figure: the paper's figure the grids are read against, e.g. "Fig. 10".
    """

    estimates: dict
    figure: str

    def __getitem__(self, name: str) -> dict:
        """One grid's numbers: statistic -> `Estimate` (or float)."""
        return self.estimates[name]

    def verdicts(self) -> pd.DataFrame:
        """Per statement of the paper (`claim_signs`, rows) and grid (columns): "agrees", "disagrees" or
        "inconclusive" (`lnlib.stats.verdict`: the interval must exclude zero)."""
        signs = claim_signs(self.figure)
        return pd.DataFrame({name: {claim: stats.verdict(row[claim], sign) for claim, sign in signs.items()}
                             for name, row in self.estimates.items()})

    def verdict_list(self, claim: str) -> str:
        """One statement's verdicts on every grid, as prose lists them: "agrees (a), inconclusive (b)"."""
        return ", ".join(f"{verdict} ({name})" for name, verdict in self.verdicts().loc[claim].items())

    def table(self) -> pd.DataFrame:
        """The estimates with their intervals (two decimals) above the verdicts, one column per grid."""
        shown = pd.DataFrame({name: {k: f"{v:.2f}" for k, v in row.items()} for name, row in self.estimates.items()})
        return pd.concat({"estimate (95 % interval)": shown, "verdict": self.verdicts()})


def against_paper(results: Mapping[str, tuple[PPLGrid, Mapping[str, stats.Estimate]]],
                  reported: Mapping[str, Mapping[str, float]], figure: str, n: int = 1000,
                  seed: int = 0) -> AgainstPaper:
    """Read deactivation grids against the paper. results: name (a setting) -> (grid, its bootstrapped `headline`,
    `grid.bootstrap(PPLGrid.headline)`); reported: name -> the paper's diagonal for it (language -> value, from
    `figure`). Per grid: the headline's medians (diagonal, off-diagonal, random diagonal, own minus random), the
    paper's statements (`PPLGrid.claims`, bootstrapped over the grid's texts with `n` and `seed`) and the median of
    the paper's diagonal."""
    estimates = {}
    for name, (grid, head) in results.items():
        claims = grid.bootstrap(lambda g, name=name: g.claims(reported[name], figure), n=n, seed=seed)
        estimates[name] = {"diagonal (median)": head["diagonal"], "off-diagonal (median)": head["off-diagonal"],
                           "random: diagonal (median)": head["random diagonal"],
                           "own minus random (median)": head["diagonal minus random"], **claims,
                           f"paper, {figure}: diagonal (median)": float(pd.Series(reported[name]).median())}
    return AgainstPaper(estimates, figure)


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
             control: bool | str = False, seed: int = 0, controls: int = 1, cells: str = "all", batch_size: int = 8,
             max_length: int = 512, chunk_positions: int = 256, rows_per_pass: int | None = None,
             progress: bool = True) -> PPLGrid:
    """Perplexity of every language of `texts_by_lang` (lang -> texts or (prompt, response) pairs, see
    `lnlib.evaluate.text_nll`) with no intervention (row "none") and with each set of `neuron_sets`
    (name -> per-layer neuron indices, usually a language code -> that language's neurons) switched off.

    control: False; True or "all" adds, per set, `controls` random sets of the same size in every layer
    (`lnlib.intervene.random_like`, seeds from `seed`, different for every set and control) evaluated on every
    language; "diagonal" evaluates each control only on the language named like its set (cheaper: one cell per
    row).
    cells: "all" evaluates every set on every language; "diagonal" only on the language named like the set (the
    paper's Fig. 6 reports only the diagonal). rows_per_pass: (condition, text) rows run in one forward pass
    (default 2 × batch_size).
    """
    if control not in (False, True, "all", "diagonal"):
        raise ValueError(f"control must be False, True, 'all' or 'diagonal', got {control!r}")
    if cells not in ("all", "diagonal"):
        raise ValueError(f"cells must be 'all' or 'diagonal', got {cells!r}")
    if not isinstance(texts_by_lang, Mapping) or not texts_by_lang:
        raise ValueError("texts_by_lang must map at least one language to a list of texts")
    texts_by_lang = {lang: check_examples(texts, f"texts of {lang!r}") for lang, texts in texts_by_lang.items()}
    if not isinstance(neuron_sets, Mapping):
        raise ValueError("neuron_sets must map a name to a per-layer neuron set, e.g. {'th': ident.mask()[8]}")
    if RESERVED in neuron_sets or any(str(name).startswith("random:") for name in neuron_sets):
        raise ValueError("'none' and names starting with 'random:' are reserved for the baseline and controls")
    check_size("batch_size", batch_size)
    rows_per_pass = check_size("rows_per_pass", 2 * batch_size if rows_per_pass is None else rows_per_pass)
    width, depth = models.n_neurons(model), models.n_layers(model)
    checked = {name: intervene.check_neurons(neurons, depth, width) for name, neurons in neuron_sets.items()}
    langs = list(texts_by_lang)
    unnamed = [str(name) for name in checked if name not in texts_by_lang]
    if cells == "diagonal" and unnamed:
        raise ValueError(f"cells='diagonal' evaluates each set on the language it is named after, but "
                         f"{', '.join(unnamed)} name(s) no language of texts_by_lang ({', '.join(langs)}); name the "
                         "sets by language or use cells='all'")
    conditions = [(RESERVED, None, langs)] + [(name, neurons, langs if cells == "all" else [name])
                                              for name, neurons in checked.items()]
    if control:
        check_size("controls", controls)
        for row, (name, neurons) in enumerate(checked.items()):
            targets = langs if control in (True, "all") else [lang for lang in langs if lang == name]
            for i in range(controls if targets else 0):
                random_set = intervene.random_like(neurons, width, seed=seed + row + 1000 * i)
                conditions.append((f"random:{name}#{i}", random_set, targets))

    texts = [text for lang in langs for text in texts_by_lang[lang]]
    lang_of = [lang for lang in langs for _ in texts_by_lang[lang]]
    encoded = check_encoded(model, encode_all(tokenizer, texts, check_size("max_length", max_length)))
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
            with hooks.on_layers(model, lambda layer, out, stored=stored: stored.__setitem__(layer, out), "block",
                                 raw=True):
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
    return PPLGrid(grid_nll, tuple(checked), tuple(langs), sizes, seed if control else None,
                   controls if control else 0)


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


def _generated(generate, model: nn.Module, tokenizer, prompts, neurons, **options) -> list[str]:
    """`generate`'s outputs with `neurons` switched off (None: the intact model)."""
    if neurons is None:
        return generate(model, tokenizer, prompts, **options)
    with intervene.deactivate(model, neurons):
        return generate(model, tokenizer, prompts, **options)


def accuracy_grid(model: nn.Module, tokenizer, problems_by_lang: Mapping[str, Sequence], neuron_sets: Mapping,
                  prompt=mathoctopus_prompt, max_new_tokens: int = 256, batch_size: int = 8, stop=(),
                  tolerance: float = 1e-2, generate=generate_responses, progress: bool = True) -> AccuracyGrid:
    """Greedy answers to `problems_by_lang` (lang -> `lnlib.data.Problem` objects) with no intervention and with
    each set of `neuron_sets` switched off; an answer counts when its last number is within `tolerance` of
    the gold answer and `lnlib.langid.detect_language` finds the question's language (the paper's "correct and
    in the correct language"). prompt: Problem -> text; generate: the generation function (tests pass a stub)."""
    if not isinstance(problems_by_lang, Mapping) or not isinstance(neuron_sets, Mapping):
        raise ValueError("problems_by_lang must map each language to its problems and neuron_sets each name to a "
                         "per-layer neuron set, e.g. {'th': ident.mask()[8]}")
    if RESERVED in neuron_sets:
        raise ValueError("'none' is reserved for the baseline (no neuron switched off); give that set another name")
    for neurons in neuron_sets.values():  # a bad set fails now, not after the baseline's generation
        intervene.check_neurons(neurons, models.n_layers(model), models.n_neurons(model))
    conditions = [(RESERVED, None)] + list(neuron_sets.items())
    outputs, correct, in_language = {}, {}, {}
    jobs = [(c, n, lang) for c, n in conditions for lang in problems_by_lang]
    for condition, neurons, lang in progress_bar(jobs, "accuracy grid", progress):
        problems = list(problems_by_lang[lang])
        prompts = [prompt(p) for p in problems]
        options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, stop=stop, progress=False)
        texts = _generated(generate, model, tokenizer, prompts, neurons, **options)
        outputs[(condition, lang)] = texts
        correct[(condition, lang)] = torch.tensor([is_correct_number(t, p.answer, tolerance)
                                                   for t, p in zip(texts, problems, strict=True)], dtype=torch.bool)
        in_language[(condition, lang)] = torch.tensor([detect_language(t) == p.lang
                                                       for t, p in zip(texts, problems, strict=True)],
                                                      dtype=torch.bool)
    return AccuracyGrid(outputs, correct, in_language, tuple(neuron_sets), tuple(problems_by_lang))


# ----------------------------------------------------------------------------------------------
# Which language a continuation comes out in


@dataclass(frozen=True, eq=False)
class ContinuationLanguages:
    """Greedy continuations of each language's prompts with nothing, the language's own neurons ("own") or a
    random set of the same size per layer ("random") switched off, and the language each was detected in.

    texts, detected: (condition, language) -> list over the prompts; langs: the prompts' languages.
    """

    texts: dict
    detected: dict
    langs: tuple[str, ...]

    def rate(self, condition: str, lang: str | None = None, of: str | None = None) -> stats.Estimate:
        """The share of continuations detected in their prompt's language (or, with `of`, in language `of`),
        over one language's prompts or all, with a Wilson interval."""
        langs = [lang] if lang else list(self.langs)
        hits = [d == (of or k) for k in langs for d in self.detected[(condition, k)]]
        return stats.proportion(sum(hits), len(hits))

    def rates(self, condition: str) -> dict[str, stats.Estimate]:
        """Per language, `rate(condition, lang)`: the share in the prompt's language with its interval."""
        return {k: self.rate(condition, k) for k in self.langs}

    def departures(self, condition: str, to: str = "en") -> tuple[int, int]:
        """Over the prompts of every language but `to`: how many continuations under `condition` are detected in
        `to`, and how many left their prompt's language (detected in another one; no letters is not leaving)."""
        detected = [(k, d) for k in self.langs if k != to for d in self.detected[(condition, k)]]
        return sum(d == to for _, d in detected), sum(d not in (k, None) for k, d in detected)

    def table(self) -> pd.DataFrame:
        """Per language and condition, the share of continuations in the prompt's language."""
        return pd.DataFrame({c: {k: self.rate(c, k).value for k in self.langs} for c in ("none", "own", "random")})


def continuation_languages(model: nn.Module, tokenizer, prompts_by_lang: Mapping[str, Sequence[str]],
                           neuron_sets: Mapping[str, Sequence], max_new_tokens: int = 24, seed: int = 0,
                           batch_size: int = 8, progress: bool = True) -> ContinuationLanguages:
    """Continue every language's prompts greedily with nothing, its own set (`neuron_sets[lang]`) and a random
    set of the same size in every layer (`lnlib.intervene.random_like`, seeded) switched off, and detect the
    language of each continuation (`lnlib.langid`; None when it has no letters)."""
    width = models.n_neurons(model)
    texts, detected = {}, {}
    jobs = [(c, lang) for lang in prompts_by_lang for c in ("none", "own", "random")]
    for row, (condition, lang) in enumerate(progress_bar(jobs, "continuations", progress)):
        prompts = list(prompts_by_lang[lang])
        neurons = None if condition == "none" else neuron_sets[lang]
        if condition == "random":
            neurons = intervene.random_like(neurons, width, seed=seed + row)
        options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False)
        out = _generated(generate_responses, model, tokenizer, prompts, neurons, **options)
        texts[(condition, lang)] = out
        detected[(condition, lang)] = [detect_language(t) for t in out]
    return ContinuationLanguages(texts, detected, tuple(prompts_by_lang))
