import hashlib
import json
import shutil

import pytest
import torch

from lnlib import data
from lnlib.config import OFFLINE_ENVS
from lnlib.counts import load_released_probs
from lnlib.data import LANG_NAMES, LANGS


def test_langs_in_paper_order_with_names():
    assert LANGS == ("en", "ru", "es", "fr", "de", "zh", "ja", "bn", "th", "sw")
    assert list(LANG_NAMES) == list(LANGS)
    assert LANG_NAMES["sw"] == "Swahili"


def test_checksum_table_matches_shared_folder(data_dir):
    shared = dict(line.split()[::-1] for line in (data_dir / "SHA256SUMS").read_text().splitlines() if line)
    assert data.checksums() == shared


@pytest.mark.parametrize("lang", LANGS)
def test_mgsm_is_parallel(data_dir, lang):
    items = data.load_mgsm(lang)
    english = data.load_mgsm("en")
    assert len(items) == 250
    assert [p.answer for p in items] == [p.answer for p in english]
    assert items[0].question_en == english[0].question
    assert all(p.question.strip() for p in items)


def test_mgsm_answers_are_numbers(data_dir):
    items = data.load_mgsm("en")
    assert items[0].answer == 18
    assert max(p.answer for p in items) > 1000  # "1,000"-style answers are parsed


def test_mgsm_exemplars(data_dir):
    shots = data.load_mgsm_exemplars("de")
    assert [s.answer for s in shots] == [11, 29, 39, 9, 33, 8, 8, 5]
    assert shots[0].question.startswith("Frage:")


@pytest.mark.parametrize("lang", LANGS)
def test_msvamp(data_dir, lang):
    items = data.load_msvamp(lang, n=5)
    assert len(items) == 5 and len(data.load_msvamp(lang)) == 1000
    english = data.load_msvamp("en", n=5)
    assert [p.question_en for p in items] == [p.question for p in english]
    assert [p.answer for p in items] == [p.answer for p in english]


def test_unknown_language_names_known_ones(data_dir):
    with pytest.raises(ValueError, match="'xx' is not in MGSM; known: en, ru"):
        data.load_mgsm("xx")
    with pytest.raises(ValueError, match="not in MSVAMP"):
        data.load_msvamp("te")


def test_released_counts_and_probs(data_dir):
    counts = data.load_released_counts("mgsm")
    assert counts.full.shape == counts.prefix.shape == (32, 14336, 10)
    assert counts.full_tokens.tolist()[0] == 583_261 and counts.prefix_tokens.tolist()[0] == 263_330
    assert counts.response_tokens.tolist() == [319_931, 372_039, 343_440, 330_590, 335_753,
                                               382_388, 429_589, 701_467, 631_430, 408_472]
    probs = load_released_probs("mgsm")
    assert probs.shape == (32, 14336, 10) and probs.dtype == torch.float32
    assert probs.min() == 0 and 1.0 < probs.max() < 1.002
    # one value by hand: layer 3, neuron 7, Thai
    k = LANGS.index("th")
    manual = max(int(counts.full[3, 7, k] - counts.prefix[3, 7, k]), 0) / int(counts.response_tokens[k])
    assert probs[3, 7, k].item() == pytest.approx(manual, rel=1e-6)


def test_released_mask_sizes(data_dir):
    mask = data.load_released_mask("mgsm")
    sizes = [sum(len(layer) for layer in per_lang) for per_lang in mask]
    assert sizes == [142, 556, 523, 821, 941, 412, 676, 948, 622, 666]
    assert all(len(per_lang) == 32 for per_lang in mask)
    assert all(layer.dtype == torch.int64 and torch.all(layer[1:] > layer[:-1]) for layer in mask[3])


def test_released_other_dataset_refused():
    with pytest.raises(ValueError, match="released statistics for mgsm only"):
        data.load_released_counts("msvamp")


def _copy(data_dir, root, rel):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_dir / rel, root / rel)
    return root / rel


def test_corrupted_copy_is_refused(data_dir, isolated, monkeypatch):
    root = isolated / "data"
    path = _copy(data_dir, root, "mgsm/mgsm_en.tsv")
    blob = bytearray(path.read_bytes())
    blob[10] ^= 1
    path.write_bytes(bytes(blob))
    monkeypatch.setenv("LNLIB_DATA_DIR", str(root))
    with pytest.raises(data.DataError, match="mgsm_en.tsv does not match its SHA256"):
        data.load_mgsm("en")


def test_verified_copy_in_data_dir_is_used(data_dir, isolated, monkeypatch):
    root = isolated / "data"
    _copy(data_dir, root, "mgsm/mgsm_fr.tsv")
    _copy(data_dir, root, "mgsm/mgsm_en.tsv")
    monkeypatch.setenv("LNLIB_DATA_DIR", str(root))
    assert data.data_file("mgsm/mgsm_fr.tsv") == root / "mgsm/mgsm_fr.tsv"
    assert len(data.load_mgsm("fr")) == 250


def test_offline_error_names_file_url_and_variable(isolated):
    with pytest.raises(data.DataError) as err:
        data.load_mgsm("sw")
    message = str(err.value)
    assert "mgsm/mgsm_en.tsv" in message or "mgsm/mgsm_sw.tsv" in message
    assert "https://raw.githubusercontent.com/google-research/url-nlp/" in message
    assert "LNLIB_DATA_DIR" in message


def _serve_from(monkeypatch, folder):
    """Point the upstream URLs at a local folder (file:// URLs), so downloads run without a network."""
    for name in OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(data, "UPSTREAM", {key: folder.as_uri() + f"/{key}/" for key in data.UPSTREAM})


def test_download_is_verified_and_cached(data_dir, isolated, monkeypatch):
    upstream = isolated / "upstream"
    _copy(data_dir, upstream, "msvamp/test_Thai.json")
    _serve_from(monkeypatch, upstream)
    path = data.data_file("msvamp/test_Thai.json")
    assert path == isolated / "cache" / "data" / "msvamp/test_Thai.json"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == data.checksums()["msvamp/test_Thai.json"]


def test_corrupted_download_is_not_saved(data_dir, isolated, monkeypatch):
    upstream = isolated / "upstream"
    path = _copy(data_dir, upstream, "msvamp/test_Thai.json")
    path.write_bytes(path.read_bytes() + b"\n")
    _serve_from(monkeypatch, upstream)
    with pytest.raises(data.DataError, match="does not match its SHA256"):
        data.data_file("msvamp/test_Thai.json")
    assert not (isolated / "cache" / "data" / "msvamp/test_Thai.json").exists()


def test_exemplars_conversion_reads_literals_without_executing():
    source = 'import os\nA = [1, 2]\nB = {"x": {"q": "Frage: ä"}}\nos.system("false")\n'
    assert json.loads(data.exemplars_py_to_json(source)) == {"A": [1, 2], "B": {"x": {"q": "Frage: ä"}}}
    assert "ä" in data.exemplars_py_to_json(source)  # kept as UTF-8, like the published JSON


def test_exemplars_conversion_matches_published_json(data_dir):
    published = (data_dir / "mgsm/exemplars.json").read_text(encoding="utf-8")
    values = json.loads(published)
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    assert data.exemplars_py_to_json(source) == published


@pytest.fixture
def mirror(data_dir, monkeypatch):
    """The shared data folder served on 127.0.0.1 (a real HTTP server, loopback only) as LNLIB_DATA_URL."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(data_dir))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LNLIB_DATA_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    yield server
    server.shutdown()


def test_a_mirror_serves_every_file_type_through_the_real_download_path(isolated, mirror, monkeypatch):
    for name in OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    assert len(data.load_mgsm("th")) == 250
    assert data.load_mgsm_exemplars("bn")[0].answer == 11  # exemplars.json comes as JSON from a mirror
    assert data.load_released_counts("mgsm").full.shape == (32, 14336, 10)
    cached = sorted((isolated / "cache" / "data").rglob("*"))
    assert not [p for p in cached if p.name.endswith(".partial")]
    assert all(data._is_valid(p, data.checksums()[p.relative_to(isolated / "cache" / "data").as_posix()])
               for p in cached if p.is_file())


def test_a_mirror_missing_a_file_says_where_it_looked(isolated, mirror, monkeypatch):
    for name in OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LNLIB_DATA_URL", mirror.server_address and f"http://127.0.0.1:{mirror.server_address[1]}/nope")
    with pytest.raises(data.DataError, match="LNLIB_DATA_URL") as err:
        data.load_msvamp("sw")
    assert "/nope/msvamp/test_Swahili.json" in str(err.value)
    assert not list((isolated / "cache").rglob("*.partial"))


def test_questions_per_language(monkeypatch):
    def load(lang):
        return [data.Problem(lang, i, f"{lang} question {i}", float(i), f"en question {i}") for i in range(5)]

    monkeypatch.setitem(data.DATASETS, "toy", data.Dataset("toy", ("en", "de"), 5, load, "none"))
    assert data.questions("toy", range(3, 5), langs=("de", "en")) == {"de": ["de question 3", "de question 4"],
                                                                      "en": ["en question 3", "en question 4"]}
    assert list(data.questions("toy", langs=("en",))["en"]) == [f"en question {i}" for i in range(5)]
    with pytest.raises(ValueError, match="not in TOY"):
        data.questions("toy", range(2))  # the default languages are the paper's ten


def test_questions_of_several_datasets_and_flattened(monkeypatch):
    def loader(name):
        return lambda lang: [data.Problem(lang, i, f"{name} {lang} {i}", float(i), f"{name} en {i}") for i in range(3)]

    for name in ("toy", "other"):
        monkeypatch.setitem(data.DATASETS, name, data.Dataset(name, ("en", "de"), 3, loader(name), "none"))
    both = data.questions(("toy", "other"), range(1, 3), langs=("en", "de"))
    assert both == {"en": ["toy en 1", "toy en 2", "other en 1", "other en 2"],
                    "de": ["toy de 1", "toy de 2", "other de 1", "other de 2"]}
    texts, langs = data.flatten(data.questions("toy", range(2), langs=("de", "en")))
    assert texts == ["toy de 0", "toy de 1", "toy en 0", "toy en 1"] and langs == ["de", "de", "en", "en"]
    assert data.flatten({}) == ([], [])
