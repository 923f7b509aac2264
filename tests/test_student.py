"""A student edition runs, in fast mode, up to its first exercise and stops there with a message that says what to
write. Chapter 1 (no model) stands in for all: the structural tests of test_notebooks.py show that every student
edition is its chapter with the solutions stubbed, and the chapters themselves run to the end under nbmake."""

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_student_edition_stops_at_its_first_stub_with_a_hint(data_dir, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    path = ROOT / "student" / "01_finding_language_neurons.ipynb"
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv("LNLIB_FAST", "1")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(nbclient.exceptions.CellExecutionError) as failure:
        client.execute()
    message = str(failure.value)
    assert "NotImplementedError" in message and "write tau_at, then run the check below. Hint:" in message
    stub = next(i for i, c in enumerate(nb.cells) if "nbgrader" in c.metadata and "def tau_at" in c.source)
    ran = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count")]
    assert max(ran) > stub, "the notebook stopped before its first exercise"
    assert all(not c.get("outputs") or i <= max(ran) for i, c in enumerate(nb.cells))
