import pytest
import torch

from lnlib import compare, counts, identify, testing


def test_reference_passes_its_own_checks(capsys):
    testing.check_response_probs(counts.response_probs)
    testing.check_threshold(identify.threshold)
    testing.check_normalised_entropy(identify.normalised_entropy)
    assert "all 6 cases match" in capsys.readouterr().out


def test_a_wrong_function_fails_with_the_case():
    def off_by_one_rank(probs, bar):
        flat = probs.reshape(-1).sort().values
        return float(flat[round(bar * flat.numel())])  # 0-indexed: one rank too high

    with pytest.raises(AssertionError, match="threshold: case 0 differs"):
        testing.check_threshold(off_by_one_rank)


def test_a_function_without_the_clamp_fails():
    def no_clamp(full, prefix, full_tokens, prefix_tokens):
        return ((full - prefix) / (full_tokens - prefix_tokens)).float()

    with pytest.raises(AssertionError, match="response_probs"):
        testing.check_response_probs(no_clamp)


def test_retrieval_and_dpo_checks_accept_equivalent_code():
    def retrieval(q, t):
        q, t = q / q.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
        return ((q @ t.T).argmax(-1) == torch.arange(len(q))).float().mean().item()

    def dpo(pc, pr, rc, rr, beta):
        return torch.nn.functional.softplus(-beta * ((pc - rc) - (pr - rr))).mean()

    testing.check_retrieval_accuracy(retrieval)
    testing.check_dpo_loss(dpo)


def test_new_references_pass_their_own_checks(capsys):
    from lnlib import explorer, stages

    testing.check_count_active(testing.count_active_reference)
    testing.check_others_above(lambda above: stages.others_above(above, "abcdefg"[:above.shape[1]]))
    testing.check_separation(explorer.separation)
    assert capsys.readouterr().out.count("all 3 cases match") == 3


def test_count_active_reference_is_what_capture_counts():
    from tiny_models import tiny_model, word_tokenizer

    from lnlib import batching, capture, models

    model, tok = tiny_model("llama"), word_tokenizer()
    examples = [("w1 w2", "w3 w4 w5"), ("w6", "w7 w8"), "w9 w10 w11 w12"]
    seen = []
    handle = models.mlp_activations(model)[1].register_forward_hook(lambda m, i, out: seen.append(out))
    try:
        (batch,) = batching.batches(tok, examples, len(examples), 64)
        with torch.no_grad():
            models.body(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        handle.remove()
    expected = capture.count_activations(model, tok, examples, batch_size=1, progress=False).over_zero[1]
    got = testing.count_active_reference(seen[0], batch.target_mask)
    assert torch.equal(got, expected) and 0 < int(got.sum())


def test_count_active_rejects_zero_as_active_and_ignoring_the_mask():
    with pytest.raises(AssertionError, match="count_active: case 0 differs"):
        testing.check_count_active(lambda acts, counted: ((acts >= 0) & counted[..., None]).sum((0, 1)))
    with pytest.raises(AssertionError, match="count_active"):
        testing.check_count_active(lambda acts, counted: (acts > 0).sum((0, 1)))


def test_others_above_rejects_counting_the_language_itself():
    def with_itself(above):
        n = above.sum(-1)
        return torch.stack([torch.bincount(n[above[:, k]], minlength=above.shape[1])[:above.shape[1]]
                            for k in range(above.shape[1])])

    with pytest.raises(AssertionError, match="others_above: case 0 differs"):
        testing.check_others_above(with_itself)


def test_separation_rejects_the_gap_between_the_two_largest():
    def top_two_gap(probs, tau):
        top = probs.topk(2, dim=-1).values
        return top[..., 0] - top[..., 1]

    with pytest.raises(AssertionError, match="separation: case 0 differs"):
        testing.check_separation(top_two_gap)
    with pytest.raises(AssertionError, match="separation"):
        testing.check_separation(lambda probs, tau: "not a tensor")


def test_overlap_check_accepts_the_reference_and_rejects_the_reversed_ratio():

    testing.check_overlap(lambda a, b, kind: 100 * compare.overlap_ratio(a, b, kind))
    with pytest.raises(AssertionError, match="overlap: case"):
        testing.check_overlap(lambda a, b, kind: 100 * compare.overlap_ratio(b, a, kind))


def test_group_change_check_rejects_counting_english_as_untrained():
    def group_change(base, other, trained, with_english):
        diff = other.lang_counts() - base.lang_counts()
        others = [lang for lang in diff.index if lang not in trained and (with_english or lang != "en")]
        return {"trained": diff.loc[trained, ["specific", "related"]].mean().tolist(),
                "untrained": diff.loc[others, ["specific", "related"]].mean().tolist()}

    testing.check_group_change(lambda base, other, trained: group_change(base, other, trained, False))
    with pytest.raises(AssertionError, match="group_change: case"):
        testing.check_group_change(lambda base, other, trained: group_change(base, other, trained, True))


def test_perplexity_check_rejects_swapped_aggregations():
    import math

    def ppl(nll_sum, n_tokens, aggregation, swap=False):
        if (aggregation == "official") != swap:
            return math.exp(float((nll_sum / n_tokens).mean()))
        return math.exp(float(nll_sum.sum() / n_tokens.sum()))

    testing.check_perplexity(ppl)
    with pytest.raises(AssertionError, match="perplexity: case 0 differs"):
        testing.check_perplexity(lambda *args: ppl(*args, swap=True))
