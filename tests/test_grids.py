"""lnlib.grids: the perplexity grid under deactivation (equal to scoring each condition on its own), and the
accuracy bookkeeping, on tiny models."""

import math

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import evaluate, grids, hooks, intervene, models, stats
from lnlib.data import Problem

TEXTS = {"en": ["w1 w2 w3 w4 w5 w6", "w9 w8 w7"], "de": ["w3 w3 w3 w1 w2", "w40 w41 w42 w43 w44"],
         "fr": [("w5 w6", "w7 w8 w9 w10")]}


def _sets(model):
    width = models.n_neurons(model)
    return {"en": [torch.arange(0, 10), torch.tensor([], dtype=torch.long)],
            "de": [torch.arange(10, 14), torch.arange(20, 30)],
            "fr": [torch.tensor([], dtype=torch.long), torch.arange(width - 5, width)]}


@pytest.mark.parametrize("family", ["llama", "gemma3", "gemma3_text", "gpt2"])
@pytest.mark.parametrize("rows_per_pass", [1, 3, 64])
def test_ppl_grid_equals_scoring_each_condition_alone(family, rows_per_pass):
    """The fast grid (baseline residuals replayed below a set's first layer, several conditions per pass) gives
    the numbers of text_nll under deactivate, condition by condition."""
    model, tok = tiny_model(family), word_tokenizer()
    sets = _sets(model)
    sets["empty"] = [torch.tensor([], dtype=torch.long)] * 2
    grid = grids.ppl_grid(model, tok, TEXTS, sets, control=True, batch_size=2, rows_per_pass=rows_per_pass,
                          progress=False)
    for name, neurons in [("none", None), *sets.items()]:
        for lang, texts in TEXTS.items():
            if neurons is None:
                expected = evaluate.text_nll(model, tok, texts, progress=False)
            else:
                with intervene.deactivate(model, neurons):
                    expected = evaluate.text_nll(model, tok, texts, progress=False)
            got = grid.nll[(name, lang)]
            assert torch.equal(got.n_tokens, expected.n_tokens)
            assert torch.allclose(got.nll_sum, expected.nll_sum, rtol=1e-5, atol=1e-6), (name, lang)
    assert hooks.hook_count(model) == 0 and not hooks.is_edited(model)


def test_ppl_grid_shape_baseline_and_changes():
    model, tok = tiny_model("gemma3_text"), word_tokenizer()
    grid = grids.ppl_grid(model, tok, TEXTS, _sets(model), control=True, seed=7, progress=False)
    ppl = grid.ppl()
    assert list(ppl.index) == ["none", "en", "de", "fr"] and list(ppl.columns) == ["en", "de", "fr"]
    for lang, texts in TEXTS.items():  # the baseline row is text_nll without intervention, both aggregations
        nll = evaluate.text_nll(model, tok, texts, progress=False)
        assert ppl.loc["none", lang] == pytest.approx(nll.perplexity("official"))
        assert grid.ppl("token").loc["none", lang] == pytest.approx(nll.perplexity("token"))
    with intervene.deactivate(model, _sets(model)["de"]):
        assert ppl.loc["de", "en"] == pytest.approx(evaluate.perplexity(model, tok, TEXTS["en"], progress=False))
    change = grid.change()
    assert list(change.index) == ["en", "de", "fr"]
    assert (change.abs() > 1e-6).all().all()  # every set changes every language's perplexity
    assert change.loc["de", "fr"] == pytest.approx(ppl.loc["de", "fr"] - ppl.loc["none", "fr"])
    relative = grid.change(relative=True)
    assert relative.loc["en", "de"] == pytest.approx(change.loc["en", "de"] / ppl.loc["none", "de"])
    assert grid.diagonal().to_dict() == pytest.approx({lang: change.loc[lang, lang] for lang in TEXTS})
    assert grid.sizes == {"en": 10, "de": 14, "fr": 5} and grid.seed == 7
    control = grid.ppl(control=True)
    assert list(control.index) == ["en", "de", "fr"] and not control.isna().any().any()
    assert not control.equals(ppl.loc[["en", "de", "fr"]])
    summary = grid.summary()
    assert summary.loc["de", "diagonal"] == pytest.approx(change.loc["de", "de"])
    assert summary.loc["de", "off-diagonal mean"] == pytest.approx(change.loc["de", ["en", "fr"]].mean())
    median = grid.summary(statistic="median")
    assert median.loc["en", "off-diagonal median"] == pytest.approx(change.loc["en", ["de", "fr"]].median())
    with pytest.raises(ValueError, match="statistic"):
        grid.summary(statistic="max")
    assert hooks.hook_count(model) == 0


def test_ppl_grid_control_is_seeded_and_diagonal_only_when_asked():
    model, tok = tiny_model("llama"), word_tokenizer()
    texts = {k: v for k, v in TEXTS.items() if k != "fr"}
    sets = {k: v for k, v in _sets(model).items() if k != "fr"}
    a = grids.ppl_grid(model, tok, texts, sets, control="diagonal", seed=1, progress=False)
    b = grids.ppl_grid(model, tok, texts, sets, control="diagonal", seed=1, progress=False)
    c = grids.ppl_grid(model, tok, texts, sets, control="diagonal", seed=2, progress=False)
    assert set(a.nll) == {("none", "en"), ("none", "de"), ("en", "en"), ("en", "de"), ("de", "en"), ("de", "de"),
                          ("random:en#0", "en"), ("random:de#0", "de")}
    rand = a.ppl(control=True)
    assert math.isnan(rand.loc["en", "de"]) and rand.loc["en", "en"] == b.ppl(control=True).loc["en", "en"]
    assert rand.loc["de", "de"] != c.ppl(control=True).loc["de", "de"]
    no_control = grids.ppl_grid(model, tok, texts, sets, progress=False)
    assert no_control.seed is None and no_control.ppl(control=True).isna().all().all()


def test_ppl_grid_refuses_bad_input():
    model, tok = tiny_model("llama"), word_tokenizer()
    with pytest.raises(ValueError, match="2 layers"):
        grids.ppl_grid(model, tok, TEXTS, {"en": [torch.tensor([1])]}, progress=False)
    with pytest.raises(ValueError, match="reserved"):
        grids.ppl_grid(model, tok, TEXTS, {"none": _sets(model)["en"]}, progress=False)
    with pytest.raises(ValueError, match="control must be"):
        grids.ppl_grid(model, tok, TEXTS, _sets(model), control="some", progress=False)


def _problems():
    return {"en": [Problem("en", 0, "How many?", 18.0, "How many?"), Problem("en", 1, "And now?", 3.0, "And now?")],
            "de": [Problem("de", 0, "Wie viele?", 18.0, "How many?"), Problem("de", 1, "Und jetzt?", 3.0, "And now?")]}


ANSWERS = {"en": "She sells the remaining eggs at the market and makes {} dollars every day.",
           "de": "Sie verkauft die übrigen Eier auf dem Markt und verdient jeden Tag {} Dollar."}


def test_accuracy_grid_bookkeeping_with_a_stub_generator():
    """A stub stands in for generation: right answers in the right language, except that with the German set
    switched off German questions get English answers, and with the English set the second answer is wrong."""
    model, tok = tiny_model("llama"), word_tokenizer()
    sets = {"en": [torch.tensor([0]), torch.tensor([], dtype=torch.long)],
            "de": [torch.tensor([], dtype=torch.long), torch.tensor([0])]}
    acts = models.mlp_activations(model)

    def stub(model_, tokenizer, prompts, **options):
        de_off, en_off = bool(acts[1]._forward_hooks), bool(acts[0]._forward_hooks)
        out = []
        for i, prompt in enumerate(prompts):
            lang = "de" if "German" in prompt else "en"
            answer = [18, 3][i] + (1 if en_off and i == 1 else 0)
            out.append(ANSWERS["en" if de_off else lang].format(answer))
        return out

    grid = grids.accuracy_grid(model, tok, _problems(), sets, generate=stub, progress=False)
    acc = grid.accuracy()
    assert list(acc.index) == ["none", "en", "de"] and list(acc.columns) == ["en", "de"]
    assert acc.loc["none"].tolist() == [1.0, 1.0]
    assert acc.loc["en"].tolist() == [0.5, 0.5]
    assert acc.loc["de"].tolist() == [1.0, 0.0]  # right numbers, wrong language
    assert grid.accuracy(require_language=False).loc["de"].tolist() == [1.0, 1.0]
    assert grid.change().loc["de", "de"] == -1.0 and grid.change().loc["en", "en"] == -0.5
    assert grid.outputs[("de", "de")][0] == ANSWERS["en"].format(18)
    assert grid.correct[("en", "en")].tolist() == [True, False]


def test_accuracy_grid_runs_generation_on_a_tiny_model():
    model, tok = tiny_model("gemma3_text"), word_tokenizer()
    model.generation_config.eos_token_id = None
    sets = {"de": [torch.arange(5), torch.arange(5)]}
    grid = grids.accuracy_grid(model, tok, _problems(), sets, max_new_tokens=4, batch_size=2, progress=False)
    assert grid.accuracy().shape == (2, 2) and ((grid.accuracy() >= 0) & (grid.accuracy() <= 1)).all().all()
    assert all(len(texts) == 2 for texts in grid.outputs.values())
    assert hooks.hook_count(model) == 0


def test_several_random_controls_are_averaged_and_resampled_together():
    model, tok = tiny_model("llama"), word_tokenizer()
    texts = {k: v for k, v in TEXTS.items() if k != "fr"}
    sets = {k: v for k, v in _sets(model).items() if k != "fr"}
    grid = grids.ppl_grid(model, tok, texts, sets, control="diagonal", controls=3, seed=4, progress=False)
    singles = [grid.nll[(f"random:de#{i}", "de")].perplexity() for i in range(3)]
    assert len(set(singles)) == 3  # three different random sets
    assert grid.ppl(control=True).loc["de", "de"] == pytest.approx(sum(singles) / 3)
    half = grid.resample({"en": torch.tensor([0, 0]), "de": torch.tensor([1, 1])})
    assert half.controls == 3 and half.n_texts("de") == 2
    assert half.ppl().loc["none", "de"] == pytest.approx(grid.nll[("none", "de")].subset([1]).perplexity())


# A grid of known changes, one text per language (every bootstrap resample is the data itself): perplexity 10
# with nothing switched off, 10 + CHANGE[k][t] with set k off, 10 + RANDOM[k] for k's random control on k.
LANGS3 = ("en", "de", "fr")
CHANGE = {"en": {"en": 1, "de": 2, "fr": 3}, "de": {"en": 4, "de": 8, "fr": 5}, "fr": {"en": 6, "de": 7, "fr": 9}}
RANDOM = {"en": 0.5, "de": 1, "fr": 2}


def _known_grid():
    def text(ppl):
        return evaluate.TextNLL(torch.tensor([math.log(ppl)], dtype=torch.float64), torch.tensor([1]))

    nll = {("none", t): text(10) for t in LANGS3}
    nll |= {(k, t): text(10 + CHANGE[k][t]) for k in LANGS3 for t in LANGS3}
    nll |= {(f"random:{k}#0", k): text(10 + RANDOM[k]) for k in LANGS3}
    return grids.PPLGrid(nll, LANGS3, LANGS3, {"en": 10, "de": 20, "fr": 30}, seed=0, controls=1)


def test_claims_and_rank_correlation_of_a_known_grid():
    grid = _known_grid()
    claims = grid.claims({"en": 0.0, "de": 2.0, "fr": 1.0}, "Fig. X")
    # diagonal 1, 8, 9 (median 8); off-diagonal 2…7 (median 4.5); English 1 against the others' median 8.5;
    # diagonal ranks 1, 2, 3 against the paper's 1, 3, 2: correlation 0.5
    assert claims == pytest.approx({"diagonal minus off-diagonal": 3.5, "English minus the median of the others": -7.5,
                                    "rank correlation with Fig. X": 0.5})
    assert grid.rank_correlation({"en": 2.0, "de": 1.0, "fr": 0.0}) == pytest.approx(-1.0)


def test_sharing_correlation_maps_pairs_to_shared_neurons():
    grid = _known_grid()
    # shared neurons: en-de 1, en-fr 2, de-fr 3; the pairs (en,de) (en,fr) (de,en) (de,fr) (fr,en) (fr,de) share
    # 1 2 1 3 2 3 and change by 2 3 4 5 6 7: ranks (ties in order) 0 2 1 4 3 5 against 0…5, correlation 31/35
    shared = torch.tensor([[5, 1, 2], [1, 5, 3], [2, 3, 5]])
    got = grid.sharing_correlation(shared, LANGS3)
    assert got["rank correlation"] == pytest.approx(31 / 35)
    fragility, size = [7, 5, 6, 3, 4, 2], [10, 10, 20, 20, 30, 30]  # the third language's change; the set's size
    assert got["partial rank correlation"] == pytest.approx(
        stats.partial_spearman([1, 2, 1, 3, 2, 3], [2, 3, 4, 5, 6, 7], [fragility, size]))
    order = [2, 0, 1]  # the same counts over the languages in another order
    assert grid.sharing_correlation(shared[order][:, order], [LANGS3[i] for i in order]) == pytest.approx(got)


def test_against_paper_tabulates_estimates_and_verdicts():
    grid = _known_grid()
    head = grid.bootstrap(grids.PPLGrid.headline, n=5)
    reported = {"up": {"en": 0.0, "de": 1.0, "fr": 2.0}, "down": {"en": 2.0, "de": 1.0, "fr": 0.0}}
    result = grids.against_paper({"up": (grid, head), "down": (grid, head)}, reported, "Fig. X", n=5)
    up = result["up"]
    assert list(up) == ["diagonal (median)", "off-diagonal (median)", "random: diagonal (median)",
                        "own minus random (median)", "diagonal minus off-diagonal",
                        "English minus the median of the others", "rank correlation with Fig. X",
                        "paper, Fig. X: diagonal (median)"]
    assert up["random: diagonal (median)"].value == pytest.approx(1.0)  # RANDOM's median
    assert up["own minus random (median)"].value == pytest.approx(7.0)  # median of 0.5, 7, 7
    assert up["rank correlation with Fig. X"].value == pytest.approx(1.0)
    assert up["paper, Fig. X: diagonal (median)"] == 1.0  # the median of 0, 1, 2
    verdicts = result.verdicts()
    assert list(verdicts.columns) == ["up", "down"]
    assert verdicts["up"].tolist() == ["agrees"] * 4  # English is the least affected: an effect below zero agrees
    assert verdicts.loc["rank correlation with Fig. X", "down"] == "disagrees"
    assert result.verdict_list("rank correlation with Fig. X") == "agrees (up), disagrees (down)"
    table = result.table()
    assert table.loc[("estimate (95 % interval)", "diagonal minus off-diagonal"), "up"] == \
        "3.50 (95 % interval 3.50 to 3.50)"
    assert table.loc[("estimate (95 % interval)", "paper, Fig. X: diagonal (median)"), "down"] == "1.00"
    assert table.loc[("verdict", "diagonal minus off-diagonal"), "down"] == "agrees"


def test_continuation_rates_and_departures():
    detected = {("own", "en"): ["en", "de"], ("own", "de"): ["en", None, "de", "fr"], ("own", "fr"): ["fr", "en", "de"]}
    outputs = grids.ContinuationLanguages({}, detected, LANGS3)
    # over German and French prompts: "en", "fr" (German) and "en", "de" (French) left; two of them into English
    assert outputs.departures("own", to="en") == (2, 4)
    assert outputs.departures("own", to="fr") == (1, 3)  # over en and de: "de" (en); "en", "fr" (de)
    rates = outputs.rates("own")
    assert list(rates) == list(LANGS3)
    assert rates["de"] == stats.proportion(1, 4) and rates["de"].value == 0.25 and rates["fr"].value == 1 / 3


def test_diagonal_percent_of_a_hand_made_grid():
    def nll(ppl):  # one text of two predicted tokens with this perplexity
        return evaluate.TextNLL(torch.tensor([2 * math.log(ppl)], dtype=torch.float64), torch.tensor([2]))

    grid = grids.PPLGrid({("none", "en"): nll(2), ("none", "de"): nll(4), ("en", "en"): nll(3), ("en", "de"): nll(8),
                          ("de", "en"): nll(2), ("de", "de"): nll(5)}, ("en", "de"), ("en", "de"), {"en": 1, "de": 1})
    assert grid.diagonal_percent() == pytest.approx({"en": 50.0, "de": 25.0})  # 2 -> 3 and 4 -> 5
