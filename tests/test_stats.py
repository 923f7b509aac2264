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


def test_rank_correlation_gives_ties_their_mean_rank():
    assert stats.rank_correlation([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): covariance 4.5, variances 4.5 and 5, so r = sqrt(0.9)
    assert stats.rank_correlation([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert stats.partial_spearman([1, 2, 2, 3], [1, 3, 2, 4], []) == pytest.approx(0.8)  # ties broken by position
    with pytest.raises(ValueError, match="same length"):
        stats.rank_correlation([1, 2, 3], [1, 2])


def test_an_effect_is_read_against_its_control():
    up, small, large = stats.Estimate(0.10, 0.04, 0.17), stats.Estimate(0.02, -0.01, 0.05), stats.Estimate(0.3, 0.2, 1)
    beyond, below = stats.Estimate(0.08, 0.02, 0.12), stats.Estimate(-0.2, -0.3, -0.1)
    alone = stats.Controlled({"x": up})
    assert alone.verdict("x", +1) == "agrees" and alone.net_verdicts({"x": -1}) == {"x": "disagrees"}
    assert stats.Controlled({"x": up}, {"x": small}, {"x": beyond}).verdict("x", +1) == "agrees"
    assert stats.Controlled({"x": up}, {"x": large}, {"x": beyond}).verdict("x", +1) == "inconclusive"  # noise floor
    # net verdicts judge the effect minus the control's, not the effect
    assert stats.Controlled({"x": up}, {"x": large}, {"x": below}).net_verdicts({"x": +1}) == {"x": "disagrees"}
    table = stats.Controlled({"x": up, "y": small}, {"x": small, "y": small}, {"x": beyond, "y": beyond}).table(
        ".2f", keys=("x",), names=("a", "c", "a − c"))
    assert list(table.columns) == ["a", "c", "a − c"] and list(table.index) == ["x"]
    assert table.loc["x", "a"] == "0.10 (95 % interval 0.04 to 0.17)"
    assert list(alone.table("+.0f").columns) == ["alignment"] and alone.table("+.0f").loc["x", "alignment"] == \
        "+0 (95 % interval +0 to +0)"


def test_a_verdict_against_a_reference_value():
    assert stats.verdict(stats.Estimate(60, 40, 80), -1, against=100) == "agrees"  # well under 100
    assert stats.verdict(stats.Estimate(120, 105, 130), -1, against=100) == "disagrees"
    assert stats.verdict(stats.Estimate(90, 80, 110), -1, against=100) == "inconclusive"  # the interval spans 100
    assert stats.verdict(stats.Estimate(80, 70, 90), -1, noise=25, against=100) == "inconclusive"  # 20 below


def test_one_estimate_against_the_rest():
    est = {"en": stats.Estimate(1, 0, 2), "de": stats.Estimate(5, 3, 7), "fr": stats.Estimate(9, 4, 12),
           "es": stats.Estimate(6, 2.5, 8)}
    rest = stats.against_rest(est, "en")
    assert (rest.median, rest.lowest_lo, rest.below) == (6.0, 2.5, True)
    assert not stats.against_rest({**est, "en": stats.Estimate(1, 0, 3)}, "en").below  # 3 is above 2.5
    assert stats.against_rest(est, "fr").median == 5.0 and stats.against_rest(est, "fr").lowest_lo == 0
    with pytest.raises(ValueError, match="not among"):
        stats.against_rest(est, "sw")
    with pytest.raises(ValueError, match="no estimate besides"):
        stats.against_rest({"en": est["en"]}, "en")
