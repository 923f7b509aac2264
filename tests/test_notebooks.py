"""The notebooks as files: stripped of outputs, listed in the table of contents, and pointing at the
repository URL defined once in _config.yml."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"]
REPO = REPO_URL.removeprefix("https://github.com/")


def _cells(path):
    return json.loads(path.read_text())["cells"]


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
