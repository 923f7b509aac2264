"""Releases: the notebooks install lnlib from a tag of this repository, and their badges open the notebook at the
same tag, so notebook and library never drift apart.

    python tools/release.py set 0.2.0     # version in pyproject and lnlib, the book's branch, every badge and set-up cell
    python tools/release.py check v0.2.0  # exit 1 unless all of them name this tag (CI runs it on a pushed v* tag)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO = "lnlib/language-neurons-book"
NOTEBOOK_FOLDERS = ("notebooks", "student")

SETUP = '''# Set-up, the same in every chapter: installs lnlib where it is missing (Colab, Kaggle, a bare Jupyter) at the
# release this notebook belongs to, and stops with a clear message when that fails.
import importlib.util
import subprocess
import sys

LNLIB = "lnlib @ git+https://github.com/{repo}@{tag}"
if importlib.util.find_spec("lnlib") is None:
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", LNLIB], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"installing lnlib failed:\\n{{done.stderr[-1500:]}}\\nInstall it with: pip install \\"{{LNLIB}}\\"")
    importlib.invalidate_caches()
try:
    import lnlib.book
except ImportError as error:
    raise RuntimeError(f"lnlib does not import ({{error}}); restart the kernel and run this cell again") from error
lnlib.book.start("{tag}")'''


def setup_cell(tag: str) -> str:
    return SETUP.format(repo=REPO, tag=tag)


def badge(tag: str, path: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{REPO}/blob/{tag}/{path})")


def notebooks() -> list[Path]:
    return sorted(p for folder in NOTEBOOK_FOLDERS for p in (ROOT / folder).glob("*.ipynb"))


def _rewrite(path: Path, tag: str) -> None:
    nb = json.loads(path.read_text())
    rel = path.relative_to(ROOT).as_posix()
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    nb["cells"][0]["source"] = badge(tag, rel)
    first_code["source"] = setup_cell(tag)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def set_version(version: str) -> None:
    tag = f"v{version}"
    for rel, pattern, new in (("pyproject.toml", r'^version = "[^"]+"', f'version = "{version}"'),
                              ("lnlib/__init__.py", r'^__version__ = "[^"]+"', f'__version__ = "{version}"'),
                              ("_config.yml", r"^  branch: .*$", f"  branch: {tag}")):
        path = ROOT / rel
        text, n = re.subn(pattern, new, path.read_text(), flags=re.M)
        if n != 1:
            raise SystemExit(f"{rel}: expected one line matching {pattern!r}")
        path.write_text(text)
    for path in notebooks():
        _rewrite(path, tag)


def problems(tag: str) -> list[str]:
    """What does not name `tag`: the package version, the book's branch, a badge or a set-up cell."""
    found = []
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    code_version = re.search(r'^__version__ = "([^"]+)"', (ROOT / "lnlib/__init__.py").read_text(), re.M).group(1)
    branch = re.search(r"^  branch: (.*)$", (ROOT / "_config.yml").read_text(), re.M).group(1).strip()
    for name, value in (("pyproject.toml version", f"v{version}"), ("lnlib.__version__", f"v{code_version}"),
                        ("_config.yml repository.branch", branch)):
        if value != tag:
            found.append(f"{name} is {value}, not {tag}")
    for path in notebooks():
        nb = json.loads(path.read_text())
        rel = path.relative_to(ROOT).as_posix()
        first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
        if "".join(nb["cells"][0]["source"]) != badge(tag, rel):
            found.append(f"{rel}: the badge does not open {rel} at {tag}")
        if "".join(first_code["source"]) != setup_cell(tag):
            found.append(f"{rel}: the set-up cell is not the release's set-up cell for {tag}")
    return found


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("set", "check"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "set":
        set_version(sys.argv[2].lstrip("v"))
    else:
        issues = problems(sys.argv[2])
        print("\n".join(issues) or f"everything names {sys.argv[2]}")
        raise SystemExit(1 if issues else 0)
