"""lnlib.evaluate: perplexity on tiny models (equal to the labels loss), texts with nothing to score, and the
alignment metrics."""

import warnings

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import evaluate
from lnlib.batching import SkippedWarning
from lnlib.data import Problem
from lnlib.evaluate import text_nll


@pytest.mark.parametrize("family", ["gemma3_text", "gpt2", "gemma2"])
def test_text_nll_equals_labels_loss(family):
    model = tiny_model(family)
    tokenizer = word_tokenizer()
    texts = ["w1 w2 w3 w4 w5 w6", "w9 w8", "w3 w3 w3 w1 w2"]
    result = text_nll(model, tokenizer, texts, batch_size=2, chunk_positions=3, progress=False)
    for i, text in enumerate(texts):
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()
        assert result.n_tokens[i] == ids.shape[1] - 1
        assert result.nll_sum[i].item() == pytest.approx(loss * (ids.shape[1] - 1), rel=1e-5)
    official = torch.exp((result.nll_sum / result.n_tokens).mean()).item()
    assert result.perplexity("official") == pytest.approx(official)
    assert result.perplexity("token") == pytest.approx(torch.exp(result.nll_sum.sum() / 10).item())
    with pytest.raises(ValueError, match="'official' or 'token'"):
        result.perplexity("mean")


def test_texts_without_a_scored_token_are_left_out_not_scored_as_perplexity_one():
    model, tok = tiny_model("llama"), word_tokenizer()
    texts = ["w1 w2 w3 w4 w5 w6", "w9 w8 w7 w6"]
    clean = text_nll(model, tok, texts, progress=False).perplexity()
    for extra in ("w5", ("w1 w2", ""), ("w1 w2 w3 w4 w5 w6", "w7")):  # one token; empty response; cut off by max_length
        nll = text_nll(model, tok, texts + [extra], max_length=6, progress=False)
        assert nll.n_tokens[-1] == 0
        with pytest.warns(SkippedWarning, match="1 of 3 texts have no token to score"):
            assert nll.perplexity() == pytest.approx(clean)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text_nll(model, tok, texts, progress=False).perplexity()
    with pytest.raises(ValueError, match="no text has a token to score"):
        text_nll(model, tok, [("w1", "")], progress=False).perplexity()


def test_a_single_string_is_not_read_as_a_list_of_texts():
    model, tok = tiny_model("llama"), word_tokenizer()
    for call in (lambda: text_nll(model, tok, "w1 w2 w3", progress=False),
                 lambda: evaluate.perplexity(model, tok, "w1 w2 w3", progress=False),
                 lambda: evaluate.mean_hidden_states(model, tok, "w1 w2 w3", layer=0)):
        with pytest.raises(ValueError, match="not a single one"):
            call()
    with pytest.raises(ValueError, match="layer must be an integer in \\[0, 2\\)"):
        evaluate.mean_hidden_states(model, tok, ["w1 w2"], layer=99)


def test_retrieval_accuracy():
    x = torch.eye(3)
    assert evaluate.retrieval_accuracy(x, x) == 1.0
    assert evaluate.retrieval_accuracy(x, x[[1, 0, 2]]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="parallel"):
        evaluate.retrieval_accuracy(x, x[:2])


def test_alignment_metrics_on_a_tiny_model(monkeypatch):
    from lnlib import data

    monkeypatch.setitem(data.LANG_NAMES, "xx", "w99")  # the word tokenizer only knows w0..w99
    problems = [Problem("xx", i, f"w{i} w{i + 1}", 1.0, f"w{i + 50} w{i + 51}") for i in range(4)]
    model, tok = tiny_model("qwen3"), word_tokenizer()
    metrics = evaluate.alignment_metrics(model, tok, {"xx": problems}, layer=0)
    table = metrics.table()
    assert list(table.index) == ["xx"] and set(table.columns) == {"nll", "retrieval"}
    assert table.loc["xx", "nll"] > 0 and 0 <= table.loc["xx", "retrieval"] <= 1
    assert len(metrics.nll["xx"].n_tokens) == len(metrics.hit["xx"]) == 4  # per text, for intervals
    same = [Problem("xx", i, f"w{i} w{i + 7}", 1.0, f"w{i} w{i + 7}") for i in range(4)]
    assert evaluate.alignment_metrics(model, tok, {"xx": same}, layer=1).table().loc["xx", "retrieval"] == 1.0


def test_metric_changes_against_a_control():
    def metrics(nll_per_token, hit):  # one language, four texts of two scored tokens each
        nll = evaluate.TextNLL(torch.full((4,), 2 * nll_per_token), torch.full((4,), 2))
        return evaluate.AlignmentMetrics({"ru": nll}, {"ru": torch.full((4,), hit)})

    before, after = metrics(1.0, False), metrics(0.5, True)
    changes = evaluate.metric_changes(before, after, metrics(0.75, False), n=5)
    assert changes.effect["nll"].value == pytest.approx(-0.5) and changes.effect["nll ru"].value == pytest.approx(-0.5)
    assert changes.control["nll"].value == pytest.approx(-0.25) and changes.control["retrieval"].value == 0
    assert changes.beyond["nll"].value == pytest.approx(-0.25) and changes.beyond["retrieval"].value == 1
    assert changes.verdict("nll", -1) == "agrees" and changes.verdict("retrieval", +1) == "agrees"
    as_large = evaluate.metric_changes(before, after, metrics(0.5, False), n=5)  # the control lowers the NLL as much
    assert as_large.verdict("nll", -1) == "inconclusive" and as_large.verdict("retrieval", +1) == "agrees"
    alone = evaluate.metric_changes(before, after, n=5)
    assert alone.control is None and list(alone.table(".3f", keys=("nll", "retrieval")).columns) == ["alignment"]
