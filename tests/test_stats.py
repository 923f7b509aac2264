"""lnlib.stats: intervals that always contain their estimate."""

import math

import pytest

from lnlib import stats


@pytest.mark.parametrize("hits, n", [(0, 10), (10, 10), (0, 1), (1, 1), (3, 7), (9, 10), (0, 30), (30, 30)])
def test_a_wilson_interval_contains_its_rate(hits, n):
    e = stats.proportion(hits, n)
    assert 0.0 <= e.lo <= e.value <= e.hi <= 1.0
    assert e.value == hits / n and e.n == n
    if 0 < hits < n:
        assert e.lo < e.value < e.hi


def test_no_outcome_gives_nan():
    e = stats.proportion(0, 0)
    assert e.n == 0 and e.value != e.value


def test_a_verdict_needs_an_interval_clear_of_zero_and_of_the_noise_floor():
    up, spans = stats.Estimate(0.5, 0.2, 0.8), stats.Estimate(0.5, -0.1, 1.1)
    assert stats.verdict(up, +1) == "agrees" and stats.verdict(up, -1) == "disagrees"
    assert stats.verdict(spans, +1) == "inconclusive"
    assert stats.verdict(up, +1, noise=0.6) == stats.verdict(up, +1, noise=-0.6) == "inconclusive"
    assert stats.verdict(stats.Estimate(0.5, math.nan, math.nan), +1) == "inconclusive"
    with pytest.raises(ValueError, match="expected_sign"):
        stats.verdict(up, 0)


def test_a_verdict_against_a_control_needs_the_difference_clear_of_zero():
    up = stats.Estimate(0.10, 0.04, 0.17)
    assert stats.verdict(up, +1, beyond=stats.Estimate(0.06, 0.01, 0.11)) == "agrees"
    assert stats.verdict(up, +1, beyond=stats.Estimate(0.01, -0.05, 0.08)) == "inconclusive"  # control as large
    assert stats.verdict(up, +1, beyond=stats.Estimate(-0.2, -0.3, -0.1)) == "inconclusive"  # control larger
    assert stats.verdict(up, -1, beyond=stats.Estimate(0.06, 0.01, 0.11)) == "disagrees"
