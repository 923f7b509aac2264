"""tools/answer_key.py: the instructor page's answer keys come from what the executed chapters printed."""

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import answer_key  # noqa: E402


def _solution(source, cell_type="code"):
    cell = new_code_cell(source) if cell_type == "code" else new_markdown_cell(source)
    cell.metadata["tags"] = ["solution"]
    return cell


def test_each_exercise_gets_what_its_checks_printed():
    check = new_code_cell("check()", outputs=[new_output("stream", name="stdout", text="all 3 cases match\n")])
    table = new_code_cell("t", outputs=[new_output("execute_result", data={"text/plain": "a  b\n1  2"})])
    stray = new_code_cell("x", outputs=[new_output("stream", name="stdout", text="not a check\n")])
    nb = new_notebook(cells=[
        stray,
        new_markdown_cell("## Exercises\n\n**1. By hand.** Write f."), _solution("def f(): ..."), check, table,
        _solution("<details>…</details>", "markdown"),
        new_markdown_cell("**2. Think.** Why?"), _solution("<details>because</details>", "markdown"),
        new_markdown_cell("## Summary"), new_code_cell("say()", outputs=[new_output("stream", text="summary\n")]),
    ])
    assert answer_key.exercise_outputs(nbformat.from_dict(nb)) == [
        ("1. By hand.", "all 3 cases match\na  b\n1  2"), ("2. Think.", "")]


def test_a_chapter_never_executed_gets_no_key(tmp_path):
    text = answer_key.chapter_key(tmp_path / "09_running_at_scale.ipynb", None)
    assert "has not been executed by a build yet" in text and "the rubric is the key" in text


def test_the_stage_map_covers_the_threshold_grid():
    from lnlib import pipeline

    ident = pipeline.from_released("mgsm").ident
    text = answer_key._stage_map({"released": ident})
    assert text.startswith("Threshold settings that yield four stages: released: ")
    assert text.count("\n|") == 2 + 27  # header, rule and 27 settings
