"""lnlib.compare: overlaps and changes between two identifications, on hand-made identifications."""

import pandas as pd
import pytest
import torch

from lnlib import align, compare, pipeline
from lnlib.counts import ActivationCounts
from lnlib.identify import Identification
from lnlib.protocols import Source


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


def test_overlap_percent_sign_agreement_and_larger_changes():
    assert compare.overlap_percent(BASE, ALIGNED) == {"specific": 0.0, "related": 0.0}
    assert compare.overlap_percent(ALIGNED, BASE, ("general",)) == {"general": 50.0}  # 1 of the aligned model's 2
    assert compare.sign_agreement([3, -1, 0, 2], (1, 1, -1, 5)) == 3  # 0 is not up, like −1
    with pytest.raises(ValueError, match="different lengths"):
        compare.sign_agreement([1, 2], [1])
    sums = pd.DataFrame({"specific": [5, -1], "general": [0, 4]}, index=pd.Index([1, 2], name="stage"))
    control = pd.DataFrame({"specific": [-6, 0], "general": [0, 3]}, index=sums.index)
    assert compare.larger_changes(sums, control, [(1, "specific"), (2, "specific"), (2, "general")]) == {
        (1, "specific"): False, (2, "specific"): True, (2, "general"): True}


def test_a_trajectory_grows_and_keeps_its_shape():
    first = compare.layer_change(BASE, ALIGNED)  # |changes| sum to 3
    grows = compare.Trajectory({"step 1": first, "step 2": 2 * first, "step 3": 3 * first})
    assert grows.totals.tolist() == [3, 6, 9] and grows.totals.name == "summed |change|"
    assert grows.grows and grows.shape_r == pytest.approx(1.0)
    flips = compare.Trajectory({"step 1": 2 * first, "step 2": -first})
    assert not flips.grows and flips.shape_r == pytest.approx(-1.0)


@pytest.mark.filterwarnings("ignore::lnlib.identify.IntervalWarning")  # random counts
def test_training_changes_identify_each_checkpoint_at_the_base_lambda(monkeypatch):
    def study(seed, texts):
        generator = torch.Generator().manual_seed(seed)
        counts = {lang: ActivationCounts(torch.randint(0, 20, (2, 48), generator=generator), 20) for lang in
                  texts.langs}
        return pipeline.from_counts({"data": counts}, pipeline.Settings(rate=0.05), texts)

    texts = pipeline.Texts(sources=(Source("mgsm", range(4)),))
    base, final = study(0, texts), study(1, texts)
    found, applied = {"a.safetensors": study(2, texts), "b.safetensors": study(3, texts)}, []

    def identify_checkpoint(model, tokenizer, texts_, settings):
        assert texts_ == base.texts and settings == base.fixed()
        return found[applied[-1]]

    monkeypatch.setattr(compare, "apply_aligned", lambda model, path: applied.append(path))
    monkeypatch.setattr(compare, "language_neurons", identify_checkpoint)
    run = align.AlignRun(align.AlignConfig(steps=6), [1.0] * 6, [(2, "a.safetensors"), (4, "b.safetensors")], 0, 0.0)
    during = compare.training_changes(None, None, run, base, final)
    assert applied == ["a.safetensors", "b.safetensors"] and list(during.changes) == ["step 2", "step 4", "step 6"]
    assert during.changes["step 4"].equals(compare.layer_change(base.ident, found["b.safetensors"].ident))
    assert during.changes["step 6"].equals(compare.layer_change(base.ident, final.with_settings(lam=base.lam).ident))
    with pytest.raises(ValueError, match="study of base's texts"):
        compare.training_changes(None, None, run, base, study(1, texts.replace(sources=(Source("mgsm", range(8)),))))
