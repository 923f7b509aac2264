"""Execute the book's chapters one at a time, saying which is running and how long each took, and record their
minutes and model work (tokens) for the instructor page and the chapters' Compute tables.

Chapters are executed into the same jupyter-cache that `jupyter-book build` reads (execute_notebooks: cache), so
the book build that follows re-executes nothing; a chapter whose code did not change since its last execution is
not run again; the first chapter that fails stops the build. Usage: python tools/build_book.py
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.executors.utils import single_nb_execution

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lnlib import book, profiles, store  # noqa: E402

CACHE = ROOT / "_build" / ".jupyter_cache"
GENERATED = ROOT / "book" / "generated" / "compute.md"


def chapters() -> list[Path]:
    """The notebooks of the table of contents, in its order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").is_file()]


def executed(path: Path, cache) -> nbformat.NotebookNode | None:
    """The chapter at `path` as executed in `cache`, or None when its current code was never executed."""
    try:
        return cache.merge_match_into_notebook(nbformat.read(path, as_version=4))[1]
    except KeyError:
        return None


def execute(path: Path, cache, timeout: int) -> dict | None:
    """Execute one chapter into the cache; its minutes and tokens, or None when it was cached already."""
    notebook = nbformat.read(path, as_version=4)
    try:
        cache.match_cache_notebook(notebook)
        return None
    except KeyError:
        pass
    print(f"[book] {path.stem}: executing ...", flush=True)
    record = cache.add_nb_to_project(str(path))
    with tempfile.TemporaryDirectory() as scratch:
        tokens_file = Path(scratch) / "work.json"
        os.environ["LNLIB_RECORD"] = str(tokens_file)
        result = single_nb_execution(notebook, cwd=str(path.parent), allow_errors=False, timeout=timeout,
                                     meta_override=True, record_timing=True)
        del os.environ["LNLIB_RECORD"]
        tokens = json.loads(tokens_file.read_text()) if tokens_file.is_file() else {"forward": 0, "train": 0}
    if result.err is not None:
        print(f"[book] {path.stem}: FAILED after {result.time / 60:.1f} minutes (the error follows)", flush=True)
        raise SystemExit(f"{path.name} failed:\n{result.exc_string}")
    slowest = slowest_cells(notebook)
    for cell in notebook.cells:  # the cache's key covers cell metadata: timing left in would never match again
        cell.get("metadata", {}).pop("execution", None)
    cache.cache_notebook_bundle(CacheBundleIn(notebook, record.uri, data={"execution_seconds": result.time}),
                                check_validity=False, overwrite=True)
    return {"minutes": round(result.time / 60, 2), **tokens, "date": datetime.date.today().isoformat(),
            "slowest": slowest}


def slowest_cells(notebook: nbformat.NotebookNode, n: int = 3) -> list[tuple[int, float]]:
    """The `n` code cells that took longest, as (cell number, seconds), from the timing nbclient records."""
    seconds = []
    for number, cell in enumerate(notebook.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            began, ended = (datetime.datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                            for k in ("iopub.execute_input", "shell.execute_reply"))
            seconds.append((number, (ended - began).total_seconds()))
    return sorted(seconds, key=lambda item: -item[1])[:n]


def compute_page(records: dict, profile: str) -> str:
    """The instructor page's table: per chapter, minutes and model work of the latest build on `profile`."""
    lines = ["| chapter | minutes | forward tokens | training tokens | measured |", "|---|---|---|---|---|"]
    total = {"minutes": 0.0, "forward": 0, "train": 0}
    for path in chapters():
        r = records.get(path.stem, {}).get(profile)
        if r is None:
            lines.append(f"| {{doc}}`/notebooks/{path.stem}` | – | – | – | not yet |")
            continue
        lines.append(f"| {{doc}}`/notebooks/{path.stem}` | {r['minutes']:.1f} | {r['forward']:,} | {r['train']:,} | "
                     f"{r['date']} |")
        for key in total:
            total[key] += r[key]
    lines.append(f"| all chapters | {total['minutes']:.1f} | {total['forward']:,} | {total['train']:,} | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    profile = profiles.detect_profile()
    cache = get_cache(str(CACHE))
    records = book.records()
    start = time.perf_counter()
    for path in chapters():
        began = time.perf_counter()
        measured = execute(path, cache, timeout=1800)
        if measured is None:
            print(f"[book] {path.stem}: unchanged since its last execution (cached)", flush=True)
            continue
        slowest = measured.pop("slowest")
        records.setdefault(path.stem, {})[profile] = measured
        store.write_text(book.RECORDS, json.dumps(records, indent=1, sort_keys=True) + "\n")
        print(f"[book] {path.stem}: done in {(time.perf_counter() - began) / 60:.1f} minutes, "
              f"{measured['forward']:,} forward and {measured['train']:,} training tokens; slowest cells: "
              + ", ".join(f"{number} ({seconds / 60:.1f} min)" for number, seconds in slowest), flush=True)
    store.write_text(GENERATED, compute_page(records, profile))
    print(f"[book] all chapters executed or cached in {(time.perf_counter() - start) / 60:.1f} minutes", flush=True)


if __name__ == "__main__":
    main()
