"""Check every internal link of the built book: each relative href/src in _build/html must point to a file
that exists, and each #fragment to an element id in that file. External links are not fetched.

Usage: python tools/check_links.py [_build/html]
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])


def _parse(path: Path) -> _Collector:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8", errors="replace"))
    return collector


def broken_links(root: Path) -> list[str]:
    pages = {path: _parse(path) for path in root.rglob("*.html") if "_static" not in path.parts}
    problems = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{page.relative_to(root)}: {link} -> missing file")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{page.relative_to(root)}: {link} -> no element with that id")
    return problems


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html").resolve()
    if not root.is_dir():
        print(f"no built book at {root}; run `make book` first")
        return 2
    problems = broken_links(root)
    for problem in problems:
        print(problem)
    print(f"internal links: {len(problems)} broken in {root}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
