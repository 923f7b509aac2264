"""The library on a GPU gives what it gives on the CPU (skipped where no CUDA device is present)."""

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import align, capture, explorer, intervene, profiles
from lnlib.evaluate import mean_hidden_states, text_nll

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TEXTS = ["w1 w2 w3 w4 w5", "w9 w8 w7", ("w3 w4", " w5 w6 w7")]


@pytest.fixture(params=["llama", "gemma3_text", "gpt2"])
def pair(request):
    cpu = tiny_model(request.param)
    gpu = tiny_model(request.param).to("cuda")
    return cpu, gpu, word_tokenizer()


def test_counts_match(pair):
    cpu, gpu, tok = pair
    a = capture.count_activations(cpu, tok, TEXTS, batch_size=2, progress=False)
    b = capture.count_activations(gpu, tok, TEXTS, batch_size=2, progress=False)
    assert b.over_zero.device.type == "cuda" and a.n_tokens == b.n_tokens
    # the sign test can flip on values within rounding of zero; allow a handful
    assert (a.over_zero - b.over_zero.cpu()).abs().sum() <= 2


def test_nll_and_hidden_states_match(pair):
    cpu, gpu, tok = pair
    a, b = text_nll(cpu, tok, TEXTS, progress=False), text_nll(gpu, tok, TEXTS, progress=False)
    assert torch.allclose(a.nll_sum, b.nll_sum, rtol=1e-3) and torch.equal(a.n_tokens, b.n_tokens)
    texts = [t for t in TEXTS if isinstance(t, str)]
    assert torch.allclose(mean_hidden_states(cpu, tok, texts, 0), mean_hidden_states(gpu, tok, texts, 0), atol=1e-4)


def test_deactivation_on_gpu(pair):
    cpu, gpu, tok = pair
    neurons = [torch.tensor([0, 3, 5])] * 2
    with intervene.deactivate(cpu, neurons):
        a = text_nll(cpu, tok, TEXTS, progress=False)
    with intervene.deactivate(gpu, neurons):
        b = text_nll(gpu, tok, TEXTS, progress=False)
    assert torch.allclose(a.nll_sum, b.nll_sum, rtol=1e-3)


def test_alignment_step_on_gpu():
    model, tok = tiny_model("llama").to("cuda"), word_tokenizer()
    pairs = [("w1 w2", " w10 w11"), ("w3", " w12 w13")]
    run = align.align(model, tok, pairs, align.AlignConfig(steps=3, batch_size=2, lr=1e-2), progress=False)
    assert run.losses[-1] < run.losses[0]
    dpo = [align.PreferencePair("w1 w2", " w10", " w40", 0.5)]
    run = align.align(model, tok, dpo, align.AlignConfig(method="dpo", steps=2, batch_size=1), progress=False)
    assert len(run.losses) == 2


def test_explorer_top_tokens_match(pair):
    cpu, gpu, tok = pair
    texts = [t for t in TEXTS if isinstance(t, str)]
    a = explorer.top_activating_tokens(cpu, tok, texts, [(1, 3)], k=3, batch_size=2)[(1, 3)]
    b = explorer.top_activating_tokens(gpu, tok, texts, [(1, 3)], k=3, batch_size=2)[(1, 3)]
    assert [t for t, _, _ in a] == [t for t, _, _ in b]
    assert [v for _, v, _ in a] == pytest.approx([v for _, v, _ in b], abs=1e-4)


def test_auto_profile_follows_this_gpu():
    memory_gb = torch.cuda.get_device_properties(0).total_memory / 2**30
    assert profiles.get_profile("auto").name == ("a100" if memory_gb >= 35 else "t4")
