"""Student editions: `student/<chapter>.ipynb` for every chapter, generated from the chapters themselves.

In a chapter, every exercise's solution lives in cells tagged `solution`: code cells that define the functions a
student writes, and markdown cells with the folded explanation. The student edition keeps each function's
signature and docstring and replaces its body with `raise NotImplementedError(...)` (the hint is the docstring's
"Hint:" line), drops the folded explanations, keeps every check, and points its badge and set-up cell at the
student notebook itself. `--solutions` writes the reverse check: the student edition with the solutions put back.

    python tools/student.py            # write student/*.ipynb
    python tools/student.py --check    # exit 1 when a student notebook is missing or out of date
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import release  # noqa: E402

SOLUTION = "solution"
STUDENT = ROOT / "student"


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def stub_source(source: str) -> str:
    """A solution cell's functions with their bodies replaced by a NotImplementedError that gives the hint."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append("\n".join(lines[node.lineno - 1:node.end_lineno]))
            continue
        if not isinstance(node, ast.FunctionDef):
            raise ValueError(f"a solution cell may hold only functions and imports, found {type(node).__name__} at "
                             f"line {node.lineno}:\n{source}")
        doc = ast.get_docstring(node) or ""
        if not doc:
            raise ValueError(f"{node.name}: a solution function needs a docstring (with a 'Hint:' line)")
        hint = next((line.split("Hint:", 1)[1].strip() for line in doc.splitlines() if "Hint:" in line), "")
        first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        header = "\n".join(lines[first - 1:node.body[0].lineno - 1])  # decorators, signature
        docstring = "\n".join(lines[node.body[0].lineno - 1:node.body[0].end_lineno])
        indent = re.match(r"\s*", lines[node.body[0].lineno - 1]).group(0)
        message = f"write {node.name}, then run the check below" + (f". Hint: {hint}" if hint else "")
        out.append(f"{header}\n{docstring}\n{indent}raise NotImplementedError({message!r})")
    return "\n\n\n".join(out)


def student_notebook(chapter: Path, tag: str) -> dict:
    nb = json.loads(chapter.read_text())
    cells = []
    for cell in nb["cells"]:
        if SOLUTION in _tags(cell):
            if cell["cell_type"] == "markdown":
                continue  # folded solutions are for instructors
            cell = {**cell, "source": stub_source("".join(cell["source"])), "outputs": [], "execution_count": None}
            cell["metadata"] = {**cell["metadata"], "tags": [t for t in _tags(cell) if t != SOLUTION],
                                "nbgrader": {"solution": True, "grade": False, "locked": False,
                                             "grade_id": f"{chapter.stem}-{len(cells)}", "schema_version": 3}}
        cells.append(cell)
    nb = {**nb, "cells": cells}
    rel = f"student/{chapter.name}"
    nb["cells"][0] = {**nb["cells"][0], "source": release.badge(tag, rel)}
    return nb


def chapters() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def render(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(check: bool) -> int:
    from lnlib import __version__

    tag = f"v{__version__}"
    stale = []
    STUDENT.mkdir(exist_ok=True)
    for chapter in chapters():
        text = render(student_notebook(chapter, tag))
        target = STUDENT / chapter.name
        if check:
            if not target.is_file() or target.read_text() != text:
                stale.append(target.name)
        else:
            target.write_text(text)
    if stale:
        print(f"student editions out of date: {', '.join(stale)}; run make student")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main("--check" in sys.argv))
