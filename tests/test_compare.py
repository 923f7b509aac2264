"""lnlib.compare: overlaps and changes between two identifications, on hand-made identifications."""

import pandas as pd
import pytest
import torch

from lnlib import compare
from lnlib.identify import Identification


def _ident(selected, high, n_above, langs=("en", "de", "zh")):
    return Identification(tuple(langs), "entropy-lambda", 0.1, 0.01, 0.95, 0.5, torch.tensor(selected),
                          torch.tensor(high), torch.tensor(n_above))


# 2 layers x 3 neurons, 3 languages. Base: neuron 0 de-specific; neuron 4 related (de, zh); neuron 5 general.
BASE = _ident([0, 4], [[False, True, False], [False, True, True]], [[1, 0, 0], [0, 2, 3]])
# Aligned: neuron 0 now related (en, de); neuron 1 zh-specific; neuron 2 general too.
ALIGNED = _ident([0, 1], [[True, True, False], [False, False, True]], [[2, 1, 3], [0, 0, 3]])


def test_layer_change():
    change = compare.layer_change(BASE, ALIGNED)
    assert change.loc[0].tolist() == [0, 1, 1]  # layer 0: specific 1 -> 1, related 0 -> 1, general 0 -> 1
    assert change.loc[1].tolist() == [0, -1, 0]


def test_n_change_over_all_neurons_and_selected():
    table = compare.n_change(BASE, ALIGNED)
    assert table["before"].tolist() == [1, 1, 1] and table["after"].tolist() == [1, 1, 2]
    assert table["change"].tolist() == [0, 0, 1]
    assert compare.n_change(BASE, ALIGNED, over="selected")["change"].tolist() == [0, 0, 0]


def test_overlap_and_language_changes():
    overlap = compare.overlap_table(BASE, ALIGNED)
    assert overlap["specific"] == 0.0 and overlap["general"] == 100.0
    per_lang, means = compare.lang_change(BASE, ALIGNED, trained=["de"])
    assert per_lang.loc["de"].tolist() == [-1, 0, True] and per_lang.loc["zh"].tolist() == [1, -1, False]
    assert isinstance(means, pd.DataFrame) and means.loc["untrained", "specific"] == 1.0  # zh only
    assert compare.lang_change(BASE, ALIGNED, ["de"], include_english=True)[1].loc["untrained", "related"] == 0.0
    with pytest.raises(ValueError, match="not in the identification"):
        compare.lang_change(BASE, ALIGNED, trained=["sw"])
