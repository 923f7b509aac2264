import pytest
import torch

from lnlib import identify, testing


def test_reference_passes_its_own_checks(capsys):
    testing.check_response_probs(identify.response_probs)
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
