"""Controls: are language neurons real? Tests of an identification that a sceptical reader would ask for.

- `stability`: how many neurons of each class survive when the counted texts are resampled (bootstrap), or split
  into disjoint halves, per language.
- `sensitivity`: how the classes and the four stages move with the selection rate and the percentile bar.
- `released_resample`: what can be resampled in the paper's released statistics (they are totals: only tokens,
  drawn as if independent, which understates the spread).
- `matched_deactivation`: how much of a language's deactivation effect random neurons reproduce, matched per layer
  and matched per layer and in firing rate.
- `hygiene`: which counted texts are detected as another language, how many of their tokens are numerals, and
  whether removing the texts that look foreign (`foreign_texts`, `without_flagged`) changes the neurons.
- Steering: `diffmean_direction` (mean residual stream of one language's texts minus another's at one layer) and
  `steered_continuations`, which forces the output language by switching neurons off, amplifying them, or adding
  the direction, and scores each continuation's language and its perplexity under the unmodified model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from lnlib import compare, grids, intervene, langid, models, stages, stats
from lnlib.counts import ActivationCounts
from lnlib.data import load_released_counts
from lnlib.evaluate import mean_hidden_states, text_nll
from lnlib.generation import generate_responses
from lnlib.pipeline import NeuronStudy, Settings, from_counts
from lnlib.protocols import Source

KINDS = ("specific", "related")


def _overlaps(reference, other) -> dict:
    """Per language and kind, |A ∩ B| / |A| of that language's neurons, A the reference's."""
    return {(lang, kind): compare.overlap_ratio(reference, other, kind, lang=lang)
            for lang in reference.langs for kind in KINDS}


def stability(study: NeuronStudy, n: int = 50, seed: int = 0) -> pd.DataFrame:
    """Per language and kind: the share of the study's neurons found again when the texts are resampled (mean over
    `n` bootstrap resamples, with a 95 % interval), and when the texts are split into two disjoint halves (the
    overlap of the halves' identifications, the first half as reference; NaN where a source has fewer than two
    groups of texts in a language). Each identification uses the study's settings, AutoSweep included."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a whole number of resamples, at least 1; got {n!r}")
    if study.texts is None:
        raise ValueError("stability resamples the texts, but this study has none (released totals or a study "
                         "rebuilt from counts); for the released statistics use controls.released_resample")
    generator = torch.Generator().manual_seed(seed)
    boot = [_overlaps(study.ident, study.settings.run(study.resampled_probs(generator), study.langs))
            for _ in range(n)]
    fewest = min(by_lang[lang].n_groups for by_lang in study.by_source.values() for lang in study.langs)
    split = dict.fromkeys(boot[0], float("nan"))  # halves need two groups of texts per source and language
    if fewest >= 2:
        halves = []
        for part in (0, 1):
            groups = {(label, lang): torch.arange(part, by_lang[lang].n_groups, 2)
                      for label, by_lang in study.by_source.items() for lang in study.langs}
            halves.append(study.settings.run(study.probs_of(groups), study.langs))
        split = _overlaps(halves[0], halves[1])
    rows = {}
    for key in boot[0]:
        e = stats.estimate(float(torch.tensor([b[key] for b in boot]).nanmean()), [b[key] for b in boot])
        rows[key] = {"neurons": len(study.ident.neurons(key[1], key[0])), "kept under resampling": e.value,
                     "95 % interval": f"{e.lo:.2f} to {e.hi:.2f}", "kept between halves": split[key]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["language", "kind"])


def sensitivity(study: NeuronStudy, rates: Sequence[float] = (0.005, 0.01, 0.02, 0.05),
                bars: Sequence[float] = (0.9, 0.95, 0.975)) -> pd.DataFrame:
    """Per (rate, bar): λ*, the class totals (`lnlib.compare.totals`), the share of the default identification's
    language neurons kept, and the four stages the rule finds."""
    rows = {}
    base = {tuple(p) for p in study.ident.neurons("language").tolist()}
    for rate in rates:
        for bar in bars:
            ident = study.settings.replace(rate=rate, bar=bar).run(study.probs, study.langs)
            kept = {tuple(p) for p in ident.neurons("language").tolist()}
            rows[(rate, bar)] = {"λ*": ident.lam, **compare.totals(ident),
                                 "language neurons kept": len(base & kept) / max(len(base), 1),
                                 "stages": stages.stages_of(ident).describe()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["rate", "bar"])


def released_resample(dataset: str = "mgsm", n: int = 20, seed: int = 0,
                      settings: Settings | None = None) -> pd.DataFrame:
    """The paper's released statistics are totals per language; the texts behind them cannot be resampled. What
    can be: each neuron's count as a binomial draw over the response tokens, as if tokens were independent (they
    are not, so the spread is a lower bound). Per language and kind, the share of neurons kept (mean over `n`
    draws, and the smallest). settings: the identification's (default: the paper's, no widening)."""
    settings = Settings(widen=None) if settings is None else settings
    c = load_released_counts(dataset)
    full = from_counts({dataset: {lang: ActivationCounts((c.full - c.prefix)[..., k].clamp(min=0),
                                                          int(c.response_tokens[k]))
                                  for k, lang in enumerate(c.langs)}}, settings)
    generator = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(n):
        p = full.probs.clamp(0, 1).double()
        tokens = c.response_tokens.double()
        sample = torch.binomial(tokens.expand_as(p), p, generator=generator) / tokens
        draws.append(_overlaps(full.ident, settings.run(sample.float(), full.langs)))
    return pd.DataFrame({key: {"neurons": len(full.ident.neurons(key[1], key[0])),
                               "kept (mean)": sum(d[key] for d in draws) / n,
                               "kept (smallest)": min(d[key] for d in draws)} for key in draws[0]}).T \
        .rename_axis(["language", "kind"])


# ----------------------------------------------------------------------------------------------
# Deactivation against random neurons matched in layer and in firing rate

MATCHED = ("layer-matched", "rate-matched")


@dataclass(frozen=True, eq=False)
class MatchedControls:
    """Each language's own neurons switched off, against random sets matched to them, on that language's texts.

    table: per language, the change of its perplexity in % with its own neurons switched off ("own neurons") and,
    averaged over the random sets, with sets matched per layer ("layer-matched", `lnlib.intervene.random_like`)
    and per layer and firing rate ("rate-matched", `lnlib.intervene.matched_random`). grids: language -> the
    `lnlib.grids.PPLGrid` its row was read from (rows "none", the language's code, "<lang> layer-matched #<i>",
    "<lang> rate-matched #<i>")."""

    table: pd.DataFrame
    grids: dict

    def survives(self, control: str) -> float:
        """The median over languages of 1 − control / own, the ratio capped at 1: the share of the own neurons'
        effect that `control` ("layer-matched" or "rate-matched") does not reproduce."""
        if control not in MATCHED:
            raise ValueError(f"control must be one of {', '.join(MATCHED)}; got {control!r}")
        return float((1 - (self.table[control] / self.table["own neurons"]).clip(upper=1)).median())


def matched_deactivation(model: nn.Module, tokenizer, study: NeuronStudy, texts_by_lang: Mapping[str, Sequence],
                         n: int = 2, progress: bool = True) -> MatchedControls:
    """Switch off each language's language neurons (from `study`) on that language's texts, and `n` random sets of
    each kind matched to them (the i-th drawn with seed i; rate matching uses the study's probabilities): one
    `lnlib.grids.ppl_grid` per language, the baseline once. texts_by_lang: language -> texts."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a whole number of random sets per kind, at least 1; got {n!r}")
    own = dict(zip(study.langs, study.ident.mask("language"), strict=True))
    unknown = [lang for lang in texts_by_lang if lang not in own]
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))} not among the study's languages ({', '.join(own)})")
    width = models.n_neurons(model)
    cells = {}
    for lang, texts in texts_by_lang.items():
        sets = {lang: own[lang]}
        for i in range(n):
            sets[f"{lang} layer-matched #{i}"] = intervene.random_like(own[lang], width, seed=i)
            sets[f"{lang} rate-matched #{i}"] = intervene.matched_random(own[lang], study.probs, seed=i)
        cells[lang] = grids.ppl_grid(model, tokenizer, {lang: texts}, sets, progress=progress)

    def relative(lang: str, name: str) -> float:
        base = cells[lang].ppl().loc["none", lang]
        return 100 * (cells[lang].ppl().loc[name, lang] - base) / base

    table = pd.DataFrame({lang: {"own neurons": relative(lang, lang),
                                 **{kind: sum(relative(lang, f"{lang} {kind} #{i}") for i in range(n)) / n
                                    for kind in MATCHED}}
                          for lang in texts_by_lang}).T
    return MatchedControls(table, cells)


# ----------------------------------------------------------------------------------------------
# Data hygiene


NUMERAL = re.compile(r"\d")


def hygiene(texts_by_lang: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Per language: the texts `lnlib.langid` detects as another language (or as none), the share of their
    characters that are digits, and the share of words that start with a capital letter inside a sentence (a rough
    count of names, for scripts with case)."""
    rows = {}
    for lang, texts in texts_by_lang.items():
        detected = langid.detect_languages(list(texts))
        words = [w for t in texts for w in t.split()[1:]]
        rows[lang] = {"texts": len(texts), "detected as another language": sum(d not in (lang, None) for d in detected),
                      "no language detected": sum(d is None for d in detected),
                      "digits, % of characters": 100 * sum(len(NUMERAL.findall(t)) for t in texts) / max(
                          sum(map(len, texts)), 1),
                      "capitalised words inside sentences, %": 100 * sum(w[:1].isupper() for w in words) / max(
                          len(words), 1)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("language")


def foreign_texts(sources: Sequence[Source], langs: Sequence[str]) -> dict[str, dict[str, list[int]]]:
    """Per source label and language, the positions (within the source) of its questions that `lnlib.langid`
    detects as another language; a question with no language detected is not flagged. The `flagged` argument of
    `without_flagged`."""
    return {s.label: {lang: [i for i, d in enumerate(langid.detect_languages([p.question for p in s.problems(lang)]))
                             if d not in (lang, None)] for lang in langs} for s in sources}


def without_flagged(study: NeuronStudy, flagged: Mapping[str, Mapping[str, Sequence[int]]]) -> NeuronStudy:
    """The study with every group of texts that holds a flagged text left out. flagged: source label -> language
    -> positions of the flagged texts within the source. Texts are counted in groups, so whole groups go. The
    result keeps no per-text record, so it cannot be resampled again."""
    if study.texts is None:
        raise ValueError("without_flagged needs the study's texts (their group size), and this study has none; "
                         "build it with pipeline.language_neurons")
    size = study.texts.group_size
    by_source = {}
    for label, by_lang in study.by_source.items():
        by_source[label] = {}
        for lang in study.langs:
            bad = {i // size for i in flagged.get(label, {}).get(lang, [])}
            keep = torch.tensor([g for g in range(by_lang[lang].n_groups) if g not in bad], dtype=torch.int64)
            if not len(keep):
                raise ValueError(f"every text of {lang!r} in {label!r} is flagged: nothing of it would be left to "
                                 "count; unflag some texts or leave that source out of the study")
            by_source[label][lang] = by_lang[lang].select(keep)
    return from_counts(by_source, study.settings, None, study.provenance)


# ----------------------------------------------------------------------------------------------
# Steering the output language


def diffmean_direction(model: nn.Module, tokenizer, target_texts: Sequence[str], source_texts: Sequence[str],
                       layer: int) -> torch.Tensor:
    """The difference-of-means direction (CLaS-Bench's DiffMean): the mean residual stream after block `layer`
    over the target language's texts minus the mean over the source language's, [hidden]."""
    target = mean_hidden_states(model, tokenizer, target_texts, layer).mean(0)
    source = mean_hidden_states(model, tokenizer, source_texts, layer).mean(0)
    return target - source


def residual_norm(model: nn.Module, tokenizer, texts: Sequence[str], layer: int) -> float:
    """The mean norm of the (text-averaged) residual stream after block `layer`: the scale a steering vector's
    size is measured against."""
    return float(mean_hidden_states(model, tokenizer, texts, layer).norm(dim=-1).mean())


@dataclass(frozen=True, eq=False)
class Steering:
    """Continuations of source-language prompts under each method, per target language: texts, the detected
    language and the perplexity of the continuation under the unmodified model ((method, target) -> lists)."""

    texts: dict
    detected: dict
    perplexity: dict

    def table(self) -> pd.DataFrame:
        """Per method: the share of continuations in the target language (with a Wilson interval over all targets
        and prompts), and the median perplexity of the continuations under the unmodified model."""
        rows = {}
        for method in sorted({m for m, _ in self.texts}, key=list(dict.fromkeys(m for m, _ in self.texts)).index):
            targets = [t for m, t in self.texts if m == method]
            hits = sum(d == t for t in targets for d in self.detected[(method, t)])
            total = sum(len(self.detected[(method, t)]) for t in targets)
            ppl = pd.Series([p for t in targets for p in self.perplexity[(method, t)]])
            rows[method] = {"in the target language": stats.proportion(hits, total),
                            "median perplexity (unmodified model)": float(ppl.median())}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


def steered_continuations(model: nn.Module, tokenizer, prompts: Sequence[str],
                          edits: Mapping[str, Mapping[str, object]], max_new_tokens: int = 24) -> Steering:
    """Continue `prompts` greedily under each edit: edits[method][target] is a context
    manager factory (a zero-argument callable returning `intervene.deactivate(...)`, `intervene.scale(...)` or
    `intervene.steer(...)`), or None for no edit. Each continuation's language is detected, and its perplexity
    is measured under the unmodified model, given the prompt."""
    texts, detected, perplexity = {}, {}, {}
    for method, by_target in edits.items():
        for target, edit in by_target.items():
            if edit is None:
                out = generate_responses(model, tokenizer, prompts, max_new_tokens, progress=False)
            else:
                with edit():
                    out = generate_responses(model, tokenizer, prompts, max_new_tokens, progress=False)
            texts[(method, target)] = out
            detected[(method, target)] = langid.detect_languages(out)
            scored = [(p, o) if o.strip() else (p, " ") for p, o in zip(prompts, out, strict=True)]
            nll = text_nll(model, tokenizer, scored, progress=False)
            perplexity[(method, target)] = torch.exp(nll.nll_sum / nll.n_tokens.clamp(min=1)).tolist()
    return Steering(texts, detected, perplexity)


def neuron_edits(model: nn.Module, ident, source: str, targets: Sequence[str], factor: float) -> dict:
    """The two neuron-based edits of the steering comparison, per target: switch the source language's neurons off,
    and multiply the target language's neurons by `factor`."""
    masks = dict(zip(ident.langs, ident.mask("language"), strict=True))
    return {"source neurons off": {t: (lambda: intervene.deactivate(model, masks[source])) for t in targets},
            f"target neurons × {factor:g}": {t: (lambda t=t: intervene.scale(model, masks[t], factor))
                                               for t in targets}}


def direction_edits(model: nn.Module, directions: Mapping[str, torch.Tensor], layer: int, alpha: float) -> dict:
    """The DiffMean edit per target: add `alpha` times the unit direction after block `layer`."""
    layer = models.check_layer(model, layer)
    return {f"DiffMean at layer {layer}": {t: (lambda d=d: intervene.steer(model, layer, d / d.norm(), alpha))
                                           for t, d in directions.items()}}

