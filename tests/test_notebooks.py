"""The notebooks as files: valid, stripped of outputs, listed in the table of contents, installing and opening the
release of this version of lnlib, with every computed sentence made by code, and exercises whose solutions carry
the one `solution` tag from which tools/student.py makes the student editions."""

import ast
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

import lnlib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import release  # noqa: E402

import student  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STUDENT = [ROOT / "student" / p.name for p in NOTEBOOKS]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TAG = f"v{lnlib.__version__}"


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell) -> str:
    return "".join(cell["source"])


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _parameters(path) -> str:
    return "".join(_source(c) for c in _cells(path) if "parameters" in _tags(c))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS + STUDENT, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_is_valid(path):
    nbformat.validate(nbformat.read(path, as_version=4))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs; strip them (the book build executes them)"


def test_badges_set_up_cells_and_versions_name_one_release():
    problems = release.problems(TAG)
    assert not problems, "\n".join(problems) + f"\nrun: python tools/release.py set {lnlib.__version__}"


def test_the_book_opens_notebooks_in_colab_at_the_release():
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"]["url"] == f"https://github.com/{release.REPO}"
    assert CONFIG["repository"]["branch"] == TAG


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_markdown_cell_holds_a_glue_role(path):
    glued = [i for i, c in enumerate(_cells(path)) if c["cell_type"] == "markdown" and "{glue" in _source(c)]
    assert not glued, (f"{path.name}: markdown cells {glued} use {{glue}}, which only the book build fills; show "
                       "the sentence from the code cell that computes it with lnlib.book.say")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_parameters_cell(path):
    tagged = [c for c in _cells(path) if "parameters" in _tags(c)]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code", \
        f"{path.name}: exactly one code cell must be tagged 'parameters'"


def test_every_notebook_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    missing = [p.name for p in NOTEBOOKS if f"notebooks/{p.stem}" not in toc]
    assert not missing, f"add these notebooks to _toc.yml: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_chapter_that_loads_a_model_takes_it_from_the_profile(path):
    code = "\n".join(_source(c) for c in _cells(path) if c["cell_type"] == "code")
    if "load_model(" not in code:
        return  # no model: the chapter says so in its Compute table
    params = _parameters(path)
    assert re.search(r'^PROFILE = "auto"', params, re.M), f"{path.name}: set PROFILE = \"auto\" in the parameters"
    assert re.search(r"^MODEL = None", params, re.M), f"{path.name}: keep MODEL = None (the profile's model)"
    assert "profiles.get_profile(PROFILE)" in code


def _exercises(path) -> dict[int, list[dict]]:
    """Exercise number → the cells from its prompt up to the next exercise or the Summary."""
    cells = _cells(path)
    start = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "## Exercises" in _source(c))
    found, current = {}, None
    for cell in cells[start:]:
        text = _source(cell)
        if cell["cell_type"] == "markdown" and text.lstrip().startswith("## Summary"):
            break
        match = re.search(r"^\*\*(\d+)\. ", text, re.M) if cell["cell_type"] == "markdown" else None
        if match and "solution" not in _tags(cell):
            current = int(match.group(1))
            found[current] = []
        if current is not None:
            found[current].append(cell)
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_has_a_tagged_solution_and_the_chapter_a_check(path):
    exercises = _exercises(path)
    assert exercises, f"{path.name}: add numbered exercises (**1. ...**) under '## Exercises'"
    assert sorted(exercises) == list(range(1, len(exercises) + 1)), f"{path.name}: exercises are not numbered 1..n"
    for number, cells in exercises.items():
        assert any("solution" in _tags(c) for c in cells), f"{path.name}: exercise {number} has no solution cell"
    code = [_source(c) for c in _cells(path) if c["cell_type"] == "code" and "solution" not in _tags(c)]
    assert any(re.search(r"testing\.check_\w+\(", s) for s in code), \
        f"{path.name}: check an exercise with lnlib.testing in a cell of its own"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_solutions_are_marked_one_way_only(path):
    for i, cell in enumerate(_cells(path)):
        text, tagged = _source(cell), "solution" in _tags(cell)
        if tagged and cell["cell_type"] == "code":
            student.stub_source(text)  # only functions with docstrings, and imports: raises otherwise
            assert "testing.check_" not in text, f"{path.name}, cell {i}: keep the check out of the solution cell"
        if not tagged:
            assert "<details>" not in text, f"{path.name}, cell {i}: a folded solution must be tagged 'solution'"
            assert not re.search(r"#.*\breference\b.*\breplace\b|replace with yours", text, re.I), \
                f"{path.name}, cell {i}: a solution marked by a comment; tag the cell 'solution' instead"


def test_student_editions_are_up_to_date():
    assert student.main(check=True) == 0, "run: make student"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_edition_has_no_solution_text_and_with_the_solutions_is_the_chapter(path):
    chapter = _cells(path)
    edition = _cells(ROOT / "student" / path.name)
    kept = [c for c in chapter if not (c["cell_type"] == "markdown" and "solution" in _tags(c))]
    assert len(kept) == len(edition), f"student/{path.name}: cells differ from the chapter's; run make student"
    for ours, theirs in zip(kept, edition, strict=True):
        assert "solution" not in _tags(theirs) and "<details>" not in _source(theirs)
        if "solution" in _tags(ours):
            assert theirs["metadata"]["nbgrader"]["solution"] is True
            stubbed = ast.parse(_source(theirs))
            bodies = [f.body for f in stubbed.body if isinstance(f, ast.FunctionDef)]
            assert bodies and all(isinstance(b[-1], ast.Raise) and len(b) == 2 for b in bodies), \
                f"student/{path.name}: a stub keeps more than its docstring and the NotImplementedError"
            solution = ast.parse(_source(ours))
            names = [f.name for f in solution.body if isinstance(f, ast.FunctionDef)]
            assert names == [f.name for f in stubbed.body if isinstance(f, ast.FunctionDef)]
        else:
            assert _source(ours) == _source(theirs) or ours is chapter[0]  # the badge points at the edition


def _lnlib_modules(path) -> set[str]:
    """The lnlib modules a notebook imports (IPython magics skipped)."""
    modules = set()
    for cell in _cells(path):
        if cell["cell_type"] != "code":
            continue
        lines = _source(cell).splitlines()  # IPython magics become `pass`, keeping the indentation
        source = "\n".join(re.sub(r"^(\s*)[%!].*", r"\1pass", line) for line in lines)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module == "lnlib":
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lnlib."):
                modules.add(node.module.split(".")[1])
    return {m for m in modules if (ROOT / "lnlib" / f"{m}.py").is_file()} - {"book"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_instructor_page_describes_the_chapter_and_its_lnlib_modules(path):
    page = (ROOT / "book" / "instructors.md").read_text()
    sections = [s for s in page.split("\n### ") if f"{{doc}}`/notebooks/{path.stem}`" in s]
    assert len(sections) == 1, f"book/instructors.md: add a section that links {{doc}}`/notebooks/{path.stem}`"
    section = sections[0]
    for field in ("**Teaches**", "**Builds on**", "**lnlib**", "**Assignments**", "**Student edition**",
                  "**Working time**"):
        assert field in section, f"book/instructors.md, {path.stem}: the section lacks {field}"
    listed = set(re.findall(r"`lnlib\.(\w+)`", section.split("**lnlib**", 1)[1].split("\n- **", 1)[0]))
    missing = _lnlib_modules(path) - listed
    assert not missing, f"book/instructors.md, {path.stem}: list the lnlib modules it uses: {sorted(missing)}"
    assert f"student/{path.name}" in section, f"book/instructors.md, {path.stem}: link its student edition"
