"""lnlib.langid: language identification among the paper's languages, and numbers in answers."""

import pytest

from lnlib import langid


@pytest.mark.parametrize("text, value", [
    ("She pays 3 + 4 = 7 dollars. The answer is 18.", 18.0),
    ("Total: 1,234,567 apples", 1234567.0),
    ("It is -2.5 degrees", -2.5),
    ("The answer is 42.", 42.0),
    ("答案是 96", 96.0),
    ("no number here", None),
])
def test_extract_last_number(text, value):
    assert langid.extract_last_number(text) == value


def test_number_tolerance():
    assert langid.is_correct_number("... so 18", 18.0)
    assert langid.is_correct_number("... so 18.005", 18.0)
    assert not langid.is_correct_number("... so 18.5", 18.0)
    assert not langid.is_correct_number("no answer", 18.0)


@pytest.mark.parametrize("text, lang", [
    ("Janet's ducks lay sixteen eggs per day and she eats three for breakfast every morning.", "en"),
    ("Die Enten von Janet legen jeden Tag sechzehn Eier, und sie isst jeden Morgen drei zum Frühstück.", "de"),
    ("Les canards de Janet pondent seize œufs par jour et elle en mange trois au petit-déjeuner.", "fr"),
    ("Утки Джанет несут шестнадцать яиц в день, и каждое утро она съедает три на завтрак.", "ru"),
    ("珍妮特的鸭子每天下十六个蛋，她每天早上吃三个当早餐。", "zh"),
    ("ジャネットのアヒルは1日に16個の卵を産み、彼女は毎朝3個を朝食に食べます。", "ja"),
    ("Bata wa Janet hutaga mayai kumi na sita kwa siku na yeye hula matatu kila asubuhi.", "sw"),
])
def test_detect_language(text, lang):
    assert langid.detect_language(text) == lang


def test_detect_language_needs_letters():
    assert langid.detect_language("18 + 24 = 42") is None
    assert langid.detect_language("Die Antwort", langs=("de", "en")) in ("de", "en")


