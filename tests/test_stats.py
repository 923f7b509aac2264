"""lnlib.stats: intervals that always contain their estimate."""

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
