"""tools/build_book.py: a chapter is executed once into the cache the book build reads, and its slowest cells named."""

import sys
from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import build_book  # noqa: E402


def _timed(seconds: float) -> dict:
    return {"execution": {"iopub.execute_input": "2026-12-03T10:00:00.000000Z",
                          "shell.execute_reply": f"2026-12-03T10:{int(seconds) // 60:02d}:{seconds % 60:09.6f}Z"}}


def test_slowest_cells_are_ranked_by_their_recorded_time():
    notebook = new_notebook(cells=[new_markdown_cell("# A chapter"), new_code_cell("a", metadata=_timed(2.5)),
                                   new_code_cell("b", metadata=_timed(190.0)), new_code_cell("c"),
                                   new_code_cell("d", metadata=_timed(30.0)), new_code_cell("e", metadata=_timed(1))])
    assert build_book.slowest_cells(notebook) == [(2, 190.0), (4, 30.0), (1, 2.5)]
    assert build_book.slowest_cells(notebook, n=1) == [(2, 190.0)]


def test_a_notebook_without_timing_has_no_slowest_cells():
    assert build_book.slowest_cells(new_notebook(cells=[new_code_cell("a")])) == []


def test_an_executed_chapter_is_found_in_the_cache_the_book_build_reads(tmp_path):
    """The book build matches chapters against the cache by their code and cell metadata: the timing recorded while
    executing must not be stored with them, or `jupyter-book build` would execute every chapter again."""
    path = tmp_path / "chapter.ipynb"
    nbformat.write(new_notebook(cells=[new_markdown_cell("# A chapter"), new_code_cell("print(6 * 7)")],
                                metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}}), path)
    cache = get_cache(str(tmp_path / "cache"))
    measured = build_book.execute(path, cache, timeout=120)
    assert measured["forward"] == 0 and [number for number, _ in measured["slowest"]] == [1]
    assert build_book.execute(path, cache, timeout=120) is None  # matched: not executed again
    shown = build_book.executed(path, cache)
    assert shown.cells[1].outputs[0]["text"] == "42\n" and "execution" not in shown.cells[1].metadata
