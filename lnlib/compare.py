"""Compare: two identifications of the same model family side by side (base and aligned model, two datasets,
two settings): overlaps, and the changes per layer, per number of languages and per language, also at the
checkpoints of a training run (`training_changes`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from torch import nn

from lnlib.align import AlignRun, apply_aligned
from lnlib.identify import Identification
from lnlib.pipeline import NeuronStudy, language_neurons


def overlap_ratio(a: Identification, b: Identification, kind: str = "specific", unit: str = "triple",
                  lang: str | None = None) -> float:
    """``|A ∩ B| / |A|`` with A the neurons of reference `a` (the paper's Table 4 takes the base model on MGSM
    as reference; it does not give the formula).

    unit="triple": a neuron counts once per language it is assigned to, and only matches the same neuron
    assigned to the same language in `b` (the stricter reading). unit="neuron": distinct (layer, neuron)
    pairs, whatever their languages. "general" neurons have no language, so they always use pairs. lang: only the
    neurons assigned to that language. Returns NaN when A is empty.
    """
    if unit not in ("triple", "neuron"):
        raise ValueError(f"unit must be 'triple' or 'neuron', got {unit!r}")
    if a.shape != b.shape:
        raise ValueError(f"identifications have different shapes {a.shape} and {b.shape}")

    def keys(ident: Identification) -> set[tuple[int, ...]]:
        if kind == "general":
            return {tuple(p) for p in ident.neurons(kind).tolist()}
        langs = [lang] if lang is not None else [k for k in a.langs if k in ident.langs]
        pairs = {(k, *p) for k in langs for p in ident.neurons(kind, k).tolist()}
        return {p[1:] for p in pairs} if unit == "neuron" else pairs

    ref, other = keys(a), keys(b)
    return len(ref & other) / len(ref) if ref else float("nan")


def _check_pair(base: Identification, other: Identification) -> None:
    if base.shape != other.shape or base.langs != other.langs:
        raise ValueError(f"identifications differ in shape ({base.shape} vs {other.shape}) or languages "
                         f"({base.langs} vs {other.langs}); compare identifications of the same model family")


def layer_change(base: Identification, other: Identification) -> pd.DataFrame:
    """Per layer, the change (other - base) of distinct specific, related and general neurons (paper Fig. 4)."""
    _check_pair(base, other)
    return other.layer_counts() - base.layer_counts()


def n_change(base: Identification, other: Identification, over: str = "all") -> pd.DataFrame:
    """Per N = 1..K, the number of neurons above tau in exactly N languages, before, after and the change
    (paper Figs. 5 and 15). over="all": every neuron; over="selected": the selected language neurons."""
    _check_pair(base, other)
    if over == "all":
        before, after = base.n_histogram()[1:], other.n_histogram()[1:]
    elif over == "selected":
        before, after = base.appear[1:], other.appear[1:]
    else:
        raise ValueError(f"over must be 'all' or 'selected', got {over!r}")
    frame = pd.DataFrame({"before": before, "after": after}, index=pd.RangeIndex(1, base.n_langs + 1, name="N"))
    frame["change"] = frame["after"] - frame["before"]
    return frame


def overlap_percent(base: Identification, other: Identification, kinds: Sequence[str] = ("specific", "related"),
                    unit: str = "triple") -> dict[str, float]:
    """Overlap ratio ``|base ∩ other| / |base|`` in %, per kind (default the two the paper's Table 4 gives); a
    statistic `lnlib.pipeline.paired_bootstrap` can resample."""
    return {kind: 100 * overlap_ratio(base, other, kind, unit) for kind in kinds}


def overlap_table(base: Identification, other: Identification, unit: str = "triple") -> pd.Series:
    """Overlap ratio ``|base ∩ other| / |base|`` in %, for specific, related and general neurons (paper Table 4)."""
    _check_pair(base, other)
    return pd.Series(overlap_percent(base, other, ("specific", "related", "general"), unit), name="overlap %")


def lang_change(base: Identification, other: Identification, trained: Sequence[str],
                include_english: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per language, the change of specific and related neurons, and its mean over trained and untrained
    languages (paper Table 2). English, the alignment target, is left out of "untrained" unless asked.
    Returns (per-language table, group means)."""
    _check_pair(base, other)
    unknown = [lang for lang in trained if lang not in base.langs]
    if unknown:
        raise ValueError(f"trained languages {unknown} are not in the identification ({', '.join(base.langs)})")
    diff = (other.lang_counts() - base.lang_counts())[["specific", "related"]]
    diff["trained"] = [lang in trained for lang in diff.index]
    untrained = [lang for lang in diff.index if lang not in trained and (include_english or lang != "en")]
    means = pd.DataFrame({"trained": diff.loc[list(trained), ["specific", "related"]].mean(),
                          "untrained": diff.loc[untrained, ["specific", "related"]].mean()}).T
    return diff, means


def totals(ident: Identification) -> dict[str, int]:
    """Specific and related (neuron, language) pairs, and general neurons: the paper's three classes, counted."""
    counts = ident.lang_counts()
    return {"specific": int(counts["specific"].sum()), "related": int(counts["related"].sum()),
            "general": ident.n_general}


def totals_change(base: Identification, other: Identification) -> dict[str, int]:
    """`totals` of `other` minus those of `base`."""
    _check_pair(base, other)
    a, b = totals(base), totals(other)
    return {kind: b[kind] - a[kind] for kind in a}


def stage_sums(change: pd.DataFrame, labels) -> pd.DataFrame:
    """A per-layer change table (`layer_change`) summed over the layers of each stage (labels: one stage per layer,
    0 = none), one row per stage found."""
    frame = change.copy()
    frame["stage"] = list(labels)
    return frame[frame["stage"] > 0].groupby("stage").sum()


def sign_checks(sums: pd.DataFrame, signs: dict) -> dict[tuple[int, str], bool]:
    """For each (stage, type) the paper gives a direction for (`lnlib.paper.FIG4_SIGNS`), whether the stage's sum
    moves that way (stages the sums lack are left out)."""
    return {(stage, kind): bool(sums.loc[stage, kind] * sign > 0)
            for stage, kinds in signs.items() if stage in sums.index for kind, sign in kinds.items()}


def larger_changes(sums: pd.DataFrame, control: pd.DataFrame, keys) -> dict[tuple[int, str], bool]:
    """For each (stage, type) key (e.g. of `sign_checks`), whether the change summed over the stage (`stage_sums`) is
    larger in size than the control's in the same stage and type."""
    return {key: bool(abs(sums.loc[key]) > abs(control.loc[key])) for key in keys}


def sign_agreement(changes: Sequence[float], reported: Sequence[float]) -> int:
    """At how many positions two equally long series of changes (e.g. `n_change`'s and the paper's Fig. 5) point
    the same way: both up (> 0), or both not."""
    changes, reported = list(changes), list(reported)
    if len(changes) != len(reported):
        raise ValueError(f"the series have different lengths ({len(changes)} and {len(reported)})")
    return int(sum(bool(a > 0) == bool(b > 0) for a, b in zip(changes, reported, strict=True)))


@dataclass(frozen=True)
class Trajectory:
    """Per-layer changes (`layer_change` tables) at successive points of a training run, in training order:
    changes maps a label (e.g. "step 8") to its table (the paper's Figs 17–19)."""

    changes: Mapping[str, pd.DataFrame]

    @property
    def totals(self) -> pd.Series:
        """Per point, the absolute changes summed over layers and types ("summed |change|")."""
        return pd.Series({name: int(table.abs().sum().sum()) for name, table in self.changes.items()},
                         name="summed |change|")

    @property
    def grows(self) -> bool:
        """Whether the summed absolute change grows from every point to the next."""
        totals = self.totals.tolist()
        return all(b > a for a, b in zip(totals, totals[1:], strict=False))

    @property
    def shape_r(self) -> float:
        """Pearson's r between the first and the last point's per-layer changes, over layers and types: whether the
        changes keep their shape as they grow."""
        tables = list(self.changes.values())
        return float(tables[0].stack().corr(tables[-1].stack()))


def training_changes(model: nn.Module, tokenizer, run: AlignRun, base: NeuronStudy, final: NeuronStudy
                     ) -> Trajectory:
    """The per-layer changes against `base` during a training run (`lnlib.align.aligned`): at each of the run's
    checkpoints, loaded into `model` and identified on base's texts at base's λ, and at its last step from `final`,
    the trained model's study of the same texts (e.g. `NeuronStudy.first_texts` of a larger one: no model run),
    identified at base's λ too. `model` is left with the last checkpoint's weights."""
    if final.texts != base.texts:
        raise ValueError(f"final must be a study of base's texts ({base.texts.describe() if base.texts else None}), "
                         f"got {final.texts.describe() if final.texts else None}")
    changes = {}
    for step, path in run.checkpoints:
        apply_aligned(model, path)
        found = language_neurons(model, tokenizer, base.texts, base.fixed())
        changes[f"step {step}"] = layer_change(base.ident, found.ident)
    changes[f"step {run.config.steps}"] = layer_change(base.ident, final.with_settings(lam=base.lam).ident)
    return Trajectory(changes)
