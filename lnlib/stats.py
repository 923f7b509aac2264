"""Uncertainty: bootstrap intervals for the book's headline numbers, and verdicts that a result could falsify.

A headline number is a statistic of texts (held-out questions, counted texts). `bootstrap` recomputes it on
resamples of those texts, drawn with replacement within each language, the same draw for every condition that
shares the texts (so a difference between conditions is a paired difference); its percentiles give the interval.
`verdict` reads an estimate against the paper's direction: "agrees" or "disagrees" only when the interval excludes
zero and the effect is larger than the noise floor (e.g. what a control fine-tune moves); else "inconclusive".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A statistic, its bootstrap interval [lo, hi] at `level`, and the number of resamples."""

    value: float
    lo: float
    hi: float
    level: float = LEVEL
    n: int = 0

    def spans_zero(self) -> bool:
        return self.lo <= 0 <= self.hi

    def text(self, fmt: str = "{:.2f}") -> str:
        """e.g. "5.84 (95 % interval 3.10 to 9.02)"."""
        return f"{fmt.format(self.value)} ({round(100 * self.level)} % interval {fmt.format(self.lo)} to " \
               f"{fmt.format(self.hi)})"

    def __format__(self, spec: str) -> str:
        """f"{e:.2f}": that format for all three numbers; f"{e:n}": each as `num` writes it; f"{e}": .2f."""
        if spec == "n":
            return f"{num(self.value)} ({round(100 * self.level)} % interval {num(self.lo)} to {num(self.hi)})"
        return self.text("{:" + spec + "}") if spec else self.text()


def num(value: float) -> str:
    """A number as prose shows it: 0.02, 18.37, 1,909, 2.0e+10."""
    value = float(value)
    if abs(value) >= 1e6:
        return f"{value:.1e}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def estimate(value: float, samples, level: float = LEVEL) -> Estimate:
    """An `Estimate` from a statistic and its bootstrap samples (NaN samples are dropped)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return Estimate(float(value), math.nan, math.nan, level, 0)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return Estimate(float(value), float(lo), float(hi), level, len(samples))


def resample_indices(sizes: Mapping[str, int], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One bootstrap draw: for each language, as many text positions as it has, drawn with replacement."""
    return {lang: torch.randint(n, (n,), generator=generator) for lang, n in sizes.items()}


def bootstrap(statistic: Callable[[Mapping[str, torch.Tensor] | None], object], sizes: Mapping[str, int],
              n: int = 1000, seed: int = 0, level: float = LEVEL) -> dict | Estimate:
    """Bootstrap a statistic of texts. statistic(index) computes it on the texts at `index` (language -> text
    positions), or on all texts when index is None; it returns one number or a dict of numbers. Returns an
    `Estimate` (or a dict of them) whose value is the statistic on all texts."""
    generator = torch.Generator().manual_seed(seed)
    full = statistic(None)
    draws = [statistic(resample_indices(sizes, generator)) for _ in range(n)]
    if isinstance(full, Mapping):
        return {key: estimate(full[key], [d[key] for d in draws], level) for key in full}
    return estimate(full, draws, level)


def verdict(effect: Estimate, expected_sign: int, noise: float = 0.0, beyond: Estimate | None = None,
            against: float = 0.0) -> str:
    """"agrees" or "disagrees" with an effect of `expected_sign` (+1 or −1), or "inconclusive" when the interval
    spans zero or the effect's size is within `noise` (the noise floor, in the effect's units). beyond: the effect
    minus the control's, bootstrapped over the same texts; also inconclusive when its interval spans zero or it
    points the other way (the effect does not stand out from the control). against: the value that means no effect
    (default 0, for a change; e.g. 100 for a percentage of a reference): the effect is its distance from it."""
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign}")
    if against:
        effect = Estimate(effect.value - against, effect.lo - against, effect.hi - against, effect.level, effect.n)
    if math.isnan(effect.lo) or effect.spans_zero() or abs(effect.value) <= abs(noise):
        return "inconclusive"
    if beyond is not None and (math.isnan(beyond.lo) or beyond.spans_zero()
                               or (beyond.value > 0) != (effect.value > 0)):
        return "inconclusive"
    return "agrees" if (effect.value > 0) == (expected_sign > 0) else "disagrees"


@dataclass(frozen=True)
class Others:
    """The other estimates of a dict, seen from one of them (`against_rest`): the median of their values, the
    smallest lower bound of their intervals, and whether the one's interval lies wholly below all of theirs."""

    median: float
    lowest_lo: float
    below: bool


def against_rest(estimates: Mapping[str, Estimate], key: str) -> Others:
    """One estimate of `estimates` (e.g. English's, of a dict by language) against all the others: their median
    value, their smallest lower bound, and whether `key`'s upper bound lies under that (`Others`)."""
    if key not in estimates:
        raise ValueError(f"{key!r} is not among the estimates; known: {', '.join(map(str, estimates))}")
    others = [e for k, e in estimates.items() if k != key]
    if not others:
        raise ValueError(f"there is no estimate besides {key!r} to set it against")
    lowest = min(e.lo for e in others)
    return Others(float(pd.Series([e.value for e in others]).median()), lowest, bool(estimates[key].hi < lowest))


@dataclass(frozen=True)
class Controlled:
    """An effect set against a control run of the same size (e.g. an alignment against a control fine-tune), each
    a dict of `Estimate`s by statistic, bootstrapped over the same texts: effect; control, the control's own
    change (None when no control ran); beyond, the effect minus the control's (None likewise). names: the three's
    labels in `table`."""

    effect: dict[str, Estimate]
    control: dict[str, Estimate] | None = None
    beyond: dict[str, Estimate] | None = None
    names: tuple[str, str, str] = ("alignment", "control", "alignment − control")

    def verdict(self, key: str, expected_sign: int) -> str:
        """`verdict` on the effect's `key` with the control's size as the noise floor and the effect minus the
        control's as `beyond` (without a control: on the effect alone)."""
        if self.control is None:
            return verdict(self.effect[key], expected_sign)
        return verdict(self.effect[key], expected_sign, self.control[key].value, self.beyond[key])

    def net_verdicts(self, expected_signs: Mapping[str, int]) -> dict[str, str]:
        """For each key of `expected_signs` (key -> +1 or −1), `verdict` on the effect minus the control's (on the
        effect alone without a control), with no further noise floor."""
        net = self.effect if self.beyond is None else self.beyond
        return {key: verdict(net[key], sign) for key, sign in expected_signs.items()}

    def table(self, spec: str = ".2f", keys=None, names=None) -> pd.DataFrame:
        """One column per run that was made (labelled by `names`, default the instance's), one row per statistic
        (all, or those in `keys`): each estimate with its interval as text, every number formatted with `spec`."""
        parts = zip(names or self.names, (self.effect, self.control, self.beyond), strict=True)
        return pd.DataFrame({name: {key: format(part[key], spec) for key in (keys or part)}
                             for name, part in parts if part is not None})


def partial_spearman(x, y, controls) -> float:
    """Spearman correlation of x and y with the ranks of each control variable regressed out of both (a partial
    rank correlation). controls: a list of arrays of the same length as x."""
    def ranks(a):
        return np.argsort(np.argsort(np.asarray(a, dtype=float), kind="stable"), kind="stable").astype(float)

    rx, ry = ranks(x), ranks(y)
    design = np.column_stack([np.ones(len(rx))] + [ranks(c) for c in controls])
    resid_x = rx - design @ np.linalg.lstsq(design, rx, rcond=None)[0]
    resid_y = ry - design @ np.linalg.lstsq(design, ry, rcond=None)[0]
    return float(np.corrcoef(resid_x, resid_y)[0, 1])


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of two equally long sequences: the Pearson correlation of their ranks, tied values
    sharing their mean rank (NaN when either is constant)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be two sequences of the same length, got shapes {x.shape} and {y.shape}")
    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def proportion(hits: int, n: int, level: float = LEVEL) -> Estimate:
    """A rate with its Wilson score interval (for k of n outcomes, e.g. continuations in the right language)."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, level, 0)
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the interval contains p; min/max keep rounding from putting p outside it at 0 or 1
    return Estimate(p, min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)), level, n)
