"""Compare the numbers that two builds of the book show: python tools/compare_builds.py OLD NEW

OLD and NEW are checkouts in which `make book` ran (each reads its own notebooks and `_build/.jupyter_cache`). For
every chapter, what the book shows as text (the computed sentences, printed tables and lines; not figures or
warnings) is split into lines; the lines of the two builds are matched by their wording with the numbers taken
out, and every number that differs is listed. What says where or when a build ran is left out (the set-up line,
the Compute table; temporary folders are masked); numbers of seconds or minutes are listed apart as timings,
which always move. The exit status is 1 when a number moved or a line is in one build only, so a refactoring can
be checked with it.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_cache import get_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_book import executed  # noqa: E402

NUMBER = re.compile(r"(?<![\w.])[-−]?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?")
TIMING = re.compile(r"\s*(s|seconds?|minutes?)\b")
WHERE = re.compile(r"^lnlib \d+\.\d+")  # the set-up line: versions, device, cache folder
COMPUTE_TABLE = re.compile(r"\(estimate\)|\(measured \d{4}-\d\d-\d\d\)")  # a table of the build's own minutes
TEMPORARY = re.compile(re.escape(tempfile.gettempdir()) + r"/[^/\s]+")


def shown_lines(nb) -> list[str]:
    """The non-empty text lines a reader sees in the outputs of an executed notebook, in order."""
    lines = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out["text"] if out.get("name") == "stdout" else ""
            else:
                data = out.get("data", {})
                text = data.get("text/markdown") or data.get("text/plain") or ""
            text = text if isinstance(text, str) else "".join(text)
            if COMPUTE_TABLE.search(text):
                continue
            lines += [TEMPORARY.sub("<temporary folder>", line.strip()) for line in text.splitlines()
                      if line.strip() and not WHERE.search(line)]
    return lines


def _value(number: str) -> float:
    return float(number.replace(",", "").replace("−", "-"))


@dataclass
class Comparison:
    """Per chapter: numbers compared, numbers that moved, timings, and lines found in one build only."""

    compared: int = 0
    moved: list[tuple[str, str, str, str]] = field(default_factory=list)  # chapter, line (new), old, new
    timings: list[tuple[str, str, str, str]] = field(default_factory=list)
    only_old: list[tuple[str, str]] = field(default_factory=list)
    only_new: list[tuple[str, str]] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not (self.moved or self.only_old or self.only_new)


def compare_lines(chapter: str, old: list[str], new: list[str], result: Comparison, rtol: float = 0.0) -> None:
    """Match `old` and `new` by wording (numbers masked) and add what differs to `result`."""
    def wording(line):
        return NUMBER.sub("#", line)
    matcher = difflib.SequenceMatcher(None, [wording(x) for x in old], [wording(x) for x in new], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            result.only_old += [(chapter, line) for line in old[i1:i2]]
            result.only_new += [(chapter, line) for line in new[j1:j2]]
            continue
        for a, b in zip(old[i1:i2], new[j1:j2], strict=True):
            for x, y in zip(NUMBER.finditer(a), NUMBER.finditer(b), strict=True):
                result.compared += 1
                if abs(_value(x.group()) - _value(y.group())) <= rtol * abs(_value(x.group())):
                    continue
                kind = result.timings if TIMING.match(b, y.end()) else result.moved
                kind.append((chapter, b, x.group(), y.group()))


def executed_chapters(root: Path) -> dict[str, nbformat.NotebookNode]:
    """The chapters of the checkout `root` as executed in its book cache (chapters never executed are left out)."""
    folder = root / "_build" / ".jupyter_cache"
    if not folder.is_dir():
        raise SystemExit(f"{root} has no book cache ({folder}): run `make book` there first")
    cache = get_cache(str(folder))
    chapters = {}
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = executed(path, cache)
        if nb is None:
            print(f"{root.name}: {path.stem} was not executed in this build; left out", file=sys.stderr)
        else:
            chapters[path.stem] = nb
    return chapters


def compare_builds(old_root: Path, new_root: Path, rtol: float = 0.0) -> Comparison:
    old, new = executed_chapters(old_root), executed_chapters(new_root)
    result = Comparison()
    for chapter in sorted(old.keys() | new.keys()):
        compare_lines(chapter, shown_lines(old[chapter]) if chapter in old else [],
                      shown_lines(new[chapter]) if chapter in new else [], result, rtol)
    return result


def _short(line: str, width: int = 110) -> str:
    line = line.replace("|", "\\|")
    return line if len(line) <= width else line[:width - 1] + "…"


def report(result: Comparison) -> str:
    out = [f"{result.compared:,} numbers compared: {len(result.moved)} moved, {len(result.timings)} timings moved; "
           f"{len(result.only_old)} lines only in the old build, {len(result.only_new)} only in the new one."]
    for title, rows in (("Moved", result.moved), ("Timings (expected to move)", result.timings)):
        if rows:
            out += ["", f"## {title}", "", "| chapter | line (new build) | old | new |", "|---|---|---|---|"]
            out += [f"| {c} | {_short(line)} | {a} | {b} |" for c, line, a, b in rows]
    for title, rows in (("Only in the old build", result.only_old), ("Only in the new build", result.only_new)):
        if rows:
            out += ["", f"## {title}", ""] + [f"- {c}: {_short(line)}" for c, line in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="checkout of the build to compare against")
    parser.add_argument("new", type=Path, help="checkout of the new build")
    parser.add_argument("--rtol", type=float, default=0.0,
                        help="relative difference under which two printed numbers count as equal (default 0)")
    args = parser.parse_args(argv)
    result = compare_builds(args.old.resolve(), args.new.resolve(), args.rtol)
    print(report(result))
    return 0 if result.same else 1


if __name__ == "__main__":
    raise SystemExit(main())
