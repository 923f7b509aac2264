"""lnlib.book: the sentences that state results, the set-up check and the compute tables of the build records."""

import json

import pytest

from lnlib import book, profiles


def test_names_joins_like_prose():
    assert book.names([]) == ""
    assert book.names(["en"]) == "en"
    assert book.names(["en", "zh"]) == "en and zh"
    assert book.names(["en", "zh", "sw"], last="or") == "en, zh or sw"


def test_pairs_text_lists_language_pairs_with_their_counts():
    assert book.pairs_text([(12, "zh", "ja"), (9, "ja", "th")]) == "zh–ja (12), ja–th (9)"
    assert book.pairs_text([]) == ""


def test_say_displays_markdown(monkeypatch):
    display = pytest.importorskip("IPython.display")
    shown = []
    monkeypatch.setattr(display, "display", shown.append)
    book.say("**3** neurons")
    assert len(shown) == 1 and shown[0].data == "**3** neurons"


def test_start_warns_when_the_notebook_belongs_to_another_release(capsys):
    with pytest.warns(UserWarning, match="belongs to lnlib v0.0.1"):
        book.start("v0.0.1")
    assert "lnlib" in capsys.readouterr().out


def test_compute_table_shows_measured_minutes_and_labels_estimates(tmp_path, monkeypatch):
    records = tmp_path / "records.json"
    records.write_text(json.dumps({"02_x": {"cpu": {"minutes": 3.5, "forward": 1200, "train": 0,
                                                    "date": "2026-12-03"}}}))
    monkeypatch.setattr(book, "RECORDS", records)
    monkeypatch.setattr(profiles, "GPU_MINUTES", {"02_x": {"t4": "about 5"}})
    table = book.compute_table("02_x")
    assert table.loc["cpu", "minutes"] == "3.5 (measured 2026-12-03)"
    assert table.loc["cpu", "forward tokens"] == "1,200"
    assert table.loc["t4", "minutes"] == "about 5 (estimate)"
    assert set(table.index) == set(profiles.PROFILES)
    assert all("estimate" in table.loc[name, "minutes"] for name in profiles.PROFILES if name not in ("cpu", "t4"))
