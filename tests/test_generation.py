"""lnlib.generation on a tiny model: greedy = repeated argmax, batching-independent, seeded sampling, stops."""

import pytest
import torch
from tiny_models import tiny_model, word_tokenizer

from lnlib import generation

PROMPTS = ["w1 w2 w3 w4 w5", "w9", "w3 w3 w1", "w7 w8 w9 w10 w11 w12 w13"]


def test_generation_is_deterministic_and_independent_of_batching():
    model, tok = tiny_model("llama"), word_tokenizer()
    model.generation_config.eos_token_id = None  # a random model: never stop early
    greedy = generation.generate_responses(model, tok, PROMPTS, max_new_tokens=6, batch_size=4, progress=False)
    again = generation.generate_responses(model, tok, PROMPTS, max_new_tokens=6, batch_size=4, progress=False)
    one_by_one = generation.generate_responses(model, tok, PROMPTS, max_new_tokens=6, batch_size=1, progress=False)
    assert greedy == again == one_by_one
    for prompt, text in zip(PROMPTS, greedy, strict=True):  # greedy = repeatedly appending the argmax
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            for _ in range(6):
                ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], 1)
        assert text == tok.decode(ids[0, len(tok(prompt).input_ids):], skip_special_tokens=True)
    sampled = [generation.generate_responses(model, tok, PROMPTS, max_new_tokens=6, do_sample=True, seed=s,
                                             temperature=2.0, progress=False) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]


def test_generation_stops_at_stop_strings():
    model, tok = tiny_model("llama"), word_tokenizer()
    model.generation_config.eos_token_id = None
    full = generation.generate_responses(model, tok, ["w1 w2"], max_new_tokens=8, progress=False)[0]
    stop_word = full.split()[2]
    cut = generation.generate_responses(model, tok, ["w1 w2"], max_new_tokens=8, stop=[stop_word], progress=False)[0]
    assert cut == full[:full.index(stop_word)]


def test_bad_generation_input_is_refused():
    model, tok = tiny_model("llama"), word_tokenizer()
    with pytest.raises(ValueError, match="not a single text"):
        generation.generate_responses(model, tok, "w1 w2", progress=False)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generation.generate_responses(model, tok, ["w1"], max_new_tokens=0, progress=False)
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        generation.generate_responses(model, tok, ["w1"], progress=False)
