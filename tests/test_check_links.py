import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from check_links import broken_links  # noqa: E402


def test_finds_missing_pages_and_anchors(tmp_path):
    (tmp_path / "a.html").write_text('<h1 id="top">A</h1><a href="b.html#sec">ok</a><a href="#top">self</a>'
                                     '<a href="https://example.org/x">external</a>')
    (tmp_path / "b.html").write_text('<section id="sec"></section><a href="c.html">gone</a>'
                                     '<a href="a.html#nowhere">bad anchor</a><img src="img/x.png">')
    problems = broken_links(tmp_path)
    assert sorted(problems) == ["b.html: a.html#nowhere -> no element with that id",
                                "b.html: c.html -> missing file", "b.html: img/x.png -> missing file"]
