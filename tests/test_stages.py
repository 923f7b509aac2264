import numpy as np
import pytest
import torch

from lnlib import stages
from lnlib.stages import four_stages, others_above

# The released Mistral-7B profile (PAPER.md §7: distinct specific / related / general neurons per layer at λ*)
MISTRAL = [(17, 171, 181), (2, 10, 106), (63, 218, 103), (42, 23, 114), (31, 9, 192), (2, 1, 194), (1, 1, 253),
           (1, 2, 253), (1, 0, 270), (0, 1, 307), (0, 1, 334), (0, 1, 431), (0, 0, 417), (1, 2, 443), (2, 3, 555),
           (2, 5, 445), (0, 4, 348), (0, 0, 423), (60, 29, 316), (65, 37, 261), (59, 23, 151), (59, 17, 92),
           (45, 14, 66), (59, 15, 48), (90, 16, 50), (74, 15, 51), (73, 22, 54), (211, 81, 66), (379, 147, 108),
           (331, 260, 136), (145, 124, 284), (51, 101, 745)]


def _columns(rows):
    return [list(col) for col in zip(*rows, strict=True)]


def clean_profile():
    """12 layers: language neurons in 0–2, a shared middle 3–6, a second language peak 7–10 where general
    neurons are fewest, and general neurons at their maximum in layer 11."""
    spec = [30, 40, 20, 1, 0, 0, 1, 20, 50, 60, 40, 30]
    rel = [60, 50, 30, 2, 1, 0, 0, 20, 60, 80, 50, 10]
    gen = [40, 50, 60, 200, 250, 240, 210, 90, 40, 30, 60, 400]
    return spec, rel, gen


def test_clean_four_stage_profile_gives_its_boundaries():
    st = four_stages(*clean_profile())
    assert st.found and st.reason == ""
    assert st.boundaries == (3, 7, 11)
    assert st.labels == (1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4)
    assert st.ranges() == {1: (0, 2), 2: (3, 6), 3: (7, 10), 4: (11, 11)}
    assert st.evidence["general max layer"] == 11
    assert st.evidence["stage 3 general min layer"] == 9
    assert st.checks["stage 3: general neurons at their minimum"]
    # layer 10 -> 11: specific 40 -> 30, related 50 -> 10: the total falls, both fall
    assert not st.checks["stage 4: specific + related total rises"]
    assert not st.checks["stage 4: specific and related move in opposite directions"]
    assert "stage 4: layer 11" in st.describe()
    assert set(st.checks) == set(stages.CHECKS)
    summary = st.summary()
    assert summary["layers"].tolist() == ["0–2", "3–6", "7–10", "11"]
    assert summary.loc[2, "specific"] == 2 and summary.loc[4, "general, max per layer"] == 400
    table = st.table()
    assert list(table["stage"]) == list(st.labels) and table["language share"].iloc[4] == pytest.approx(1 / 251)


def test_final_layer_checks_follow_the_counts():
    spec, rel, gen = clean_profile()
    spec[-1], rel[-1] = 20, 120  # specific falls, related rises, total rises
    st = four_stages(spec, rel, gen)
    assert st.found
    assert st.checks["stage 4: specific + related total rises"]
    assert st.checks["stage 4: specific and related move in opposite directions"]


def test_three_stage_profile_without_final_general_peak():
    spec, rel, gen = clean_profile()
    gen[-1] = 50  # no general maximum at the end: the three-stage view
    st = four_stages(spec, rel, gen)
    assert not st.found
    assert "three stages" in st.reason and "vocabulary-space" in st.reason
    assert st.boundaries == (3, 7, None)
    assert st.labels == (1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3)
    assert st.checks["stage 4: general neurons at their maximum"] is False
    assert st.checks["stage 3: general neurons at their minimum"] and st.evidence["stage 3 general min layer"] == 9
    assert "stage 4: specific + related total rises" not in st.checks


def test_profile_without_a_shared_middle():
    spec = [30] * 10
    rel = [30] * 10
    gen = [50] * 9 + [200]
    st = four_stages(spec, rel, gen)
    assert not st.found and "no shared semantic-space stage" in st.reason
    assert st.boundaries == (None, None, None) and set(st.labels) == {0}


def test_middle_run_must_be_long_enough_and_in_the_middle():
    spec, rel, gen = clean_profile()
    assert four_stages(spec, rel, gen, min_middle=5).reason.startswith("the longest middle run")
    # a low run touching the first layer is not a middle stage
    spec2 = [0, 0, 0, 0, 30, 40, 50, 30]
    rel2 = [0, 0, 0, 0, 30, 40, 50, 30]
    gen2 = [100, 100, 100, 100, 30, 30, 30, 300]
    assert "no shared semantic-space stage" in four_stages(spec2, rel2, gen2).reason


def test_longest_low_run_wins_over_an_isolated_dip():
    spec, rel, gen = clean_profile()
    spec[1], rel[1] = 0, 0  # an isolated low layer inside stage 1
    st = four_stages(spec, rel, gen)
    assert st.found and st.boundaries == (3, 7, 11)
    assert st.evidence["low runs"][0] == (1, 1)


def test_no_rise_of_language_neurons_after_the_middle():
    spec, rel, gen = clean_profile()
    for i in range(7, 11):
        spec[i], rel[i] = 2, 2
    st = four_stages(spec, rel, gen)
    assert not st.found and "no output-space transformation stage" in st.reason


def test_no_language_neurons_before_the_middle():
    spec, rel, gen = clean_profile()
    for i in range(3):
        spec[i], rel[i] = 5, 5  # a share of 0.14-0.2: above low, below high (of the 0.82 peak)
    st = four_stages(spec, rel, gen)
    assert not st.found and "no multilingual understanding stage" in st.reason


def test_stages_3_and_4_indistinguishable():
    spec, rel, gen = clean_profile()
    gen[7:] = [390, 395, 400, 398, 400]
    st = four_stages(spec, rel, gen)
    assert not st.found and "cannot be told apart" in st.reason


@pytest.mark.parametrize("profile, message", [
    (([1, 2, 3], [1, 2, 3], [1, 2, 3]), "at least 4 layers"),
    (([1, 2, 3, 4], [1, 2, 3], [1, 2, 3, 4]), "one count per layer"),
    (([1, -2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]), "non-negative"),
    (([1, float("nan"), 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]), "finite"),
    (([[1, 2], [3, 4]], [1, 2, 3, 4], [1, 2, 3, 4]), "1-D"),
])
def test_bad_inputs_raise(profile, message):
    with pytest.raises(ValueError, match=message):
        four_stages(*profile)


def test_bad_parameters_raise():
    args = clean_profile()
    with pytest.raises(ValueError, match="odd window"):
        four_stages(*args, smooth=2)
    with pytest.raises(ValueError, match="low .* must be below high"):
        four_stages(*args, low=0.5, high=0.3)
    with pytest.raises(ValueError, match="final must lie"):
        four_stages(*args, final=0)


def test_empty_profiles_are_not_found():
    zeros = [0] * 8
    st = four_stages(zeros, zeros, zeros)
    assert not st.found and "no neurons of any type" in st.reason
    st = four_stages(zeros, zeros, [5] * 8)
    assert not st.found and "no language" in st.reason


def test_smoothing_is_a_centred_moving_average():
    values = np.array([0.0, 3, 6, 3, 0])
    assert stages.smooth_profile(values, 3).tolist() == [1.5, 3, 4, 3, 1.5]
    assert stages.smooth_profile(values, 1).tolist() == values.tolist()


def test_released_mistral_profile():
    spec, rel, gen = _columns(MISTRAL)
    st = four_stages(spec, rel, gen)
    assert st.found
    assert st.boundaries == (5, 18, 31)  # stage 1: 0–4, stage 2: 5–17, stage 3: 18–30, stage 4: 31
    assert st.evidence["general max layer"] == 31 and st.evidence["general min layer"] == 23
    assert st.evidence["stage 3 peak layer"] == 28
    # the paper says the specific + related total rises in the last layer; the released data do not show it
    assert st.evidence["stage 4 change in specific + related"] == (51 + 101) - (145 + 124)
    assert not st.checks["stage 4: specific + related total rises"]
    assert st.checks["stage 3: general neurons at their minimum"]
    # light smoothing does not move the boundaries
    assert four_stages(spec, rel, gen, smooth=3).boundaries == (5, 18, 31)


def test_stages_of_identification_uses_layer_counts(data_dir):
    from lnlib import counts, data, identify

    ident = identify.identify(counts.load_released_probs(), data.RELEASED_LAMBDA)
    counts = ident.layer_counts()
    assert [tuple(r) for r in counts[["specific", "related", "general"]].itertuples(index=False)] == MISTRAL
    assert stages.stages_of(ident).boundaries == (5, 18, 31)


def test_others_above_counts_other_languages():
    above = torch.tensor([
        [1, 0, 0],  # a only
        [1, 1, 0],  # a and b
        [1, 1, 1],  # all three
        [0, 1, 1],  # b and c
        [0, 0, 0],  # none
    ], dtype=torch.bool)
    table = others_above(above, ["a", "b", "c"])
    assert table.loc["a"].tolist() == [1, 1, 1]
    assert table.loc["b"].tolist() == [0, 2, 1]
    assert table.loc["c"].tolist() == [0, 1, 1]
    assert table.sum(axis=1).tolist() == above.sum(0).tolist()
    with pytest.raises(ValueError, match="languages on its last axis"):
        others_above(above, ["a", "b"])


def test_stage_words_and_the_check_table():
    clean = four_stages(*clean_profile())  # every check holds but the two about the last layer's total
    assert clean.finding == "finds all four stages" and clean.why == "none: all four stages were found"
    assert clean.checks_passed == 6
    assert clean.stage_name(0) == "multilingual understanding" and clean.stage_name(11) == "vocabulary-space outputting"
    assert clean.stage_name(None) == "not assigned"
    flat = four_stages([30] * 10, [30] * 10, [50] * 9 + [200])  # no shared middle: no stage, no check
    assert flat.finding == "does not find four stages" and flat.why == flat.reason and flat.checks_passed == 0
    assert flat.stage_name(4) == "not assigned"
    spec, rel, gen = clean_profile()
    gen[-1] = 50  # three stages: the stage 4 statements that need a stage 4 are not tested
    table = stages.check_table({"clean": clean, "three": four_stages(spec, rel, gen), "flat": flat})
    assert list(table.columns) == ["clean", "three", "flat"] and table.index.name == "the paper's description"
    assert list(table.index) == list(stages.CHECKS)
    assert table["clean"].tolist() == ["yes"] * 6 + ["no", "no"]
    assert table.loc["stage 4: general neurons at their maximum", "three"] == "no"
    assert table.loc["stage 4: specific + related total rises", "three"] == "stage not found"
    assert set(table["flat"]) == {"stage not found"}


def test_trend_words():
    assert [stages.trend(x) for x in (2, -0.5, 0)] == ["rises", "falls", "stays"]
    assert [stages.trend(x, "rise") for x in (1, -1, 0)] == ["rise", "fall", "stay"]
    assert [stages.trend(x, "rising") for x in (1, -1, 0)] == ["rising", "falling", "staying"]
    with pytest.raises(ValueError, match="form must be"):
        stages.trend(1, "rose")


def test_standing_of_one_language_in_a_sharing_table():
    import pandas as pd

    table = pd.DataFrame({"above τ": [5, 10, 5, 8], "% in 8 or 9 others": [40.0, 10.0, 20.0, 30.0],
                          "% of N = 9 neurons missing it": [50.0, 20.0, 30.0, 0.0],
                          "mean N of its related neurons": [6.0, 3.0, 4.0, 5.0]}, index=["en", "de", "fr", "es"])
    en = stages.standing(table, "en")
    assert (en.wide, en.wide_min, en.wide_max, en.missed) == (40.0, 10.0, 30.0, 50.0)
    assert en.missed_rank == 1 and en.above_rank == 1  # most missed; fewest above τ, tied with fr
    assert en.related_n == 6.0 and en.related_others == 4.0
    de = stages.standing(table, "de")
    assert de.missed_rank == 3 and de.above_rank == 4 and (de.wide_min, de.wide_max) == (20.0, 40.0)
    with pytest.raises(ValueError, match="not in the sharing table"):
        stages.standing(table, "sw")
