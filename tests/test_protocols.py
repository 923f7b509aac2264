"""lnlib.protocols: which texts are read and which tokens count."""

import pytest

from lnlib import data, protocols
from lnlib.data import Problem

DE = [Problem("de", i, f"Frage {i}?", float(i), f"Question {i}?") for i in range(5)]


def test_prompt_pairs_keep_the_instruction_out():
    pairs = protocols.prompt_pairs(["Hallo Welt", "Bonjour"])
    assert pairs == [(protocols.INSTRUCTION, "Hallo Welt"), (protocols.INSTRUCTION, "Bonjour")]
    with pytest.raises(ValueError, match="not a single text"):
        protocols.prompt_pairs("Hallo Welt")


def test_mathoctopus_prompt():
    text = protocols.mathoctopus_prompt(Problem("de", 0, "Wie viel?", 3.0, "How much?"))
    assert "in German. Please answer in German." in text and text.endswith("Wie viel?\n\n### Response:")


def test_book_pairs_and_sources(data_dir):
    source = protocols.Source("mgsm", range(2, 4))
    pairs = protocols.book_pairs("fr", source)
    assert [q for _, q in pairs] == [p.question for p in protocols.data.load_mgsm("fr")[2:4]]
    assert source.label == "mgsm[2:4]"
    with pytest.raises(ValueError, match="reach beyond"):
        protocols.book_pairs("fr", protocols.Source("mgsm", range(240, 260)))
    with pytest.raises(ValueError, match="unknown dataset 'gsm8k'"):
        protocols.book_pairs("fr", protocols.Source("gsm8k", range(2)))


def test_mgsm_prompt_uses_the_language_labels(data_dir):
    text = protocols.mgsm_prompt("de", 0, shots=0)
    assert text.startswith("Frage:") and text.endswith(":")
    assert protocols.mgsm_prompt("de", 0, shots=1).count("Frage:") == 2
    with pytest.raises(ValueError, match="shots"):
        protocols.mgsm_prompt("de", 0, shots=9)



def test_mgsm_prompts_per_language(data_dir):
    prompts = protocols.mgsm_prompts(range(3, 5), shots=0, langs=("de", "fr"))
    assert list(prompts) == ["de", "fr"] and prompts["fr"][1] == protocols.mgsm_prompt("fr", 4, shots=0)
    assert [p.count("Frage:") for p in prompts["de"]] == [1, 1] and prompts["de"][0] != prompts["de"][1]
    assert list(protocols.mgsm_prompts(range(1))) == list(data.LANGS)


def test_alignment_pairs_map_to_english_and_refuse_english():
    pairs = protocols.alignment_pairs(DE[:1])
    assert pairs == [("German: Frage 0?\nEnglish:", " Question 0?")]
    with pytest.raises(ValueError, match="English problems"):
        protocols.alignment_pairs([Problem("en", 0, "Q?", 1.0, "Q?")])


def test_control_pairs_carry_no_cross_lingual_signal():
    shuffled = protocols.control_pairs(DE, "shuffled", seed=3)
    aligned = protocols.alignment_pairs(DE)
    assert [p for p, _ in shuffled] == [p for p, _ in aligned]  # same prompts, same size
    assert all(s != a for (_, s), (_, a) in zip(shuffled, aligned, strict=True))  # nobody keeps its target
    assert sorted(r for _, r in shuffled) == sorted(r for _, r in aligned)  # the same targets, permuted
    english = protocols.control_pairs(DE, "english")
    assert english[0] == ("English: Question 0?\nEnglish:", " Question 0?")
