"""lnlib.paper: the transcribed values, read the way chapters set them beside their own."""

import pytest
import torch

from lnlib import identify, paper


def test_table3_under_the_names_of_versus():
    table = paper.table3_versus()
    assert table == {"en specific": 46, "en related": 603, "others, mean specific": 613, "others, mean related": 2006}
    ident = identify.identify(torch.rand(1, 50, 10, generator=torch.Generator().manual_seed(0)), 0.1, rate=0.2)
    assert list(table) == list(ident.versus("en"))  # the same rows, so the two line up in one table


def test_fig2_points_lost():
    assert paper.fig2_points_lost("ja", "zh") == 23  # row ja, column zh of Fig. 2(b): -0.23
    assert paper.fig2_points_lost("bn", "th") == 40 and paper.fig2_points_lost("en", "es") == -1  # +0.01: a gain
    assert paper.fig2_points_lost("th", "th", "specific") == 22  # Fig. 2(a)'s diagonal
    with pytest.raises(ValueError, match="not in Fig. 2"):
        paper.fig2_points_lost("xx", "en")
    with pytest.raises(ValueError, match="no setting"):
        paper.fig2_points_lost("en", "en", "general")
