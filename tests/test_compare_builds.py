"""tools/compare_builds.py: every number that differs between two builds is listed, and nothing else."""

import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import compare_builds  # noqa: E402


def _chapter(*texts, stderr="", where="lnlib 0.2.0, torch 2.6; CPU (2 cores); cache /somewhere"):
    cells = [new_markdown_cell("# A chapter"),
             new_code_cell("start()", outputs=[new_output("stream", name="stdout", text=where + "\n")])]
    for text in texts:
        outputs = [new_output("display_data", data={"text/markdown": text, "text/plain": "<Markdown object>"})]
        if stderr:
            outputs.append(new_output("stream", name="stderr", text=stderr))
        cells.append(new_code_cell("say(...)", outputs=outputs))
    return nbformat.from_dict(new_notebook(cells=cells))


def _compare(old, new, rtol=0.0):
    result = compare_builds.Comparison()
    compare_builds.compare_lines("03", compare_builds.shown_lines(old), compare_builds.shown_lines(new), result, rtol)
    return result


def test_equal_builds_are_the_same_though_they_ran_elsewhere_and_warned():
    old = _chapter("Diagonal 5.84 (4.85 to 7.37), off-diagonal 0.05.", "Table:\n  en  1,234\n  de  −12")
    new = _chapter("Diagonal 5.84 (4.85 to 7.37), off-diagonal 0.05.", "Table:\n  en  1,234\n  de  −12",
                   stderr="IntervalWarning: few texts\n", where="lnlib 0.3.0, torch 2.9; NVIDIA T4; cache /content")
    result = _compare(old, new)
    assert result.same and result.compared == 6


def test_compute_tables_and_temporary_folders_do_not_count():
    table = "        minutes\ncpu     3.4 (measured 2026-12-03)\n\n        training tokens\ncpu     0"
    old = _chapter(table, f"wrote {compare_builds.tempfile.gettempdir()}/run-ab12/one: 181 tokens")
    new = _chapter(table.replace("3.4", "2.9").replace(" 0", " –"),
                   f"wrote {compare_builds.tempfile.gettempdir()}/run-x9y8/one: 181 tokens")
    result = _compare(old, new)
    assert result.same and result.compared == 1


def test_a_moved_number_is_listed_with_its_line_and_both_values():
    result = _compare(_chapter("Diagonal 5.84 (4.85 to 7.37)."), _chapter("Diagonal 5.91 (4.85 to 7.37)."))
    assert not result.same
    assert result.moved == [("03", "Diagonal 5.91 (4.85 to 7.37).", "5.84", "5.91")]


def test_rtol_forgives_small_differences_only():
    old, new = _chapter("ratio 1000.0 and 2.0"), _chapter("ratio 1000.5 and 2.1")
    assert [m[2] for m in _compare(old, new, rtol=1e-3).moved] == ["2.0"]


def test_timings_are_listed_apart_and_do_not_fail():
    result = _compare(_chapter("One process took 24 s and the alignment 2.1 minutes, on 3 ranks."),
                      _chapter("One process took 31 s and the alignment 2.4 minutes, on 3 ranks."))
    assert result.same and [t[3] for t in result.timings] == ["31", "2.4"]


def test_changed_wording_and_new_lines_are_in_one_build_only():
    result = _compare(_chapter("first 1", "gone 2", "last 3"), _chapter("first 1", "new wording 2", "last 3", "extra"))
    assert result.only_old == [("03", "gone 2")]
    assert result.only_new == [("03", "new wording 2"), ("03", "extra")]
    assert not result.moved


def _build(root: Path, text: str) -> None:
    path = root / "notebooks" / "03_x.ipynb"
    path.parent.mkdir(parents=True)
    unexecuted = _chapter("x")
    for cell in unexecuted.cells:
        cell.outputs = []
    nbformat.write(unexecuted, path)
    cache = get_cache(str(root / "_build" / ".jupyter_cache"))
    executed = _chapter(text)
    cache.cache_notebook_bundle(CacheBundleIn(executed, str(path)), check_validity=False, overwrite=True)
    never = _chapter("x")
    never.cells.append(new_code_cell("other()"))
    nbformat.write(never, root / "notebooks" / "04_y.ipynb")


def test_two_checkouts_are_read_from_their_book_caches(tmp_path, capsys):
    _build(tmp_path / "old", "Diagonal 5.84.")
    _build(tmp_path / "new", "Diagonal 6.00.")
    assert compare_builds.main([str(tmp_path / "old"), str(tmp_path / "new")]) == 1
    out = capsys.readouterr()
    assert "| 03_x | Diagonal 6.00. | 5.84 | 6.00 |" in out.out
    assert "04_y was not executed in this build" in out.err


def test_a_checkout_without_a_build_says_to_run_make_book(tmp_path):
    with pytest.raises(SystemExit, match="run `make book` there first"):
        compare_builds.executed_chapters(tmp_path)
