"""Identification of language neurons: pure tensor maths on activation probabilities
`probs: [layers, neurons, languages]`.

The paper's recipe (Zhang et al. 2026, Sec. 3; Tang et al. 2024 for LAPE):

1. score every neuron: normalised entropy of its language distribution minus λ times its largest
   activation probability (`paper_score`);
2. keep the `rate` fraction with the lowest score (`select_lowest`);
3. τ = the value at rank round(bar·n) of all n probabilities (`threshold`); a selected neuron belongs to
   every language whose probability is strictly above τ. With N the number of such languages it is
   language-specific (N = 1) or language-related (1 < N < K); N = 0 is dropped. General neurons are all
   neurons (selected or not) above τ in all K languages;
4. AutoSweep (`autosweep`) picks the largest λ at which no selected neuron is above τ in all K languages.

Everything is vectorised: one AutoSweep on the released Mistral-7B statistics ([32, 14336, 10]) takes
well under a second on a laptop CPU (see ``bench/identify.py``).

Float dtype: scores are computed in the dtype of `probs` (float32 for `lnlib.data.load_released_probs`,
as in the official code). float64 gives the same selection at every λ that AutoSweep evaluates on the
released data: the gap between the last selected and the first rejected score is at least 4e-7 there
(at λ = 0.2), more than ten float32 rounding steps of such a score. Ties in the score are broken by the
lower flat index (layer · neurons + neuron), so the selection is deterministic.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch

from lnlib import store
from lnlib.data import LANGS

PROB_SLACK = 1e-2
"""Probabilities may exceed 1 by this much (the two-pass subtraction gives up to 1.001 on released data)."""

KINDS = ("specific", "related", "language", "general")


# ----------------------------------------------------------------------------------------------
# Input checks


def check_probs(probs: torch.Tensor) -> None:
    """Raise ValueError unless `probs` is a float tensor [layers, neurons, languages >= 2] in [0, 1 + slack]."""
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point():
        raise ValueError("probs must be a floating-point torch.Tensor [layers, neurons, languages]; "
                         "turn counts into probabilities with activation_probs or probs_from_counts")
    if probs.dim() != 3:
        raise ValueError(f"probs must have rank 3 [layers, neurons, languages], got shape {tuple(probs.shape)}; "
                         "stack per-language [layers, neurons] tensors on the last axis")
    if probs.shape[-1] < 2:
        raise ValueError(f"probs has {probs.shape[-1]} language(s) on its last axis; identification needs "
                         "at least 2 (language axis last: [layers, neurons, languages])")
    if probs.numel() == 0:
        raise ValueError(f"probs is empty (shape {tuple(probs.shape)})")
    if torch.isnan(probs).any():
        raise ValueError(f"probs holds {int(torch.isnan(probs).sum())} NaN value(s); "
                         "compute probabilities with a token count of at least 1")
    lo, hi = float(probs.min()), float(probs.max())
    if lo < 0 or hi > 1 + PROB_SLACK:
        raise ValueError(f"probs must lie in [0, 1 + {PROB_SLACK}], got min {lo:.4g} and max {hi:.4g}; "
                         "pass probabilities (counts / tokens), not counts or logits")
    if hi == 0:
        raise ValueError("every probability is 0: no neuron was ever active, so no neuron can be identified; check "
                         "that the counts were made (and divided by the right token totals)")
    if not bool((probs.amax(-1) > probs.amin(-1)).any()):
        raise ValueError("every neuron has the same probability in every language, so none can be specific to a "
                         "language; check that each column holds a different language's counts")


def _check_lam(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not math.isfinite(lam):
        raise ValueError(f"λ must be a finite number, got {lam!r}")
    return float(lam)


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1 (a number), got {value!r}")
    return float(value)


def _langs_for(probs: torch.Tensor, langs: Sequence[str] | None) -> tuple[str, ...]:
    k = probs.shape[-1]
    if langs is None:
        if k != len(LANGS):
            raise ValueError(f"probs has {k} languages; pass langs=(...) with {k} language codes")
        return LANGS
    langs = tuple(langs)
    if len(langs) != k or len(set(langs)) != k or not all(isinstance(code, str) for code in langs):
        raise ValueError(f"langs must hold {k} distinct codes (strings, one per column of probs), got {langs}")
    return langs


# ----------------------------------------------------------------------------------------------
# Scores


def harmonic_norm(n_langs: int) -> float:
    """c_l = H_l / l, with H_l the l-th harmonic number (the expected largest share of a uniform point on the
    l-simplex; 0.2928968 for l = 10). The official score divides the max probability by it."""
    return sum(1 / m for m in range(1, n_langs + 1)) / n_langs


def lam_to_paper(lam_code: float, n_langs: int) -> float:
    """λ in the paper's units (entropy in nats minus λ · max p) from λ in the code's units
    (normalised entropy minus λ · max p / c_l): λ_paper = λ_code · l · ln l / H_l."""
    return lam_code * math.log(n_langs) / harmonic_norm(n_langs)


def lam_to_code(lam_paper: float, n_langs: int) -> float:
    """Inverse of `lam_to_paper`."""
    return lam_paper * harmonic_norm(n_langs) / math.log(n_langs)


def normalised_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Ĥ [layers, neurons] in [0, 1]: entropy of p̃ = p / Σ_k p divided by ln K (official form: a neuron that
    never fires gets the uniform p̃; p̃ is clamped at 1e-12 and renormalised before the logarithm)."""
    k = probs.shape[-1]
    total = probs.sum(-1, keepdim=True)
    share = torch.where(total > 0, probs / total, torch.full_like(probs, 1 / k))
    share = share.clamp(min=1e-12)
    share = share / share.sum(-1, keepdim=True)
    return -(share * share.log()).sum(-1) / math.log(k)


def paper_score(probs: torch.Tensor, lam: float, units: str = "code") -> torch.Tensor:
    """The paper's score [layers, neurons] (lower = more language-specific), Eq. 5.

    units="code": Ĥ − λ · max_k p / c_l (the official code; λ* = 0.109375 on the released data).
    units="paper": H − λ · max_k p, with H = Ĥ · ln K the entropy in nats. Both rank neurons identically
    when λ_paper = `lam_to_paper` of λ_code.
    """
    check_probs(probs)
    k = probs.shape[-1]
    top = probs.max(-1).values
    if units == "code":
        return normalised_entropy(probs) - lam * top / harmonic_norm(k)
    if units == "paper":
        return normalised_entropy(probs) * math.log(k) - lam * top
    raise ValueError(f"units must be 'code' or 'paper', got {units!r}")


def lape_entropy(probs: torch.Tensor) -> torch.Tensor:
    """LAPE [layers, neurons] (Tang et al. 2024): entropy in nats of the L1-normalised probabilities,
    with 0 · ln 0 = 0 and a never-firing neuron given entropy 0 (its shares are NaN, set to 0)."""
    share = torch.nan_to_num(probs / probs.sum(-1, keepdim=True), nan=0.0)
    logs = torch.where(share > 0, share.log(), torch.zeros_like(share))
    return -(share * logs).sum(-1)


def threshold(probs: torch.Tensor, bar: float = 0.95) -> float:
    """τ: the value at rank round(bar · n) (1-indexed, k-th smallest) of all n probabilities."""
    _check_fraction("bar", bar)
    flat = probs.reshape(-1)
    return float(flat.kthvalue(max(1, round(bar * flat.numel()))).values)


def n_selected(n_neurons: int, rate: float) -> int:
    """How many neurons a selection rate keeps: round(rate · n), at least 1."""
    return max(1, round(_check_fraction("rate", rate) * n_neurons))


def select_lowest(scores: torch.Tensor, rate: float) -> torch.Tensor:
    """Flat indices (layer · neurons + neuron), int64 [round(rate · n)], of the lowest scores, lowest first;
    ties go to the lower index."""
    flat = scores.reshape(-1)
    n = n_selected(flat.numel(), rate)
    cut = flat.kthvalue(n).values
    cand = (flat <= cut).nonzero().squeeze(1)  # index order, so a stable sort breaks ties by index
    return cand[flat[cand].sort(stable=True).indices[:n]]


def lang_summary(probs: torch.Tensor, tau: float, tokens=None, langs: Sequence[str] | None = None) -> pd.DataFrame:
    """Per language (rows, in `langs` order): the median activation probability over all neurons and the % of
    neurons with p > τ (strictly), after a first column "response tokens" when `tokens` (one count per language,
    e.g. `ReleasedCounts.response_tokens`) is given. probs: [layers, neurons, K]."""
    langs = _langs_for(probs, langs)
    by_lang = probs.reshape(-1, len(langs))
    columns = {} if tokens is None else {"response tokens": torch.as_tensor(tokens).tolist()}
    columns["median p"] = by_lang.median(0).values.tolist()
    columns["% of neurons with p > τ"] = (100 * (by_lang > tau).double().mean(0)).tolist()
    return pd.DataFrame(columns, index=pd.Index(langs, name="language"))


# ----------------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True, eq=False)
class Identification:
    """Language neurons identified from probabilities [layers, neurons, K].

    langs: the K language codes, in the order of the probabilities' last axis.
    method: "entropy-lambda" (the paper) or "lape" (Tang et al.); lam: λ in code units (NaN for LAPE).
    rate, bar: selection rate and percentile of τ; tau: the threshold value.
    selected: int64 [n_sel], flat indices layer · neurons + neuron, lowest score first.
    high: bool [n_sel, K], selected neuron above τ in language k.
    n_above: int64 [layers, neurons], number of languages above τ for every neuron (N).
    trace: for AutoSweep, (λ, appear) at every λ evaluated, in order; empty otherwise.
    interval: for AutoSweep, the (lo, hi) it searched; None otherwise.
    """

    langs: tuple[str, ...]
    method: str
    lam: float
    rate: float
    bar: float
    tau: float
    selected: torch.Tensor
    high: torch.Tensor
    n_above: torch.Tensor
    trace: tuple[tuple[float, tuple[int, ...]], ...] = ()
    interval: tuple[float, float] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(layers, neurons)."""
        return tuple(self.n_above.shape)

    @property
    def n_langs(self) -> int:
        return len(self.langs)

    @property
    def n_high(self) -> torch.Tensor:
        """N for each selected neuron, int64 [n_sel]."""
        return self.high.sum(-1)

    @property
    def appear(self) -> list[int]:
        """appear[c] = number of neurons in exactly c language masks, c = 0…K (appear[0] = 0: a selected
        neuron above τ in no language is dropped, see `n_dropped`)."""
        counts = torch.bincount(self.n_high, minlength=self.n_langs + 1).tolist()
        return [0] + counts[1:]

    @property
    def n_dropped(self) -> int:
        """Selected neurons above τ in no language."""
        return int((self.n_high == 0).sum())

    @property
    def n_assigned(self) -> int:
        """Selected neurons above τ in at least one language (the selection minus `n_dropped`)."""
        return int((self.n_high > 0).sum())

    def selected_histogram(self) -> list[int]:
        """Over the selected neurons: how many are above τ in exactly c languages, c = 0…K (c = 0: the dropped
        ones; `appear` with `n_dropped` in place of its leading 0)."""
        return torch.bincount(self.n_high, minlength=self.n_langs + 1).tolist()

    def at_selected(self, values: torch.Tensor) -> torch.Tensor:
        """`values` [layers, neurons] (e.g. each neuron's largest probability) at the selected neurons, [n_sel],
        lowest score first."""
        if tuple(values.shape) != self.shape:
            raise ValueError(f"values must have shape (layers, neurons) = {self.shape}, got {tuple(values.shape)}")
        return values.reshape(-1)[self.selected]

    @property
    def general(self) -> torch.Tensor:
        """bool [layers, neurons]: above τ in all K languages (over all neurons, not only selected ones)."""
        return self.n_above == self.n_langs

    @property
    def n_general(self) -> int:
        return int(self.general.sum())

    def n_histogram(self) -> list[int]:
        """Over all neurons: how many are above τ in exactly c languages, c = 0…K."""
        return torch.bincount(self.n_above.reshape(-1), minlength=self.n_langs + 1).tolist()

    def n_percent(self, counts: Sequence[int] | None = None) -> list[float]:
        """`n_histogram` for N = 1…K as % of all neurons, comparable between models of different size. counts:
        other counts for N = 1…K (e.g. the paper's Fig. 15 for this model) as % of this model's neurons instead."""
        hist = self.n_histogram()
        total = sum(hist)
        return [100 * v / total for v in (hist[1:] if counts is None else counts)]

    def fewest_n(self) -> int:
        """The N >= 1 with the fewest neurons above τ in exactly N languages: the bottom of `n_histogram`'s U
        (`fewest_n`)."""
        return fewest_n(self.n_histogram()[1:])

    @property
    def general_share(self) -> float:
        """The share of all neurons that are general (above τ in all K languages)."""
        return self.n_general / self.n_above.numel()

    def lang_index(self, lang: str) -> int:
        if lang not in self.langs:
            raise ValueError(f"language {lang!r} is not in this identification; known: {', '.join(self.langs)}")
        return self.langs.index(lang)

    def _high(self, kind: str) -> torch.Tensor:
        """bool [n_sel, K]: selected neuron assigned to language k as `kind`."""
        n = self.n_high[:, None]
        if kind == "specific":
            return self.high & (n == 1)
        if kind == "related":
            return self.high & (n > 1) & (n < self.n_langs)
        if kind == "language":
            return self.high
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def neurons(self, kind: str = "language", lang: str | None = None) -> torch.Tensor:
        """int64 [n, 2] (layer, neuron) pairs, sorted. kind: "specific" (N = 1), "related" (1 < N < K),
        "language" (every language mask: specific ∪ related, plus any selected all-language neuron, which
        AutoSweep's λ rules out) or "general". With `lang`, the neurons assigned to that language; without,
        the distinct neurons of that kind in any language."""
        if kind == "general":
            flat = self.general.reshape(-1).nonzero().squeeze(1)
        else:
            high = self._high(kind)
            keep = high[:, self.lang_index(lang)] if lang is not None else high.any(-1)
            flat = self.selected[keep].sort().values
        return torch.stack([flat // self.shape[1], flat % self.shape[1]], -1)

    def mask(self, kind: str = "language") -> list[list[torch.Tensor]]:
        """The official mask format: for each language (in `langs` order), for each layer, the sorted int64
        neuron indices assigned to it. kind "language" (default) is the released mask (specific ∪ related)."""
        return [_per_layer(self.neurons(kind, lang), self.shape[0]) for lang in self.langs]

    def mask_by_lang(self, kind: str = "language") -> dict[str, list[torch.Tensor]]:
        """`mask` keyed by language: language -> per layer, the neuron indices assigned to it (the neuron sets
        `lnlib.grids.ppl_grid` and `lnlib.intervene.deactivate` take)."""
        return dict(zip(self.langs, self.mask(kind), strict=True))

    def general_mask(self) -> list[torch.Tensor]:
        """For each layer, the sorted int64 indices of the general neurons."""
        return _per_layer(self.neurons("general"), self.shape[0])

    def lang_counts(self) -> pd.DataFrame:
        """Per language: number of specific, related and all assigned ("language") neurons."""
        return pd.DataFrame(
            {kind: self._high(kind).sum(0).tolist() for kind in ("specific", "related", "language")},
            index=pd.Index(self.langs, name="lang"),
        )

    @property
    def specific_share(self) -> float:
        """Of the (neuron, language) assignments (`lang_counts`' "language" column, summed), the share that are
        language-specific."""
        counts = self.lang_counts()
        return float(counts["specific"].sum() / counts["language"].sum())

    def percent_of_selected(self, kind: str = "language") -> pd.Series:
        """Per language, its `kind` neurons as a percentage of the selected neurons: comparable between models that
        select different numbers of neurons."""
        return 100 * self.lang_counts()[kind] / len(self.selected)

    def most(self, kind: str = "language") -> list[str]:
        """The languages with the most `kind` neurons (all of them on a tie), in `langs` order."""
        counts = self.lang_counts()[kind]
        return list(counts.index[counts == counts.max()])

    def fewest(self, kind: str = "language") -> list[str]:
        """The languages with the fewest `kind` neurons (all of them on a tie), in `langs` order."""
        counts = self.lang_counts()[kind]
        return list(counts.index[counts == counts.min()])

    def trace_appear(self) -> pd.DataFrame:
        """AutoSweep's steps as `appear` counts: one row per λ evaluated (code units, in the order evaluated), one
        column per N = 1…K with the selected neurons above τ in exactly N languages."""
        if not self.trace:
            raise ValueError("this identification has no AutoSweep trace (it used a fixed λ); run autosweep")
        return pd.DataFrame([{"λ": lam, **{f"N={n}": a for n, a in enumerate(appear) if n}}
                             for lam, appear in self.trace]).set_index("λ")

    def layer_counts(self) -> pd.DataFrame:
        """Per layer: distinct specific, related and general neurons."""
        layers = self.shape[0]
        cols = {kind: torch.bincount(self.neurons(kind)[:, 0], minlength=layers).tolist() for kind in KINDS
                if kind != "language"}
        return pd.DataFrame(cols, index=pd.Index(range(layers), name="layer"))

    def coassignment(self) -> torch.Tensor:
        """int64 [K, K]: C[a, b] = selected neurons above τ in both language a and b (diagonal: mask sizes)."""
        high = self.high.to(torch.int64)
        return high.T @ high

    def top_pairs(self, n: int = 6) -> list[tuple[int, str, str]]:
        """The `n` language pairs sharing the most selected neurons: (shared, a, b), most first."""
        co, k = self.coassignment(), self.n_langs
        pairs = sorted(((int(co[a, b]), self.langs[a], self.langs[b]) for a in range(k) for b in range(a + 1, k)),
                       key=lambda p: (-p[0], self.langs.index(p[1]), self.langs.index(p[2])))
        return pairs[:n]

    def partners(self, lang: str) -> pd.Series:
        """Per other language, the selected neurons it shares with `lang`, most first."""
        co, k = self.coassignment(), self.lang_index(lang)
        shared = pd.Series({other: int(co[k, j]) for j, other in enumerate(self.langs) if j != k}, name=lang)
        return shared.sort_values(ascending=False, kind="stable")

    def versus(self, lang: str = "en") -> dict[str, float]:
        """The paper's Table 3 comparison: `lang`'s specific and related neurons against the mean of the others."""
        counts = self.lang_counts()
        others = [other for other in self.langs if other != self.langs[self.lang_index(lang)]]
        return {f"{lang} specific": int(counts.loc[lang, "specific"]),
                f"{lang} related": int(counts.loc[lang, "related"]),
                "others, mean specific": float(counts.loc[others, "specific"].mean()),
                "others, mean related": float(counts.loc[others, "related"].mean())}

    def percent_of_others(self, kind: str = "language") -> dict[str, float]:
        """Per language: its number of `kind` neurons (`lang_counts`) as % of the mean over the other languages (the
        paper's Table 3 comparison, on one scale for models of any size)."""
        counts = self.lang_counts()[kind]
        return {lang: 100 * counts[lang] / counts.drop(lang).mean() for lang in self.langs}

    def relative_size(self, lang: str = "en", kind: str = "language") -> float:
        """`lang`'s number of `kind` neurons (`lang_counts`) divided by the mean over the other languages."""
        counts = self.lang_counts()[kind]
        others = [other for other in self.langs if other != self.langs[self.lang_index(lang)]]
        return float(counts.loc[lang] / counts.loc[others].mean())

    def trace_table(self) -> pd.DataFrame:
        """AutoSweep's steps, numbered from 1: λ in code units (rounded to 8 decimals) and in paper units, the
        selected neurons above τ in all K languages, and whether the criterion (none) holds."""
        k = self.n_langs
        return pd.DataFrame([{"λ (code units)": round(lam, 8), "λ (paper units)": lam_to_paper(lam, k),
                              f"selected above τ in all {k}": appear[-1], "criterion holds": appear[-1] == 0}
                             for lam, appear in self.trace],
                            index=pd.RangeIndex(1, len(self.trace) + 1, name="step"))

    def first_failure(self) -> tuple[float, int] | None:
        """The smallest λ above this identification's λ that AutoSweep evaluated, and the selected neurons above τ
        in all K languages there (the criterion failed); None when the trace has no λ above it."""
        above = [(lam, appear[-1]) for lam, appear in self.trace if lam > self.lam]
        return min(above) if above else None


def _per_layer(pairs: torch.Tensor, layers: int) -> list[torch.Tensor]:
    return [pairs[pairs[:, 0] == i, 1].contiguous() for i in range(layers)]


def mask_matches(a: Sequence[Sequence[torch.Tensor]], b: Sequence[Sequence[torch.Tensor]]) -> list[bool]:
    """For two masks in the official format ([language][layer] -> neuron indices, `Identification.mask`), whether
    each (language, layer) index set is identical in both, language by language."""
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b, strict=True)):
        raise ValueError(f"the masks differ in shape: {[len(x) for x in a]} and {[len(y) for y in b]} layers per "
                         "language; compare masks of the same model and languages")
    return [torch.equal(x, y) for per_a, per_b in zip(a, b, strict=True) for x, y in zip(per_a, per_b, strict=True)]


def mask_size(mask: Sequence[Sequence[torch.Tensor]]) -> int:
    """The (language, neuron) assignments of a mask in the official format: its index sets' sizes, summed."""
    return sum(len(indices) for per_lang in mask for indices in per_lang)


def n_table(columns: Mapping[str, Sequence[int]]) -> pd.DataFrame:
    """Histograms over N = 0…K (label -> neurons above τ in exactly N languages, e.g. `n_histogram()` or
    `selected_histogram()`) as a table: one row per label, one column per N."""
    sizes = {len(values) for values in columns.values()}
    if len(sizes) != 1:
        raise ValueError(f"every histogram needs the same N = 0…K, got lengths {sorted(sizes)}")
    return pd.DataFrame(dict(columns), index=pd.Index(range(sizes.pop()), name="N")).T


def fewest_n(counts: Sequence[int]) -> int:
    """The N with the fewest neurons in counts over N = 1…K (e.g. `n_histogram()[1:]` or the paper's Fig. 15);
    the smallest such N on ties."""
    counts = list(counts)
    return 1 + counts.index(min(counts))


# ----------------------------------------------------------------------------------------------
# Scoring methods, identification, AutoSweep


class _Prepared:
    """The λ-independent parts of an identification, computed once per probs/rate/bar."""

    def __init__(self, probs: torch.Tensor, rate: float, bar: float, langs: Sequence[str] | None):
        check_probs(probs)
        self.probs = probs
        self.langs = _langs_for(probs, langs)
        self.rate = _check_fraction("rate", rate)
        self.bar = _check_fraction("bar", bar)
        self.k = probs.shape[-1]
        self.tau = threshold(probs, bar)
        above = probs > self.tau
        self.above = above.reshape(-1, self.k)
        self.n_above = above.sum(-1)
        self.entropy = normalised_entropy(probs).reshape(-1)
        self.effect = probs.max(-1).values.reshape(-1) / harmonic_norm(self.k)

    def result(self, method: str, lam: float, selected: torch.Tensor, trace=(), interval=None) -> Identification:
        return Identification(self.langs, method, float(lam), self.rate, self.bar, self.tau, selected,
                              self.above[selected], self.n_above, tuple(trace), interval)


@dataclass(frozen=True)
class Method:
    """A way to rank neurons for selection: `score(prepared, λ)` gives one score per neuron (flat, lower = more
    language-specific); `uses_lambda` says whether λ matters (AutoSweep searches it only then)."""

    name: str
    score: Callable[[_Prepared, float], torch.Tensor]
    uses_lambda: bool


def _paper(prep: _Prepared, lam: float) -> torch.Tensor:
    return prep.entropy - lam * prep.effect  # Eq. 5 in the code's units


def _lape(prep: _Prepared, lam: float) -> torch.Tensor:
    # LAPE's filter: a neuron above τ in no language cannot be selected
    return lape_entropy(prep.probs).reshape(-1).masked_fill(~prep.above.any(-1), math.inf)


METHODS: dict[str, Method] = {
    "entropy-lambda": Method("entropy-lambda", _paper, True),
    "lape": Method("lape", _lape, False),
}
"""Scoring methods by name: the paper's entropy − λ · effectiveness, and LAPE (Tang et al. 2024, filter at τ).
Add one with `register_method`."""


def register_method(method: Method) -> None:
    """Teach `identify` a new scoring method."""
    METHODS[method.name] = method


def get_method(name: str) -> Method:
    """The registered scoring method called `name`, or an error listing the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)} (add one with register_method)")
    return METHODS[name]


def identify(probs: torch.Tensor, lam: float = 0.0, rate: float = 0.01, bar: float = 0.95,
             langs: Sequence[str] | None = None, units: str = "code", method: str = "entropy-lambda"
             ) -> Identification:
    """Identification at a fixed λ (in `units`, "code" or "paper"; stored in code units) with a scoring `method`
    (default the paper's; "lape" ignores λ).

    probs: [layers, neurons, K]; langs: K codes (default `lnlib.data.LANGS` when K = 10).
    """
    scorer = get_method(method)
    lam = _check_lam(lam)
    prep = _Prepared(probs, rate, bar, langs)
    if units == "paper":
        lam = lam_to_code(lam, prep.k)
    elif units != "code":
        raise ValueError(f"units must be 'code' or 'paper', got {units!r}")
    if not scorer.uses_lambda:
        lam = math.nan
    return prep.result(method, lam, select_lowest(scorer.score(prep, lam), prep.rate))


class IntervalWarning(UserWarning):
    """AutoSweep's λ* is the top of its search interval: the criterion never bound there."""


@contextmanager
def interval_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record the warnings raised inside the block instead of showing them, every `IntervalWarning` included (also
    one raised before from the same place): ``with interval_warnings() as caught:`` … ``if caught:``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IntervalWarning)
        yield caught


def autosweep(probs: torch.Tensor, rate: float = 0.01, bar: float = 0.95, lo: float = 0.0, hi: float = 0.2,
              eps: float = 1e-3, langs: Sequence[str] | None = None, widen: float | None = None
              ) -> tuple[float, Identification]:
    """AutoSweep: the largest λ (code units) in [lo, hi] at which no selected neuron is above τ in all K
    languages, by bisection to width `eps` (the official search, for any K). Returns (λ*, identification
    at λ*); the identification's `trace` lists (λ, appear) at every λ evaluated and `interval` the [lo, hi]
    searched.

    Like the official code it evaluates lo and hi, then halves [lo, hi] while it is wider than eps, moving
    lo up where the criterion holds and hi down where it fails. Unlike it, a criterion that holds at hi
    returns hi at once (the official loop would go on and return a smaller λ), with an `IntervalWarning`:
    λ* is then only a lower bound. Raises ValueError when the criterion holds at no λ evaluated.

    widen: when the criterion still holds at `hi` (it never binds in [lo, hi], as for Gemma 3 270M in the
    paper's [0, 0.2]), search [lo, widen] instead. The result's `trace` is that of the wider search.
    """
    lo, hi, eps = _check_lam(lo), _check_lam(hi), _check_lam(eps)
    if not lo <= hi:
        raise ValueError(f"the λ interval is empty: lo = {lo} > hi = {hi}")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    prep = _Prepared(probs, rate, bar, langs)
    lam, ident = _bisect(prep, lo, hi, eps)
    if widen is not None and lam == hi and _check_lam(widen) > hi:
        lam, ident = _bisect(prep, lo, widen, eps)
    if lam == ident.interval[1]:
        warnings.warn(f"AutoSweep's λ* = {lam:g} is the top of its search interval [{lo:g}, {lam:g}]: no selected "
                      "neuron is above τ in every language anywhere in it, so λ* is only a lower bound; search a "
                      "wider interval (widen=...)", IntervalWarning, stacklevel=2)
    return lam, ident


def _bisect(prep: _Prepared, lo: float, hi: float, eps: float) -> tuple[float, Identification]:
    trace, found = [], {}

    def ok(lam: float) -> bool:
        selected = select_lowest(_paper(prep, lam), prep.rate)
        appear = prep.result("entropy-lambda", lam, selected).appear
        trace.append((float(lam), tuple(appear)))
        found[lam] = selected
        return appear[-1] == 0

    interval = (float(lo), float(hi))
    best = lo if ok(lo) else None
    if ok(hi):
        best = hi
    else:
        for _ in range(64):
            if hi - lo <= eps:
                break
            mid = (lo + hi) / 2
            if ok(mid):
                best, lo = mid, mid
            else:
                hi = mid
    if best is None:
        raise ValueError(f"no λ in [{trace[0][0]}, {trace[1][0]}] leaves every selected neuron below τ in some "
                         f"language (at λ = {trace[0][0]}, {trace[0][1][-1]} selected neurons are above τ in all "
                         f"{prep.k}); lower lo, or lower the selection rate")
    return float(best), prep.result("entropy-lambda", best, found[best], trace, interval)


def sweep(probs: torch.Tensor, lams: Sequence[float], rate: float = 0.01, bar: float = 0.95,
          langs: Sequence[str] | None = None) -> list[tuple[float, tuple[int, ...]]]:
    """(λ, appear) at every λ of `lams` (code units), sharing τ and the entropy term: the curve behind
    AutoSweep's bisection."""
    prep = _Prepared(probs, rate, bar, langs)
    return [(float(lam), tuple(prep.result("entropy-lambda", lam, select_lowest(_paper(prep, _check_lam(lam)),
                                                                                  prep.rate)).appear))
            for lam in lams]


def sweep_grid(probs: torch.Tensor, lo: float, hi: float, n: int, rate: float = 0.01, bar: float = 0.95,
               around: float | None = None, zoom: float = 0.008, langs: Sequence[str] | None = None
               ) -> dict[float, int]:
    """λ -> selected neurons above τ in all K languages (`sweep`), on `n` evenly spaced λ in [lo, hi] and, with
    `around` (λ*), on n // 3 more in [around − zoom, around + zoom]: the curve `lnlib.plot.sweep_trace` draws."""
    lams = torch.linspace(lo, hi, n).tolist()
    if around is not None:
        lams += torch.linspace(around - zoom, around + zoom, n // 3).tolist()
    return {lam: appear[-1] for lam, appear in sweep(probs, lams, rate, bar, langs)}


def count_decreases(grid: Mapping[float, int]) -> int:
    """How often a count on a λ grid (λ -> count, e.g. `sweep_grid`) falls from one λ to the next larger one.
    AutoSweep's bisection assumes it never does."""
    values = [grid[lam] for lam in sorted(grid)]
    return sum(b < a for a, b in zip(values, values[1:], strict=False))


def lape(probs: torch.Tensor, rate: float = 0.01, filter_bar: float = 0.95, bar: float = 0.95,
         langs: Sequence[str] | None = None) -> Identification:
    """LAPE (Tang et al. 2024) on the same probabilities: neurons with no language above the `filter_bar`
    percentile are excluded; the `rate` fraction with the lowest LAPE is selected; each is assigned to every
    language above the `bar` percentile τ."""
    if filter_bar == bar:
        return identify(probs, rate=rate, bar=bar, langs=langs, method="lape")
    prep = _Prepared(probs, rate, bar, langs)
    eligible = (probs > threshold(probs, filter_bar)).any(-1).reshape(-1)
    scores = lape_entropy(probs).reshape(-1).masked_fill(~eligible, math.inf)
    return prep.result("lape", math.nan, select_lowest(scores, prep.rate))


# ----------------------------------------------------------------------------------------------
# Save and load


def save(ident: Identification, path, provenance: dict | None = None, overwrite: bool = False):
    """Write `ident` atomically (tensors selected, high, n_above; settings, trace and `provenance` in the header).
    provenance: what you know of where the probabilities came from (model, data, protocol, tokens, e.g.
    `lnlib.counts.released_provenance()`); nothing is filled in for you. Refuses to replace an existing file
    unless overwrite=True."""
    if provenance is not None and not isinstance(provenance, dict):
        raise ValueError(f"provenance must be a dict of JSON values, got {type(provenance).__name__}")
    record = {
        "langs": list(ident.langs), "method": ident.method, "lam": None if math.isnan(ident.lam) else ident.lam,
        "rate": ident.rate, "bar": ident.bar, "tau": ident.tau, "shape": list(ident.shape),
        "trace": [[lam, list(a)] for lam, a in ident.trace],
        "interval": list(ident.interval) if ident.interval else None, "provenance": provenance or {},
    }
    tensors = {"selected": ident.selected, "high": ident.high, "n_above": ident.n_above}
    return store.save(path, "identification", tensors, record, overwrite)


def load(path, expect_langs: Sequence[str] | None = None,
         expect_shape: tuple[int, int] | None = None) -> tuple[Identification, dict]:
    """Read an identification written by `save`; returns (identification, provenance). Refuses a file that was
    edited or damaged, and one whose languages (order included) or (layers, neurons) differ from
    `expect_langs` / `expect_shape`."""
    tensors, record = store.load(path, "identification")
    langs, shape = tuple(record["langs"]), tuple(record["shape"])
    if expect_langs is not None and tuple(expect_langs) != langs:
        raise ValueError(f"{path} holds languages {langs}, expected {tuple(expect_langs)}; "
                         "identify again with the expected languages")
    if expect_shape is not None and tuple(expect_shape) != shape:
        raise ValueError(f"{path} holds (layers, neurons) = {shape}, expected {tuple(expect_shape)}; "
                         "it belongs to a different model")
    ident = Identification(
        langs, record["method"], math.nan if record["lam"] is None else record["lam"], record["rate"],
        record["bar"], record["tau"], tensors["selected"], tensors["high"], tensors["n_above"],
        tuple((lam, tuple(a)) for lam, a in record["trace"]),
        tuple(record["interval"]) if record["interval"] else None,
    )
    return ident, record["provenance"]
