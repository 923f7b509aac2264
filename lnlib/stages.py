"""The four stages of multilingual inference (Zhang et al. 2026, Sec. 5.1) as a reproducible rule on
per-layer neuron counts, and the sharing analysis behind the paper's explanation of English (Sec. 5.4).

The paper reads four stages off the layer-wise numbers of language-specific, language-related and general
neurons, but gives no boundaries:

1. multilingual understanding (first layers): specific and related neurons peak, few general ones;
2. shared semantic-space reasoning (middle): specific and related nearly absent, general neurons dominate;
3. multilingual output-space transformation (upper layers): specific and related peak again, general
   neurons at their minimum;
4. vocabulary-space outputting (last layer): general neurons at their maximum; the specific + related
   total rises, specific and related moving in opposite directions.

`four_stages` turns that description into a deterministic rule (its docstring states it) and returns the
boundaries with the evidence for them, or says which part of the description a profile lacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

STAGE_NAMES: dict[int, str] = {
    1: "multilingual understanding",
    2: "shared semantic-space reasoning",
    3: "multilingual output-space transformation",
    4: "vocabulary-space outputting",
}
"""The paper's names of the four stages; label 0 means "not assigned"."""

MIN_LAYERS = 4

CHECKS: tuple[str, ...] = (
    "stage 1: language neurons peak",
    "stage 2: language neurons nearly absent",
    "stage 2: general neurons outnumber language neurons",
    "stage 3: language neurons peak again",
    "stage 3: general neurons at their minimum",
    "stage 4: general neurons at their maximum",
    "stage 4: specific + related total rises",
    "stage 4: specific and related move in opposite directions",
)
"""The statements of the paper's stage description that `four_stages` tests (keys of `Stages.checks`)."""


@dataclass(frozen=True)
class Stages:
    """The stage rule's result for one model (all per-layer arrays have length `layers`).

    labels: stage of every layer, 1…4 (0: not assigned, when the rule stopped early).
    boundaries: first layer of stages 2, 3 and 4 (None for a stage not found).
    found: True when all four stages were found; reason: why not (empty when found).
    specific, related, general: the counts the rule used (after smoothing; floats).
    share: language-neuron share (specific + related) / (specific + related + general) per layer.
    thresholds: the cut-offs in the units they apply to (share or general count) and the parameters.
    evidence: the peaks and dips the boundaries rest on (layer indices and values).
    checks: each statement of the paper's stage description, tested on this profile (True / False;
    missing when its stage was not found). Only some of them are part of the rule (see `four_stages`).
    """

    labels: tuple[int, ...]
    boundaries: tuple[int | None, int | None, int | None]
    found: bool
    reason: str
    specific: tuple[float, ...]
    related: tuple[float, ...]
    general: tuple[float, ...]
    share: tuple[float, ...]
    thresholds: dict = field(default_factory=dict)
    evidence: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)

    @property
    def layers(self) -> int:
        return len(self.labels)

    @property
    def finding(self) -> str:
        """The rule's outcome as a sentence says it: "finds all four stages" or "does not find four stages"."""
        return "finds all four stages" if self.found else "does not find four stages"

    @property
    def why(self) -> str:
        """The reason the rule gives for not finding four stages, or "none: all four stages were found"."""
        return self.reason or "none: all four stages were found"

    @property
    def checks_passed(self) -> int:
        """How many statements of the paper's description (`CHECKS`) this profile bears out."""
        return sum(bool(self.checks.get(check)) for check in CHECKS)

    def stage_name(self, layer: int | None) -> str:
        """The paper's name of the stage of `layer` (`STAGE_NAMES`); "not assigned" for a layer the rule left
        unlabelled, or for None."""
        return "not assigned" if layer is None else STAGE_NAMES.get(self.labels[layer], "not assigned")

    def ranges(self) -> dict[int, tuple[int, int]]:
        """Stage -> (first layer, last layer), for the stages that were assigned."""
        out = {}
        for stage in range(1, 5):
            idx = [i for i, s in enumerate(self.labels) if s == stage]
            if idx:
                out[stage] = (idx[0], idx[-1])
        return out

    def describe(self) -> str:
        """One line: the layer range of every stage, or the reason no four stages were found."""
        parts = [f"stage {s}: layers {a}–{b}" if a != b else f"stage {s}: layer {a}"
                 for s, (a, b) in self.ranges().items()]
        text = "; ".join(parts) if parts else "no stage assigned"
        return text if self.found else f"{text} (four stages not found: {self.reason})"

    def summary(self) -> pd.DataFrame:
        """Per assigned stage: its name, layers, largest language share, and the specific, related and general
        neurons it holds (summed over its layers) with the smallest and largest general count of a layer."""
        rows = {}
        for stage, (a, b) in self.ranges().items():
            part = slice(a, b + 1)
            rows[stage] = {"name": STAGE_NAMES[stage], "layers": f"{a}–{b}" if a != b else str(a),
                           "max language share": max(self.share[part]), "specific": sum(self.specific[part]),
                           "related": sum(self.related[part]), "general": sum(self.general[part]),
                           "general, min per layer": min(self.general[part]),
                           "general, max per layer": max(self.general[part])}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("stage")

    def upper_share(self, fraction: float = 1 / 3) -> float:
        """The share of all specific + related neurons that sit in the last `fraction` of the layers."""
        lang = np.asarray(self.specific) + np.asarray(self.related)
        return float(lang[round((1 - fraction) * self.layers):].sum() / max(lang.sum(), 1))

    def last_step(self) -> pd.DataFrame:
        """Specific, related, their total and general neurons in the last two layers, and the change."""
        frame = pd.DataFrame({kind: getattr(self, kind)[-2:] for kind in ("specific", "related", "general")},
                             index=pd.Index([self.layers - 2, self.layers - 1], name="layer"))
        frame.insert(2, "specific + related", frame["specific"] + frame["related"])
        frame.loc["change"] = frame.iloc[1] - frame.iloc[0]
        return frame

    def table(self) -> pd.DataFrame:
        """Per layer: the counts used, the language share and the stage label."""
        return pd.DataFrame({"specific": self.specific, "related": self.related, "general": self.general,
                             "language share": self.share, "stage": self.labels},
                            index=pd.Index(range(self.layers), name="layer"))


def _as_counts(name: str, values) -> np.ndarray:
    arr = np.asarray(values.tolist() if isinstance(values, torch.Tensor) else values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one count per layer (1-D), got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name} must hold finite, non-negative counts; got min {arr.min()} in {name}")
    return arr


def smooth_profile(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` layers (odd; 1 = unchanged); near the ends the window is cut
    to the layers that exist, so the profile keeps its length."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"smooth must be an odd window of at least 1 layer, got {window}")
    if window == 1:
        return values.astype(float)
    half = window // 2
    return np.array([values[max(0, i - half): i + half + 1].mean() for i in range(len(values))])


def language_share(language: np.ndarray, general: np.ndarray) -> np.ndarray:
    """language / (language + general) per layer, 0 where a layer has neither."""
    total = language + general
    return np.divide(language, total, out=np.zeros_like(total, dtype=float), where=total > 0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) of every maximal run of True."""
    runs, start = [], None
    for i, flag in enumerate(list(mask) + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


class _Rule:
    """The stage rule's state for one profile: smoothed counts, language share, labels so far, and what the steps
    found (thresholds, evidence, checks). Each step labels its layers or says why the profile stops there."""

    def __init__(self, specific, related, general, low, high, final, min_middle, smooth):
        spec, rel, gen = (_as_counts(n, v) for n, v in (("specific", specific), ("related", related),
                                                        ("general", general)))
        if not len(spec) == len(rel) == len(gen):
            raise ValueError(f"specific, related and general must have one count per layer each; got lengths "
                             f"{len(spec)}, {len(rel)}, {len(gen)}")
        if len(spec) < MIN_LAYERS:
            raise ValueError(f"four stages need at least {MIN_LAYERS} layers, got {len(spec)}")
        for name, value in (("low", low), ("high", high), ("final", final)):
            if not 0 < value <= 1:
                raise ValueError(f"{name} must lie in (0, 1], got {value}")
        if not low < high:
            raise ValueError(f"low ({low}) must be below high ({high}): stage 2 is where the share is low")
        if min_middle < 1:
            raise ValueError(f"min_middle must be at least 1, got {min_middle}")
        self.low, self.high, self.final, self.min_middle = low, high, final, min_middle
        self.spec, self.rel, self.gen = (smooth_profile(a, smooth) for a in (spec, rel, gen))
        self.n = len(spec)
        self.lang = self.spec + self.rel
        self.share = language_share(self.lang, self.gen)
        self.peak = float(self.share.max())
        self.labels = [0] * self.n
        self.thresholds = {"low": low, "high": high, "final": final, "min_middle": min_middle, "smooth": smooth,
                           "low share": low * self.peak, "high share": high * self.peak}
        self.evidence: dict = {"peak share": self.peak, "peak share layer": int(self.share.argmax())}
        self.checks: dict = {}

    def result(self, b2=None, b3=None, b4=None, reason: str = "") -> Stages:
        return Stages(tuple(self.labels), (b2, b3, b4), not reason, reason, tuple(self.spec.tolist()),
                      tuple(self.rel.tolist()), tuple(self.gen.tolist()), tuple(self.share.tolist()),
                      self.thresholds, self.evidence, self.checks)

    def empty(self) -> Stages | None:
        """A profile with no neurons, or no language neurons, has no stages."""
        if self.lang.sum() + self.gen.sum() == 0:
            return self.result(reason="the profile has no neurons of any type")
        if self.peak == 0:
            return self.result(reason="the profile has no language (specific or related) neurons")
        return None

    def shared_stage(self) -> Stages | tuple[int, int]:
        """Step 1, stage 2: the longest middle run of low-share layers, as (first, last)."""
        low_runs = _runs(self.share <= self.low * self.peak)
        self.evidence["low runs"] = list(low_runs)
        runs = [(a, b) for a, b in low_runs if a >= 1 and b <= self.n - 3]
        if not runs:
            return self.result(reason=f"no middle layers where the language share stays at or below {self.low:g} "
                                      f"of its peak ({self.low * self.peak:.3f}): no shared semantic-space stage")
        a2, e2 = max(runs, key=lambda r: (r[1] - r[0], -r[0]))
        if e2 - a2 + 1 < self.min_middle:
            return self.result(reason=f"the longest middle run of low language share (layers {a2}–{e2}) is shorter "
                                      f"than min_middle = {self.min_middle} layers: no shared semantic-space stage")
        self.labels[:a2] = [1] * a2
        self.labels[a2:e2 + 1] = [2] * (e2 - a2 + 1)
        self.evidence["stage 2 max share"] = float(self.share[a2:e2 + 1].max())
        return a2, e2

    def understanding_stage(self, a2: int, e2: int) -> Stages | None:
        """Step 2, stage 1: every layer before stage 2; it must hold a language-neuron peak."""
        share = self.share
        s1_peak = int(share[:a2].argmax())
        self.evidence["stage 1 peak layer"], self.evidence["stage 1 peak share"] = s1_peak, float(share[s1_peak])
        self.checks["stage 1: language neurons peak"] = bool(share[s1_peak] >= self.high * self.peak)
        self.checks["stage 2: language neurons nearly absent"] = True
        self.checks["stage 2: general neurons outnumber language neurons"] = bool(
            (self.gen[a2:e2 + 1] > self.lang[a2:e2 + 1]).all())
        if self.checks["stage 1: language neurons peak"]:
            return None
        self.labels[:] = [0] * self.n
        return self.result(reason=f"before the shared stage (layers 0–{a2 - 1}) the language share reaches only "
                                  f"{share[s1_peak]:.3f} < {self.high:g} of its peak: no multilingual understanding "
                                  "stage")

    def _stage3_evidence(self, e2: int, end: int) -> None:
        s3_peak = e2 + 1 + int(self.share[e2 + 1:end].argmax())
        self.evidence["stage 3 peak layer"], self.evidence["stage 3 peak share"] = s3_peak, float(self.share[s3_peak])
        g3_min = e2 + 1 + int(self.gen[e2 + 1:end].argmin())
        self.evidence["stage 3 general min layer"], self.evidence["stage 3 general min"] = g3_min, float(
            self.gen[g3_min])
        self.evidence["general min layer"] = int(self.gen.argmin())
        self.checks["stage 3: language neurons peak again"] = bool(self.share[s3_peak] >= self.high * self.peak)
        self.checks["stage 3: general neurons at their minimum"] = bool(self.gen[g3_min] <= self.gen.min())

    def vocabulary_stage(self, a2: int, e2: int) -> Stages | int:
        """Step 3, stage 4: the longest run of final layers whose general count is at its maximum; returns its
        first layer, or the three-stage result when the last layer falls short."""
        n, gen = self.n, self.gen
        top_general = float(gen.max())
        self.evidence["general max"], self.evidence["general max layer"] = top_general, int(gen.argmax())
        self.thresholds["final general"] = self.final * top_general
        at_top = gen >= self.final * top_general
        b4 = n
        while b4 > 0 and at_top[b4 - 1]:
            b4 -= 1
        s3_peak = e2 + 1 + int(self.share[e2 + 1:].argmax())
        self.evidence["stage 3 peak layer"], self.evidence["stage 3 peak share"] = s3_peak, float(self.share[s3_peak])
        if b4 == n:
            self.labels[e2 + 1:] = [3] * (n - e2 - 1)
            self._stage3_evidence(e2, n)
            self.checks["stage 4: general neurons at their maximum"] = False
            return self.result(a2, e2 + 1, None,
                               reason=f"the last layer's general count ({gen[-1]:.4g}) is below {self.final:g} of the "
                                      f"largest ({top_general:.4g}, layer {int(gen.argmax())}): no vocabulary-space "
                                      "stage, the profile shows three stages")
        if b4 <= e2 + 1:
            self.labels[e2 + 1:] = [0] * (n - e2 - 1)
            return self.result(a2, None, None,
                               reason=f"general neurons stay at their maximum from layer {b4} on, right after the "
                                      "shared stage: stages 3 and 4 cannot be told apart")
        return b4

    def output_stage(self, a2: int, e2: int, b4: int) -> Stages:
        """Step 4, stage 3: every layer between stages 2 and 4; language neurons must peak again. Also tests the
        paper's statements about the last layer."""
        n = self.n
        self.labels[e2 + 1:b4] = [3] * (b4 - e2 - 1)
        self.labels[b4:] = [4] * (n - b4)
        self._stage3_evidence(e2, b4)
        self.checks["stage 4: general neurons at their maximum"] = True
        d_spec, d_rel = self.spec[b4] - self.spec[b4 - 1], self.rel[b4] - self.rel[b4 - 1]
        self.evidence["stage 4 change in specific"] = float(d_spec)
        self.evidence["stage 4 change in related"] = float(d_rel)
        self.evidence["stage 4 change in specific + related"] = float(d_spec + d_rel)
        self.checks["stage 4: specific + related total rises"] = bool(d_spec + d_rel > 0)
        self.checks["stage 4: specific and related move in opposite directions"] = bool(d_spec * d_rel < 0)
        if not self.checks["stage 3: language neurons peak again"]:
            self.labels[e2 + 1:] = [0] * (n - e2 - 1)
            return self.result(a2, None, None,
                               reason=f"after the shared stage the language share reaches only "
                                      f"{self.evidence['stage 3 peak share']:.3f} < {self.high:g} of its peak: no "
                                      "output-space transformation stage")
        return self.result(a2, e2 + 1, b4)


def four_stages(specific: Sequence[float], related: Sequence[float], general: Sequence[float],
                low: float = 0.1, high: float = 0.3, final: float = 0.9, min_middle: int = 2,
                smooth: int = 1) -> Stages:
    """Label every layer with one of the paper's four stages, from per-layer neuron counts.

    specific, related, general: one count per layer (e.g. the columns of `Identification.layer_counts()`).

    The rule (every threshold is a parameter):

    0. Counts are smoothed with a centred moving average of `smooth` layers (default 1: none, so
       boundaries are exact layers). Per layer, language = specific + related and the **language share**
       s = language / (language + general) (0 for a layer with neither). peak = max s.
    1. **Stage 2** (shared space) is the longest run of consecutive layers with s <= `low` · peak that has at
       least one layer before it and two after it (ties: the earliest run), and at least `min_middle`
       layers. None: not found ("no shared middle stage").
    2. **Stage 1** is every layer before stage 2. It must reach s >= `high` · peak somewhere (language
       neurons peak in the first layers); otherwise not found.
    3. **Stage 4** is the longest run of final layers whose general count is >= `final` · the largest
       general count of any layer (general neurons at their maximum). If the last layer falls short, the
       profile has three stages: every layer after stage 2 is labelled 3 and the result says so. If the
       run reaches back to the layer right after stage 2, stages 3 and 4 cannot be told apart: not found.
    4. **Stage 3** is every layer between stages 2 and 4. It must reach s >= `high` · peak somewhere
       (language neurons peak again); otherwise not found.

    Only these conditions decide `found`. The other statements of the paper's description (general neurons
    dominate stage 2, reach their minimum in stage 3; the specific + related total rises into stage 4, with
    specific and related moving in opposite directions) are tested and reported in `checks`.

    Raises ValueError for arrays of different lengths, fewer than 4 layers, or negative / non-finite
    counts. A profile with no neurons at all, or no language neurons, is returned with found False.
    """
    rule = _Rule(specific, related, general, low, high, final, min_middle, smooth)
    stop = rule.empty()
    if stop is not None:
        return stop
    shared = rule.shared_stage()
    if isinstance(shared, Stages):
        return shared
    a2, e2 = shared
    stop = rule.understanding_stage(a2, e2)
    if stop is not None:
        return stop
    b4 = rule.vocabulary_stage(a2, e2)
    if isinstance(b4, Stages):
        return b4
    return rule.output_stage(a2, e2, b4)


def stages_of(ident, **kwargs) -> Stages:
    """`four_stages` on the layer-wise counts of an `Identification` (distinct neurons per layer)."""
    counts = ident.layer_counts()
    return four_stages(counts["specific"], counts["related"], counts["general"], **kwargs)


TRENDS = {"rises": ("rises", "falls", "stays"), "rise": ("rise", "fall", "stay"),
          "rising": ("rising", "falling", "staying")}
"""The words `trend` gives for a change up, down and none, by verb form."""


def trend(change: float, form: str = "rises") -> str:
    """The direction of a change as a sentence says it, in the verb form `form`: "rises" / "falls" / "stays"
    (default), "rise" / "fall" / "stay" or "rising" / "falling" / "staying"."""
    if form not in TRENDS:
        raise ValueError(f"form must be one of {', '.join(TRENDS)}, got {form!r}")
    up, down, same = TRENDS[form]
    return up if change > 0 else down if change < 0 else same


def check_table(results: Mapping[str, Stages]) -> pd.DataFrame:
    """Each statement of the paper's stage description (`CHECKS`, rows) against each profile (name -> `Stages`,
    columns): "yes", "no", or "stage not found" where the rule did not reach the stage the statement is about."""
    words = {True: "yes", False: "no"}
    return pd.DataFrame({name: [words.get(st.checks.get(check), "stage not found") for check in CHECKS]
                         for name, st in results.items()}, index=pd.Index(CHECKS, name="the paper's description"))


# ----------------------------------------------------------------------------------------------
# How widely each language's neurons are shared (the paper's explanation of English)


def others_above(above: torch.Tensor, langs: Sequence[str]) -> pd.DataFrame:
    """For each language k: the neurons above τ in k, by the number m = 0…K−1 of *other* languages they are
    also above τ in. above: bool [..., K] (e.g. `probs > tau` for all neurons, or `Identification.high` for
    the selected ones). Returns a DataFrame indexed by language, one column per m.

    A neuron with m = K − 1 is above τ everywhere, i.e. general. The paper's hypothesis for English
    (Sec. 5.4) predicts that English's neurons sit at large m more often than other languages' do.
    """
    langs = tuple(langs)
    flat = torch.as_tensor(above).reshape(-1, above.shape[-1]).bool()
    if flat.shape[1] != len(langs):
        raise ValueError(f"above has {flat.shape[1]} languages on its last axis but langs has {len(langs)}")
    n = flat.sum(-1)
    k = len(langs)
    rows = {lang: torch.bincount(n[flat[:, i]] - 1, minlength=k)[:k].tolist() for i, lang in enumerate(langs)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=pd.Index(range(k), name="other languages above τ"))


def sharing_table(probs: torch.Tensor, ident) -> pd.DataFrame:
    """Per language, how widely its neurons are shared (the paper's explanation of English, Sec. 5.4): its neurons
    above τ; the % of them above τ in 8 or 9 other languages, and in exactly 8; the % of the neurons above τ in
    exactly K − 1 languages that miss this one; and the mean number of languages of its related neurons."""
    langs, k = ident.langs, len(ident.langs)
    above = (probs > ident.tau).reshape(-1, k)
    table = others_above(above, langs)
    nearly = above[above.sum(-1) == k - 1]
    related_n = []
    for lang in langs:
        pairs = ident.neurons("related", lang)
        related_n.append(float(ident.n_above[pairs[:, 0], pairs[:, 1]].float().mean()) if len(pairs) else 0.0)
    total = table.sum(axis=1).clip(lower=1)
    return pd.DataFrame({"above τ": table.sum(axis=1),
                         "% in 8 or 9 others": 100 * (table[k - 2] + table[k - 1]) / total,
                         "% in exactly 8 others": 100 * table[k - 2] / total,
                         "% of N = 9 neurons missing it": 100 * (~nearly).sum(0).numpy() / max(len(nearly), 1),
                         "mean N of its related neurons": related_n}, index=pd.Index(langs, name="language"))


@dataclass(frozen=True)
class Standing:
    """One language's row of a `sharing_table` set against the other languages' rows.

    wide: % of its neurons above τ that are above τ in 8 or 9 other languages; wide_min, wide_max: the smallest
    and largest of that share among the other languages. missed: % of the neurons above τ in exactly K − 1
    languages that miss it; missed_rank: its rank in that column from the most missed (1). above_rank: the rank of
    its number of neurons above τ from the fewest (1). Tied languages share the best rank. related_n: the mean
    number of languages its related neurons are above τ in; related_others: the mean of that over the others.
    """

    lang: str
    wide: float
    wide_min: float
    wide_max: float
    missed: float
    missed_rank: int
    above_rank: int
    related_n: float
    related_others: float


def standing(table: pd.DataFrame, lang: str = "en") -> Standing:
    """How widely `lang`'s neurons are shared, against the other languages (the rows of `sharing_table`)."""
    if lang not in table.index:
        raise ValueError(f"language {lang!r} is not in the sharing table; known: {', '.join(table.index)}")
    wide, missed, related = "% in 8 or 9 others", "% of N = 9 neurons missing it", "mean N of its related neurons"
    others = table.drop(lang)
    return Standing(lang, float(table.loc[lang, wide]), float(others[wide].min()), float(others[wide].max()),
                    float(table.loc[lang, missed]), int(table[missed].rank(method="min", ascending=False)[lang]),
                    int(table["above τ"].rank(method="min")[lang]), float(table.loc[lang, related]),
                    float(others[related].mean()))
