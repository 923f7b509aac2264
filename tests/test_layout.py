"""The library's modules import only down the data's path: the graph of `lnlib` imports has no cycle."""

import ast
from pathlib import Path

LNLIB = Path(__file__).resolve().parents[1] / "lnlib"


def _imports() -> dict[str, set[str]]:
    modules = {p.stem: p for p in LNLIB.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "lnlib":
                deps |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lnlib."):
                deps.add(node.module.split(".")[1])
        graph[name] = deps - {name}
    return graph


def test_lnlib_imports_have_no_cycle():
    graph, state = _imports(), {}

    def visit(module, path):
        assert state.get(module) != "open", f"import cycle: {' -> '.join(path + [module])}"
        if state.get(module) == "done":
            return
        state[module] = "open"
        for dep in sorted(graph[module]):
            visit(dep, path + [module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
    assert "cli" in graph and "capture" in graph["cache"]
