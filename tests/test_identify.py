"""lnlib.identify: hand-worked synthetic cases, and exact reproduction of the paper's released Mistral-7B mask."""

import math

import pytest
import torch

from lnlib import compare, counts, store
from lnlib import identify as idf
from lnlib.data import LANGS

# ----------------------------------------------------------------------------------------------
# A hand-worked case: 1 layer, 6 neurons, languages a, b, c.
# Sorted values: eight 0s (ranks 1-8), three 0.1s (9-11), one 0.8 (12), six 0.9s (13-18).
# bar = 0.6 -> rank round(10.8) = 11 -> tau = 0.1; strict ">" leaves neuron 4 (all 0.1) above nothing.
TOY_LANGS = ("a", "b", "c")
TOY = torch.tensor([[
    [0.9, 0.0, 0.0],  # 0: specific to a
    [0.9, 0.9, 0.0],  # 1: related a, b
    [0.9, 0.9, 0.9],  # 2: above tau everywhere (general)
    [0.0, 0.0, 0.0],  # 3: never fires
    [0.1, 0.1, 0.1],  # 4: at tau, so above nothing
    [0.0, 0.0, 0.8],  # 5: specific to c
]])
# Code-unit score: entropy - lam * max / c_3 with c_3 = (1 + 1/2 + 1/3) / 3. With rate 0.5 (3 neurons),
# neurons 0 and 1 always beat 2 and 5; neuron 2 beats 5 once 1 - 0.9 lam / c_3 < -0.8 lam / c_3,
# i.e. lam > 10 c_3 = 6.111...
TOY_LAM_EDGE = 10 * (1 + 1 / 2 + 1 / 3) / 3


def toy(lam=0.0, **kw):
    return idf.identify(TOY, lam, rate=0.5, bar=0.6, langs=TOY_LANGS, **kw)


def test_tau_rank_convention():
    probs = torch.tensor([0.4, 0.1, 0.3, 0.2]).reshape(1, 2, 2)
    assert idf.threshold(probs, 0.5) == pytest.approx(0.2)  # rank round(2.0) = 2
    assert idf.threshold(probs, 0.6) == pytest.approx(0.2)  # rank round(2.4) = 2
    assert idf.threshold(probs, 0.7) == pytest.approx(0.3)  # rank round(2.8) = 3
    assert idf.threshold(TOY, 0.6) == pytest.approx(0.1)


def test_toy_classification():
    ident = toy()
    assert ident.tau == pytest.approx(0.1)
    assert ident.selected.tolist() == [0, 5, 1]  # 0 and 5 tie at entropy ~0: the lower index first
    assert ident.n_above.tolist() == [[1, 2, 3, 0, 0, 1]]
    assert ident.appear == [0, 2, 1, 0]
    assert ident.n_dropped == 0
    assert [m[0].tolist() for m in ident.mask()] == [[0, 1], [1], [5]]
    assert [m[0].tolist() for m in ident.mask("specific")] == [[0], [], [5]]
    assert [m[0].tolist() for m in ident.mask("related")] == [[1], [1], []]
    assert ident.neurons("related").tolist() == [[0, 1]]
    assert ident.neurons("general").tolist() == [[0, 2]]
    assert ident.general_mask()[0].tolist() == [2]
    assert ident.n_general == 1
    assert ident.n_histogram() == [2, 2, 1, 1]
    assert ident.lang_counts().to_dict("list") == {"specific": [1, 0, 1], "related": [1, 1, 0],
                                                    "language": [2, 1, 1]}
    assert ident.layer_counts().loc[0].to_dict() == {"specific": 2, "related": 1, "general": 1}
    assert ident.coassignment().tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_toy_autosweep_for_three_languages():
    lam, ident = idf.autosweep(TOY, rate=0.5, bar=0.6, lo=0.0, hi=10.0, eps=1e-3, langs=TOY_LANGS)
    assert TOY_LAM_EDGE - 1e-3 < lam < TOY_LAM_EDGE
    assert ident.appear[-1] == 0 and ident.lam == lam
    assert toy(lam + 2e-3).appear == [0, 1, 1, 1]  # past the edge, neuron 2 (all 3 languages) replaces 5
    assert ident.trace[0] == (0.0, (0, 2, 1, 0)) and ident.trace[1] == (10.0, (0, 1, 1, 1))
    assert len(ident.trace) == 2 + math.ceil(math.log2(10 / 1e-3))
    curve = idf.sweep(TOY, [0.0, lam, 7.0], rate=0.5, bar=0.6, langs=TOY_LANGS)
    assert curve == [(0.0, (0, 2, 1, 0)), (lam, (0, 2, 1, 0)), (7.0, (0, 1, 1, 1))]
    # the criterion already holds at hi: hi is the answer
    with pytest.warns(idf.IntervalWarning):
        assert idf.autosweep(TOY, rate=0.5, bar=0.6, hi=5.0, langs=TOY_LANGS)[0] == 5.0
    # ... unless widened: then the edge in the wider interval is found
    widened, wide = idf.autosweep(TOY, rate=0.5, bar=0.6, hi=5.0, langs=TOY_LANGS, widen=10.0)
    assert TOY_LAM_EDGE - 1e-3 < widened < TOY_LAM_EDGE and wide.trace[1] == (10.0, (0, 1, 1, 1))
    assert idf.autosweep(TOY, rate=0.5, bar=0.6, hi=10.0, langs=TOY_LANGS, widen=20.0)[0] == lam
    with pytest.raises(ValueError, match="no λ in"):
        idf.autosweep(TOY, rate=0.5, bar=0.6, lo=7.0, hi=10.0, langs=TOY_LANGS)


def test_toy_per_language_summaries():
    ident = toy()  # specific (1, 0, 1), related (1, 1, 0), language (2, 1, 1) for a, b, c; 3 selected
    assert ident.specific_share == 0.5  # 2 of 4 assignments
    assert ident.percent_of_selected().tolist() == pytest.approx([200 / 3, 100 / 3, 100 / 3])
    assert ident.most() == ["a"] and ident.fewest() == ["b", "c"]
    assert ident.most("related") == ["a", "b"] and ident.fewest("specific") == ["b"]
    assert ident.relative_size("a") == 2.0


def test_toy_trace_as_appear_rows_and_recorded_interval_warnings():
    with idf.interval_warnings() as caught:
        lam, ident = idf.autosweep(TOY, rate=0.5, bar=0.6, lo=0.0, hi=10.0, langs=TOY_LANGS)
    assert caught == []  # the criterion binds inside [0, 10]
    table = ident.trace_appear()
    assert list(table.columns) == ["N=1", "N=2", "N=3"] and table.index.name == "λ"
    assert table.loc[0.0].tolist() == [2, 1, 0] and table.loc[10.0].tolist() == [1, 1, 1]
    assert len(table) == len(ident.trace) and table.index[-1] == ident.trace[-1][0]
    with pytest.raises(ValueError, match="no AutoSweep trace"):
        toy().trace_appear()
    with idf.interval_warnings() as caught:
        for _ in range(2):  # the same place twice: both recorded
            idf.autosweep(TOY, rate=0.5, bar=0.6, hi=5.0, langs=TOY_LANGS)
    assert [w.category for w in caught] == [idf.IntervalWarning, idf.IntervalWarning]


def test_lambda_units_rank_identically():
    assert idf.harmonic_norm(10) == pytest.approx(0.2928968, abs=1e-7)
    assert idf.lam_to_paper(0.109375, 10) == pytest.approx(0.8598, abs=1e-4)
    assert idf.lam_to_code(idf.lam_to_paper(0.3, 7), 7) == pytest.approx(0.3)
    probs = torch.rand(4, 50, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    code = idf.paper_score(probs, 0.3, units="code")
    paper = idf.paper_score(probs, idf.lam_to_paper(0.3, 7), units="paper")
    torch.testing.assert_close(paper, code * math.log(7))
    assert torch.equal(code.reshape(-1).argsort(), paper.reshape(-1).argsort())
    code_units = idf.identify(probs, 0.3, rate=0.1, langs="abcdefg")
    paper_units = idf.identify(probs, idf.lam_to_paper(0.3, 7), rate=0.1, langs="abcdefg", units="paper")
    assert torch.equal(code_units.selected, paper_units.selected)
    assert paper_units.lam == pytest.approx(0.3)


def test_toy_summaries_for_the_chapter():
    ident = toy()  # selected 0, 5, 1 with N = 1, 1, 2
    assert ident.selected_histogram() == [0, 2, 1, 0] and ident.n_assigned == 3
    everything = idf.identify(TOY, 0.0, rate=0.99, bar=0.6, langs=TOY_LANGS)  # all 6; N = 1, 2, 3, 0, 0, 1
    assert everything.selected_histogram() == [2, 2, 1, 1] and everything.appear == [0, 2, 1, 1]
    assert everything.n_assigned == 4 and everything.n_dropped == 2
    assert ident.at_selected(torch.arange(6.0).reshape(1, 6)).tolist() == [0.0, 5.0, 1.0]
    with pytest.raises(ValueError, match="shape"):
        ident.at_selected(torch.zeros(6))
    assert ident.relative_size("b") == pytest.approx(2 / 3)  # 1 against the mean of 2 and 1
    assert ident.relative_size("b", "specific") == 0.0 and ident.relative_size("a", "related") == 2.0
    table = idf.n_table({"x": ident.selected_histogram(), "y": everything.selected_histogram()})
    assert table.columns.name == "N" and list(table.columns) == [0, 1, 2, 3] and list(table.index) == ["x", "y"]
    assert table.loc["y"].tolist() == [2, 2, 1, 1]
    with pytest.raises(ValueError, match="same N"):
        idf.n_table({"x": [1, 2], "y": [1, 2, 3]})
    assert idf.fewest_n([5, 2, 3, 2]) == 2 and idf.fewest_n((4, 1)) == 2


def test_toy_language_summary():
    # per language, the lower median of six values and the share above tau = 0.1 (strictly)
    summary = idf.lang_summary(TOY, idf.threshold(TOY, 0.6), tokens=torch.tensor([10, 20, 30]), langs=TOY_LANGS)
    assert list(summary.columns) == ["response tokens", "median p", "% of neurons with p > τ"]
    assert summary.index.name == "language" and list(summary.index) == list(TOY_LANGS)
    assert summary["response tokens"].tolist() == [10, 20, 30]
    assert summary["median p"].tolist() == pytest.approx([0.1, 0.0, 0.0])
    assert summary["% of neurons with p > τ"].tolist() == pytest.approx([50.0, 100 / 3, 100 / 3])
    assert list(idf.lang_summary(TOY, 0.85, langs=TOY_LANGS).columns) == ["median p", "% of neurons with p > τ"]
    assert idf.lang_summary(TOY, 0.85, langs=TOY_LANGS)["% of neurons with p > τ"].tolist() == pytest.approx(
        [50.0, 100 / 3, 100 / 6])


def test_toy_sweep_summaries():
    # eps = 6: lo = 0 holds, hi = 10 fails, mid 5 holds and the interval is then narrow enough
    lam, ident = idf.autosweep(TOY, rate=0.5, bar=0.6, lo=0.0, hi=10.0, eps=6.0, langs=TOY_LANGS)
    assert lam == 5.0 and ident.first_failure() == (10.0, 1)
    table = ident.trace_table()
    assert table.index.name == "step" and list(table.index) == [1, 2, 3]
    assert table["λ (code units)"].tolist() == [0.0, 10.0, 5.0]
    paper_units = [lam * math.log(3) / (11 / 18) for lam in (0.0, 10.0, 5.0)]  # c_3 = (1 + 1/2 + 1/3) / 3
    assert table["λ (paper units)"].tolist() == pytest.approx(paper_units)
    assert table["selected above τ in all 3"].tolist() == [0, 1, 0]
    assert table["criterion holds"].tolist() == [True, False, True]
    assert toy().first_failure() is None  # a fixed λ has no trace
    # the grid: 0, 5, 10, then n // 3 = 1 point in [7 - 1, 7 + 1], i.e. 6; only 10 is past the edge 6.11
    grid = idf.sweep_grid(TOY, 0.0, 10.0, 3, rate=0.5, bar=0.6, around=7.0, zoom=1.0, langs=TOY_LANGS)
    assert list(grid.items()) == [(0.0, 0), (5.0, 0), (10.0, 1), (6.0, 0)]
    assert list(idf.sweep_grid(TOY, 0.0, 10.0, 3, rate=0.5, bar=0.6, langs=TOY_LANGS)) == [0.0, 5.0, 10.0]
    assert idf.count_decreases(grid) == 0
    assert idf.count_decreases({0.0: 0, 0.2: 3, 0.1: 1, 0.3: 2, 0.4: 5}) == 1  # in λ order 0, 1, 3, 2, 5


def test_mask_matches_and_size():
    a = [[torch.tensor([1, 2]), torch.tensor([], dtype=torch.int64)], [torch.tensor([3]), torch.tensor([4])]]
    b = [[torch.tensor([1, 2]), torch.tensor([], dtype=torch.int64)], [torch.tensor([3]), torch.tensor([5])]]
    assert idf.mask_matches(a, a) == [True, True, True, True]
    assert idf.mask_matches(a, b) == [True, True, True, False]  # language by language, layer by layer
    assert idf.mask_size(a) == 4 and idf.mask_size(toy().mask()) == 4  # a: 0, 1; b: 1; c: 5
    with pytest.raises(ValueError, match="differ in shape"):
        idf.mask_matches(a, [b[0]])


def test_lape_toy():
    # eligible: some language above tau = 0.1 (neurons 0, 1, 2, 5); LAPE entropy 0 for 0 and 5
    ident = idf.lape(TOY, rate=0.5, filter_bar=0.6, bar=0.6, langs=TOY_LANGS)
    assert ident.selected.tolist() == [0, 5, 1] and math.isnan(ident.lam)
    assert ident.method == "lape"


def test_overlap_ratio():
    a, b = toy(), toy(7.0)  # b selects 0, 1, 2: neuron 5 (specific to c) is gone
    assert compare.overlap_ratio(a, a) == 1.0
    assert compare.overlap_ratio(a, b, "specific") == 0.5  # (a, 0) kept, (c, 5) lost
    assert compare.overlap_ratio(a, b, "language", unit="triple") == pytest.approx(3 / 4)
    assert compare.overlap_ratio(a, b, "language", unit="neuron") == pytest.approx(2 / 3)
    only_neuron_0 = idf.identify(TOY, 0.0, rate=0.2, bar=0.6, langs=TOY_LANGS)
    assert math.isnan(compare.overlap_ratio(only_neuron_0, a, "related"))  # empty reference


def test_probs_from_counts():
    class Counts:
        full = torch.tensor([[[5, 9]]])
        prefix = torch.tensor([[[2, 10]]])
        full_tokens = torch.tensor([10, 20])
        prefix_tokens = torch.tensor([4, 10])

    assert counts.probs_from_counts(Counts, "full").tolist() == [[[0.5, 0.44999998807907104]]]
    assert counts.probs_from_counts(Counts, "prefix").tolist() == [[[0.5, 1.0]]]
    assert counts.probs_from_counts(Counts).tolist() == [[[0.5, 0.0]]]  # 9 - 10 clamps to 0
    with pytest.raises(ValueError, match="scope"):
        counts.probs_from_counts(Counts, "prompt")


@pytest.mark.parametrize("probs, match", [
    (torch.full((1, 2, 3), float("nan")), "NaN"),
    (torch.full((1, 2, 3), 1.2), r"\[0, 1"),
    (torch.full((1, 2, 3), -0.1), r"\[0, 1"),
    (torch.zeros(2, 3), "rank 3"),
    (torch.zeros(1, 2, 1), "at least 2"),
    (torch.zeros(1, 2, 3, dtype=torch.int64), "floating-point"),
])
def test_bad_probs(probs, match):
    with pytest.raises(ValueError, match=match):
        idf.identify(probs, 0.1, langs=TOY_LANGS)
    with pytest.raises(ValueError, match=match):
        idf.autosweep(probs, langs=TOY_LANGS)


def test_bad_settings():
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="rate must lie"):
            idf.identify(TOY, 0.1, rate=bad, langs=TOY_LANGS)
        with pytest.raises(ValueError, match="bar must lie"):
            idf.identify(TOY, 0.1, bar=bad, langs=TOY_LANGS)
    with pytest.raises(ValueError, match="interval is empty"):
        idf.autosweep(TOY, lo=0.3, hi=0.2, langs=TOY_LANGS)
    with pytest.raises(ValueError, match="pass langs"):
        idf.identify(TOY, 0.1)
    with pytest.raises(ValueError, match="3 distinct codes"):
        idf.identify(TOY, 0.1, langs=("a", "a", "b"))
    with pytest.raises(ValueError, match="units"):
        idf.identify(TOY, 0.1, langs=TOY_LANGS, units="nats")
    with pytest.raises(ValueError, match="'xx' is not in"):
        toy().neurons("specific", "xx")
    with pytest.raises(ValueError, match="kind must be"):
        toy().mask("shared")


PROV = {"model": "toy", "revision": "0", "dataset": "hand", "tokens": {"a": 1, "b": 1, "c": 1}}


def test_save_load_round_trip(tmp_path):
    lam, ident = idf.autosweep(TOY, rate=0.5, bar=0.6, hi=10.0, langs=TOY_LANGS)
    path = idf.save(ident, tmp_path / "toy.safetensors", PROV)
    back, prov = idf.load(path, expect_langs=TOY_LANGS, expect_shape=(1, 6))
    assert prov == PROV
    for field in ("langs", "method", "lam", "rate", "bar", "tau", "trace"):
        assert getattr(back, field) == getattr(ident, field), field
    for field in ("selected", "high", "n_above"):
        assert torch.equal(getattr(back, field), getattr(ident, field)), field
    lape_back, _ = idf.load(idf.save(idf.lape(TOY, rate=0.5, bar=0.6, filter_bar=0.6, langs=TOY_LANGS),
                                     tmp_path / "lape.safetensors", PROV))
    assert math.isnan(lape_back.lam)


def test_save_load_refusals(tmp_path):
    path = idf.save(toy(), tmp_path / "toy.safetensors", PROV)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        idf.save(toy(), path, PROV)
    idf.save(toy(1.0), path, PROV, overwrite=True)
    assert idf.load(path)[0].lam == 1.0
    with pytest.raises(ValueError, match="expected"):
        idf.load(path, expect_langs=("a", "c", "b"))
    with pytest.raises(ValueError, match="different model"):
        idf.load(path, expect_shape=(32, 14336))
    assert idf.load(idf.save(toy(), tmp_path / "bare.safetensors"))[1] == {}  # provenance: nothing invented
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(store.StoreError, match="not an lnlib file"):
        idf.load(tmp_path / "foreign.safetensors")


@pytest.mark.parametrize("edit", ["langs", "rate", "selected"])
def test_an_edited_identification_file_is_refused(tmp_path, edit):
    """An identification whose languages, settings or neuron indices were changed by hand is not accepted."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    path = idf.save(toy(), tmp_path / "toy.safetensors", PROV)
    with safe_open(str(path), framework="pt") as fh:
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
        header = json.loads(fh.metadata()["lnlib"])
    if edit == "selected":
        tensors["selected"] = tensors["selected"].flip(0)
    elif edit == "langs":
        header["langs"] = ["c", "b", "a"]
    else:
        header["rate"] = 0.1
    save_file(tensors, str(path), metadata={"lnlib": json.dumps(header)})
    with pytest.raises(store.StoreError, match="changed after lnlib wrote it"):
        idf.load(path)


@pytest.mark.parametrize("lam", [float("nan"), float("inf"), -float("inf"), "0.1", None])
def test_lambda_must_be_a_finite_number(lam):
    with pytest.raises(ValueError, match="finite number"):
        idf.identify(TOY, lam, langs=TOY_LANGS)
    with pytest.raises(ValueError, match="finite number"):
        idf.autosweep(TOY, hi=lam, langs=TOY_LANGS)


@pytest.mark.parametrize("probs, match", [
    (torch.zeros(1, 4, 3), "every probability is 0"),
    (torch.full((1, 4, 3), 0.3), "same probability in every language"),
])
def test_degenerate_probabilities_are_refused(probs, match):
    with pytest.raises(ValueError, match=match):
        idf.identify(probs, 0.1, langs=TOY_LANGS)


def test_autosweep_warns_when_lambda_is_the_top_of_its_interval():
    with pytest.warns(idf.IntervalWarning, match="top of its search interval"):
        lam, ident = idf.autosweep(TOY, rate=0.5, bar=0.6, hi=5.0, langs=TOY_LANGS)
    assert lam == 5.0 and ident.interval == (0.0, 5.0)


# ----------------------------------------------------------------------------------------------
# The paper's released statistics (kevinpro/MistralMathOctopus-7B on MGSM): README and PAPER.md Sec. 7 facts.


@pytest.fixture(scope="module")
def released(data_dir):
    """(probs, λ*, identification at λ*, released mask); skipped when LNLIB_DATA_DIR is not set."""
    from lnlib.counts import load_released_probs
    from lnlib.data import load_released_mask

    probs = load_released_probs("mgsm")
    lam, ident = idf.autosweep(probs)
    return probs, lam, ident, load_released_mask("mgsm")


def test_released_probabilities(released):
    probs = released[0]
    assert probs.shape == (32, 14336, 10) and probs.dtype == torch.float32
    assert float(probs.max()) == pytest.approx(1.0010, abs=1e-4)
    q = torch.quantile(probs.reshape(-1)[::7].double(), torch.tensor([0.5, 0.9], dtype=torch.float64))
    assert q.tolist() == pytest.approx([0.183, 0.462], abs=2e-3)
    assert released[2].tau == pytest.approx(0.5644, abs=1e-4)
    prov = counts.released_provenance()
    assert prov["tokens"]["en"] == 319931 and prov["tokens"]["bn"] == 701467


def test_released_autosweep_reproduces_mask(released):
    _, lam, ident, mask = released
    assert lam == 0.109375
    ours = ident.mask()
    for k, lang in enumerate(LANGS):
        for layer in range(32):
            assert torch.equal(ours[k][layer], mask[k][layer]), (lang, layer)
    sizes = [sum(len(t) for t in per_lang) for per_lang in ours]
    assert sizes == [142, 556, 523, 821, 941, 412, 676, 948, 622, 666]
    assert len(ident.selected) == 4588 and ident.n_dropped == 1369
    assert ident.appear == [0, 1866, 617, 310, 153, 127, 59, 40, 27, 20, 0]


def test_released_trace(released):
    trace = released[2].trace
    assert [lam for lam, _ in trace] == pytest.approx(
        [0.0, 0.2, 0.1, 0.15, 0.125, 0.1125, 0.10625, 0.109375, 0.1109375, 0.11015625])
    assert [a[-1] for _, a in trace] == [0, 1412, 0, 829, 213, 3, 0, 0, 1, 1]
    assert list(trace[0][1]) == [0, 473, 58, 19, 7, 7, 0, 0, 0, 0, 0]  # lam = 0: 564 of 4,588 get a language


def test_released_classes(released):
    ident = released[2]
    counts = ident.lang_counts()
    assert counts["specific"].tolist() == [12, 176, 119, 334, 460, 48, 118, 360, 60, 179]
    assert counts["related"].tolist() == [130, 380, 404, 487, 481, 364, 558, 588, 562, 487]
    assert ident.n_general == 7797
    assert ident.n_histogram() == [397496, 23235, 9802, 5617, 3693, 2680, 2126, 1982, 2002, 2322, 7797]
    layers = ident.layer_counts()
    assert layers.loc[0].tolist() == [17, 171, 181] and layers.loc[14].tolist() == [2, 3, 555]
    assert layers.loc[28].tolist() == [379, 147, 108] and layers.loc[31].tolist() == [51, 101, 745]
    assert layers["general"].idxmin() == 23 and layers.sum().tolist() == [1866, 1353, 7797]
    co = ident.coassignment()
    pair = {(LANGS[a], LANGS[b]): int(co[a, b]) for a in range(10) for b in range(10)}
    assert [pair[p] for p in [("bn", "th"), ("ja", "bn"), ("ja", "th"), ("bn", "sw"), ("es", "fr"), ("zh", "th"),
                              ("fr", "de"), ("zh", "ja")]] == [363, 294, 292, 263, 256, 251, 227, 210]
    off_diagonal = co - torch.diag(co.diagonal())
    assert off_diagonal.max() == 363 and torch.equal(co, co.T) and co.diagonal().tolist()[:2] == [142, 556]
    assert int(co[0, 1:].max()) == 87 and LANGS[int(co[0, 1:].argmax()) + 1] == "sw"


def test_released_float64_and_paper_units_agree(released):
    probs, lam, ident, _ = released
    chosen = ident.selected.sort().values  # the same set; near-ties inside it may swap places
    assert torch.equal(idf.identify(probs.double(), lam).selected.sort().values, chosen)
    in_paper_units = idf.identify(probs, idf.lam_to_paper(lam, 10), units="paper")
    assert torch.equal(in_paper_units.selected.sort().values, chosen)


def test_released_lape(released):
    probs, _, ident, _ = released
    lape = idf.lape(probs)
    assert lape.appear == [0, 3406, 820, 225, 74, 50, 10, 2, 1, 0, 0] and lape.n_dropped == 0
    assert lape.lang_counts()["language"].tolist() == [52, 519, 530, 782, 996, 338, 678, 1137, 543, 774]
    assert len(ident.neurons("language")) == 3219
    assert compare.overlap_ratio(ident, lape, "language", unit="neuron") == pytest.approx(2408 / 3219)


def test_released_rate_ten_percent(released):
    lam, ident = idf.autosweep(released[0], rate=0.10)
    assert lam == pytest.approx(0.01953125)
    assert ident.appear == [0, 8654, 3103, 1456, 737, 423, 188, 94, 60, 66, 0]
    counts = ident.lang_counts()
    assert counts.loc["en"].tolist()[:2] == [77, 428]
    assert counts["related"].iloc[1:].mean() == pytest.approx(2007.67, abs=0.01)


def test_released_save_load(released, tmp_path):
    ident = released[2]
    path = idf.save(ident, tmp_path / "mistral.safetensors", counts.released_provenance())
    back, prov = idf.load(path, expect_langs=LANGS, expect_shape=(32, 14336))
    assert prov["revision"] == "de76d14562b1da1ba0e52d5b245cf9c0859e2af3" and back.lam == 0.109375
    assert all(torch.equal(x, y) for a, b in zip(back.mask(), ident.mask(), strict=True)
               for x, y in zip(a, b, strict=True))


def test_toy_shares_of_all_neurons_and_of_the_other_languages():
    ident = toy()  # N over all six neurons: 1, 2, 3, 0, 0, 1; language neurons a 2, b 1, c 1
    assert ident.n_histogram() == [2, 2, 1, 1]
    assert ident.n_percent() == pytest.approx([100 * 2 / 6, 100 / 6, 100 / 6])
    assert ident.n_percent([3, 0, 6]) == [50.0, 0.0, 100.0]  # other counts, as % of these six neurons
    assert ident.fewest_n() == 2  # N = 2 and N = 3 tie at one neuron: the smaller N
    assert ident.general_share == 1 / 6
    assert ident.percent_of_others() == pytest.approx({"a": 200.0, "b": 100 / 1.5, "c": 100 / 1.5})
    assert ident.percent_of_others("related") == pytest.approx({"a": 200.0, "b": 200.0, "c": 0.0})
    masks = ident.mask_by_lang()
    assert list(masks) == list(TOY_LANGS)
    assert [m[0].tolist() for m in masks.values()] == [[0, 1], [1], [5]]
    assert [m[0].tolist() for m in ident.mask_by_lang("specific").values()] == [[0], [], [5]]
