"""The notebooks as files: stripped of outputs, listed in the table of contents, and pointing at the
repository URL defined once in _config.yml, at the release of this version of lnlib."""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

import lnlib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"]
REPO = REPO_URL.removeprefix("https://github.com/")


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell) -> str:
    return "".join(cell["source"])


def _parameters(path) -> str:
    return "".join(_source(c) for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", []))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: code cells {dirty} carry outputs; strip them (the book build executes them)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_colab_badge_and_installs_from_this_repository(path):
    cells = _cells(path)
    badge = "".join(cells[0]["source"])
    branch = CONFIG["repository"]["branch"]
    assert f"colab.research.google.com/github/{REPO}/blob/{branch}/notebooks/{path.name}" in badge
    setup = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    assert f"git+{REPO_URL}@" in setup and "google.colab" in setup
    assert "HF_HUB_DISABLE_PROGRESS_BARS" in setup


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_parameters_cell(path):
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one code cell must be tagged 'parameters'"


def test_every_notebook_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    missing = [p.name for p in NOTEBOOKS if f"notebooks/{p.stem}" not in toc]
    assert not missing, f"add these notebooks to _toc.yml: {missing}"


def test_the_version_is_defined_once():
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert version == lnlib.__version__, "pyproject.toml and lnlib/__init__.py name different versions"


def test_the_book_opens_notebooks_in_colab():
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert REPO_URL.startswith("https://github.com/") and CONFIG["repository"]["branch"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_installs_the_pinned_release_and_nothing_else(path):
    setup = _source(next(c for c in _cells(path) if c["cell_type"] == "code"))
    installs = [line.strip() for line in setup.splitlines() if "pip install" in line]
    expected = f'%pip install -q "lnlib @ git+{REPO_URL}@v{lnlib.__version__}"'
    assert installs == [expected], (f"{path.name}: the set-up cell must install exactly the release tag "
                                    f"v{lnlib.__version__} of {REPO_URL} (see Releasing in README.md); "
                                    f"found {installs}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_chapter_that_loads_a_model_takes_it_from_the_profile(path):
    code = "\n".join(_source(c) for c in _cells(path) if c["cell_type"] == "code")
    if "load_model(" not in code:
        return  # no model: the chapter says so in its Compute table
    params = _parameters(path)
    assert re.search(r'^PROFILE = "auto"', params, re.M), f"{path.name}: set PROFILE = \"auto\" in the parameters"
    assert re.search(r"^MODEL = None", params, re.M), f"{path.name}: keep MODEL = None (the profile's model)"
    assert "profiles.get_profile(PROFILE)" in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_exercises_with_solutions_and_an_lnlib_testing_check(path):
    cells = _cells(path)
    markdown = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    code = "\n".join(_source(c) for c in cells if c["cell_type"] == "code")
    assert "## Exercises" in markdown and "<details>" in markdown, f"{path.name}: add exercises with solutions"
    assert re.search(r"testing\.check_\w+\(", code), f"{path.name}: check an exercise with lnlib.testing"
    exercises = markdown.split("## Exercises", 1)[1].split("## Summary", 1)[0]
    for number, text in re.findall(r"\*\*(\d+)\. (.*?)(?=\*\*\d+\. |\Z)", exercises, flags=re.S):
        assert "<details><summary>Solution</summary>" in text, f"{path.name}: exercise {number} has no folded solution"


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
    for field in ("**Teaches**", "**Builds on**", "**lnlib**", "**Assignments**"):
        assert field in section, f"book/instructors.md, {path.stem}: the section lacks {field}"
    listed = set(re.findall(r"`lnlib\.(\w+)`", section.split("**lnlib**", 1)[1].split("\n- **", 1)[0]))
    missing = _lnlib_modules(path) - listed
    assert not missing, f"book/instructors.md, {path.stem}: list the lnlib modules it uses: {sorted(missing)}"
