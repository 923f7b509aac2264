"""The identification pipeline every chapter uses: count (cached) → stack → identify.

`language_neurons(model, tokenizer, texts, settings)` counts activations over `texts` (which data, which
protocol: `Texts`), one cached entry per data source, adds the sources up, turns the counts into probabilities and
identifies language neurons (`Settings`: AutoSweep with the widening rule, or a fixed λ; the paper's score or
another registered method). It returns one `NeuronStudy` holding the counts, the probabilities, λ, the search
interval and both settings objects, so two chapters that ask for the same study get the same neurons, and a
chapter that needs another (one data source, a fixed λ) derives it from the study instead of restating settings.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from lnlib import cache, identify, models, stats, store
from lnlib.capture import count_by_language
from lnlib.config import cache_dir
from lnlib.counts import ActivationCounts, load_released_probs, released_provenance, stacked_probs
from lnlib.data import LANGS
from lnlib.generation import answer_pairs
from lnlib.identify import Identification
from lnlib.protocols import PROTOCOLS, Source, book_pairs


@dataclass(frozen=True)
class Settings:
    """How neurons are identified from probabilities.

    rate: share of neurons selected; bar: percentile of the threshold τ; method: a scoring method of
    `lnlib.identify.METHODS`; lam: "auto" (AutoSweep) or a fixed λ in code units; interval: AutoSweep's (lo, hi);
    widen: search [lo, widen] instead when the criterion never binds in the interval (None: never); eps: the
    bisection's tolerance. The defaults are the paper's, with the book's widening rule.
    """

    rate: float = 0.01
    bar: float = 0.95
    method: str = "entropy-lambda"
    lam: float | str = "auto"
    interval: tuple[float, float] = (0.0, 0.2)
    widen: float | None = 2.0
    eps: float = 1e-3

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes)

    def run(self, probs: torch.Tensor, langs: Sequence[str]) -> Identification:
        """Identify neurons in `probs` [layers, neurons, K] with these settings."""
        if self.lam == "auto" and identify.get_method(self.method).uses_lambda:
            if self.method != "entropy-lambda":
                raise ValueError("AutoSweep searches the paper's score only; give a fixed lam for other methods")
            return identify.autosweep(probs, self.rate, self.bar, *self.interval, self.eps, langs, self.widen)[1]
        lam = 0.0 if self.lam == "auto" else self.lam
        return identify.identify(probs, lam, self.rate, self.bar, langs, method=self.method)


@dataclass(frozen=True)
class Texts:
    """What a model reads for identification, and which tokens count.

    protocol: "questions" (the book's CPU protocol: a shared English instruction, then the question; only the
    question counts) or "answers" (the paper's: the MathOctopus prompt, then the model's own greedy answer,
    force-decoded; only the answer counts). sources: data slices (`lnlib.protocols.Source`), each counted and
    cached apart and then added up. langs: languages, in the order of the probabilities' last axis.
    group_size: keep counts per group of this many consecutive texts (for resampling over texts; 0: none).
    """

    protocol: str = "questions"
    sources: tuple[Source, ...] = (Source("mgsm", range(150)), Source("msvamp", range(100)))
    langs: tuple[str, ...] = LANGS
    max_length: int = 512
    batch_size: int = 8
    group_size: int = 5
    max_new_tokens: int = 256

    def replace(self, **changes) -> Texts:
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """The texts in a few words, e.g. "questions of mgsm[0:150] + msvamp[0:100] after a shared English
        instruction (question tokens counted)"."""
        data = " + ".join(source.label for source in self.sources)
        if self.protocol == "questions":
            return f"questions of {data} after a shared English instruction (only the question tokens counted)"
        return f"the model's own answers to {data} after the MathOctopus prompt (only the answer tokens counted)"


@dataclass(frozen=True, eq=False)
class NeuronStudy:
    """One identification and everything it came from.

    by_source: source label -> per-language counts of that source; counts: the per-language sum over sources;
    probs: float32 [layers, neurons, K] in `langs` order; ident: the identification; settings, texts: how they
    were made; provenance: the model and data they describe.
    """

    by_source: dict[str, dict[str, ActivationCounts]]
    probs: torch.Tensor
    ident: Identification
    settings: Settings
    texts: Texts | None
    provenance: dict = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, ActivationCounts]:
        parts = list(self.by_source.values())
        return {lang: sum((p[lang] for p in parts[1:]), parts[0][lang]) for lang in self.langs}

    @property
    def langs(self) -> tuple[str, ...]:
        return self.ident.langs

    @property
    def lam(self) -> float:
        return self.ident.lam

    @property
    def interval(self) -> tuple[float, float] | None:
        """The λ interval AutoSweep searched last (None for a fixed λ)."""
        return self.ident.interval

    @property
    def tokens(self) -> pd.Series:
        """Counted (response) tokens per language, in `langs` order: from the counts, or from the provenance for
        statistics released as totals (`from_released`)."""
        if self.by_source:
            counts = self.counts
            values = [counts[lang].n_tokens for lang in self.langs]
        else:
            values = [self.provenance["tokens"][lang] for lang in self.langs]
        return pd.Series(values, index=pd.Index(self.langs, name="language"), name="tokens")

    def per_language(self) -> pd.DataFrame:
        """Per language: the examples and tokens counted, the mean activation probability over all neurons, and the
        % of neurons with p > τ (strictly)."""
        if not self.by_source:
            raise ValueError("this study holds no counts (released statistics are totals); see `tokens` and `probs`")
        counts = self.counts
        return pd.DataFrame({"examples": [counts[lang].n_examples for lang in self.langs],
                             "counted tokens": self.tokens.tolist(),
                             "mean p": self.probs.mean(dim=(0, 1)).tolist(),
                             "% of neurons with p > τ": (100 * (self.probs > self.ident.tau).double()
                                                         .mean(dim=(0, 1))).tolist()},
                            index=pd.Index(self.langs, name="language"))

    def with_settings(self, **changes) -> NeuronStudy:
        """The same probabilities identified with changed settings (e.g. lam=0.5, rate=0.1)."""
        settings = self.settings.replace(**changes)
        return dataclasses.replace(self, ident=settings.run(self.probs, self.langs), settings=settings)

    def fixed(self) -> Settings:
        """These settings with λ fixed at this study's λ (to identify another model at the same λ)."""
        return self.settings.replace(lam=self.lam)

    def source(self, name: str, settings: Settings | None = None) -> NeuronStudy:
        """The study of one data source alone, named by its label ("mgsm[0:150]") or its dataset ("mgsm"), with
        these or other settings."""
        found = [label for label in self.by_source if label == name or label.split("[")[0] == name]
        if len(found) != 1:
            raise ValueError(f"no single source {name!r}; this study has {', '.join(self.by_source)}")
        label = found[0]
        texts = self.texts.replace(sources=tuple(s for s in self.texts.sources if s.label == label)) \
            if self.texts else None
        return from_counts({label: self.by_source[label]}, settings or self.settings, texts, self.provenance)

    def bootstrap(self, statistic, n: int = 200, seed: int = 0, settings: Settings | None = None):
        """Bootstrap a statistic of the identification over the counted texts: statistic(ident, probs) is computed
        on this study and on `n` resamples (`resampled_probs`), each identified again with `settings` (default this
        study's, AutoSweep included). Returns an `lnlib.stats.Estimate`, or a dict of them when the statistic
        returns a dict."""
        settings = settings or self.settings
        generator = torch.Generator().manual_seed(seed)
        full = statistic(self.ident, self.probs)
        draws = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", identify.IntervalWarning)
            for _ in range(n):
                probs = self.resampled_probs(generator)
                draws.append(statistic(settings.run(probs, self.langs), probs))
        if isinstance(full, Mapping):
            return {key: stats.estimate(full[key], [d[key] for d in draws]) for key in full}
        return stats.estimate(full, draws)

    def resampled_probs(self, generator: torch.Generator) -> torch.Tensor:
        """Probabilities from a bootstrap resample of the texts: in each language and source, the groups of texts
        drawn with replacement (needs counts kept per group, `Texts.group_size`)."""
        return self.probs_of(self.draw(generator))

    def draw(self, generator: torch.Generator) -> dict:
        """One bootstrap draw of text groups: (source, language) -> group indices, with replacement."""
        return {(label, lang): torch.randint(by_lang[lang].n_groups, (by_lang[lang].n_groups,), generator=generator)
                for label, by_lang in self.by_source.items() for lang in self.langs}

    def probs_of(self, groups: Mapping) -> torch.Tensor:
        """Probabilities from the text groups `groups` ((source, language) -> group indices, repeats allowed)."""
        counts = {}
        for lang in self.langs:
            parts = [by_lang[lang].select(groups[(label, lang)]) for label, by_lang in self.by_source.items()]
            counts[lang] = sum(parts[1:], parts[0])
        return stacked_probs(counts, self.langs)

    def first_texts(self, n: int) -> NeuronStudy:
        """The study of the first `n` texts of every source, from the same counts (no model run): a quick
        identification on fewer texts. `n` must be a multiple of the group size."""
        size = self.texts.group_size if self.texts else 0
        if not size or n % size:
            raise ValueError(f"n must be a multiple of the group size ({size}); counts are kept per group of texts")
        sources, by_source = [], {}
        for source, by_lang in zip(self.texts.sources, self.by_source.values(), strict=True):
            kept = Source(source.dataset, range(source.items.start, source.items.start + min(n, len(source.items))))
            sources.append(kept)
            by_source[kept.label] = {lang: by_lang[lang].head(max(1, len(kept.items) // size)) for lang in self.langs}
        return from_counts(by_source, self.settings, self.texts.replace(sources=tuple(sources)), self.provenance)


def from_counts(by_source: Mapping[str, Mapping[str, ActivationCounts]], settings: Settings = Settings(),
                texts: Texts | None = None, provenance: dict | None = None) -> NeuronStudy:
    """A study of counts already made (source label -> language -> counts; one source: {"data": counts})."""
    by_source = {label: dict(by_lang) for label, by_lang in by_source.items()}
    langs = tuple(texts.langs) if texts else tuple(next(iter(by_source.values())))
    parts = list(by_source.values())
    summed = {lang: sum((p[lang] for p in parts[1:]), parts[0][lang]) for lang in langs}
    probs = stacked_probs(summed, langs)
    return NeuronStudy(by_source, probs, settings.run(probs, langs), settings, texts, dict(provenance or {}))


def from_released(dataset: str = "mgsm", settings: Settings = Settings(widen=None)) -> NeuronStudy:
    """The paper's released Mistral-7B statistics, identified with `settings` (default: the paper's AutoSweep on
    [0, 0.2], which recovers the released mask exactly). They are totals: there are no groups to resample."""
    probs = load_released_probs(dataset)
    return NeuronStudy({}, probs, settings.run(probs, LANGS), settings, None, released_provenance(dataset))


def _answers(model: nn.Module, tokenizer, source: Source, lang: str, texts: Texts, prints) -> list:
    """The paper's protocol for one source and language, with the generated answers cached (greedy decoding is
    deterministic, and it is the slow part on a GPU)."""
    key = f"{prints[0][:24]}-{source.dataset}-{source.items.start}-{source.items.stop}-{lang}-{texts.max_new_tokens}"
    path = cache_dir() / "answers" / f"{key}.json"
    if path.is_file():
        return [tuple(pair) for pair in json.loads(path.read_text(encoding="utf-8"))]
    pairs = answer_pairs(model, tokenizer, source.problems(lang), texts.max_new_tokens, texts.batch_size)
    store.write_text(path, json.dumps(pairs, ensure_ascii=False))
    return pairs


def examples(model: nn.Module, tokenizer, source: Source, texts: Texts, prints=None) -> dict[str, list]:
    """The (prompt, response) pairs of one source, per language, under `texts.protocol`."""
    if texts.protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {texts.protocol!r}")
    if texts.protocol == "questions":
        return {lang: book_pairs(lang, source) for lang in texts.langs}
    prints = prints or cache.fingerprints(model, tokenizer)
    return {lang: _answers(model, tokenizer, source, lang, texts, prints) for lang in texts.langs}


def check_held_out(model: nn.Module, tokenizer, texts: Texts, held_out: Mapping[str, Sequence[str]]) -> None:
    """Raise a ValueError when a text of `held_out` (language -> evaluation texts) is one that identification
    counts under `texts` (the response of one of its pairs, `examples`): evaluation texts must never be counted."""
    counted = {response for pairs in (examples(model, tokenizer, source, texts) for source in texts.sources)
               for by_lang in pairs.values() for _, response in by_lang}
    both = counted & {text for by_lang in held_out.values() for text in by_lang}
    if both:
        raise ValueError(f"{len(both)} evaluation text(s) are counted for identification ({texts.describe()}), e.g. "
                         f"{next(iter(both))[:60]!r}; evaluate on other items (MGSM 200 and up are never counted)")


def language_neurons(model: nn.Module, tokenizer, texts: Texts = Texts(), settings: Settings = Settings(),
                     use_cache: bool = True, progress: bool = True) -> NeuronStudy:
    """Count activations over `texts` (one cached entry per source; use_cache=False counts afresh and caches
    nothing), add the sources up and identify language neurons with `settings`."""
    prints = cache.fingerprints(model, tokenizer) if use_cache or texts.protocol == "answers" else None
    by_source = {}
    for source in texts.sources:
        pairs = examples(model, tokenizer, source, texts, prints)
        groups = max(1, len(source.items) // texts.group_size) if texts.group_size else 0
        options = dict(max_length=texts.max_length, groups=groups, batch_size=texts.batch_size, progress=progress)
        if use_cache:
            by_source[source.label] = cache.cached_counts(model, tokenizer, pairs, prints=prints, **options)
        else:
            by_source[source.label] = count_by_language(model, tokenizer, pairs, **options)
    provenance = {**models.provenance(model), "protocol": texts.protocol,
                  "data": [source.label for source in texts.sources],
                  "tokens": {lang: sum(c[lang].n_tokens for c in by_source.values()) for lang in texts.langs}}
    return from_counts(by_source, settings, texts, provenance)


def paired_bootstrap(base: NeuronStudy, other: NeuronStudy, statistic, n: int = 200, seed: int = 0,
                     settings: Settings | None = None):
    """Bootstrap a comparison of two studies of the same texts (e.g. a model before and after alignment): each
    resample draws the same text groups for both, identifies both with `settings` (default: the base study's,
    with λ fixed at its λ), and computes statistic(base_ident, other_ident). Returns an `lnlib.stats.Estimate` (or a
    dict of them)."""
    if {k: {g: c.n_groups for g, c in v.items()} for k, v in base.by_source.items()} != \
            {k: {g: c.n_groups for g, c in v.items()} for k, v in other.by_source.items()}:
        raise ValueError("the two studies count different texts (sources or groups differ); a paired comparison "
                         "needs the same texts")
    settings = settings or base.fixed()
    generator = torch.Generator().manual_seed(seed)
    full = statistic(base.ident if settings == base.settings else settings.run(base.probs, base.langs),
                     other.ident if settings == other.settings else settings.run(other.probs, other.langs))
    draws = []
    for _ in range(n):
        groups = base.draw(generator)
        draws.append(statistic(settings.run(base.probs_of(groups), base.langs),
                               settings.run(other.probs_of(groups), other.langs)))
    if isinstance(full, Mapping):
        return {key: stats.estimate(full[key], [d[key] for d in draws]) for key in full}
    return stats.estimate(full, draws)


def controlled_bootstrap(base: NeuronStudy, other: NeuronStudy, control: NeuronStudy | None, statistic,
                         n: int = 200, seed: int = 0) -> stats.Controlled:
    """`paired_bootstrap` of a comparison (statistic(base_ident, other_ident), returning a dict) read against a
    control, e.g. an aligned model against a control fine-tune of the same base: the effect (base → other), the
    control's change (base → control) and the effect minus the control's (control → other), all identified with
    the base study's settings at its λ, over the same resamples. Without a control (None), the effect alone."""
    settings = base.fixed()
    effect = paired_bootstrap(base, other, statistic, n, seed, settings)
    if control is None:
        return stats.Controlled(effect)
    return stats.Controlled(effect, paired_bootstrap(base, control, statistic, n, seed, settings),
                            paired_bootstrap(control, other, statistic, n, seed, settings))
