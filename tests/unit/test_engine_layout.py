"""The engine's module structure: imports go one way (no cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

import chatbot.engine

ENGINE = Path(chatbot.engine.__file__).parent


def _engine_imports(path: Path) -> set[str]:
    """The chatbot.engine modules ``path`` imports anywhere (top level, in functions, or
    under TYPE_CHECKING)."""
    names = {p.stem for p in ENGINE.glob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "chatbot.engine":
            found |= {a.name for a in node.names if a.name in names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chatbot.engine."):
            found.add(node.module.split(".")[2])  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            found |= {
                a.name.split(".")[2] for a in node.names if a.name.startswith("chatbot.engine.")
            }
    return found - {path.stem, "__init__"}


def test_engine_modules_import_each_other_without_a_cycle() -> None:
    graph = {p.stem: _engine_imports(p) for p in ENGINE.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, f"import cycle: {' -> '.join([*path, name])}"
        if name in done:
            return
        for dep in sorted(graph.get(name, ())):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    # the layering this test keeps: CPU probes and the kernel at the bottom
    assert graph["formats"] == set() and graph["native"] <= {"formats"}
    assert "scheduler" not in graph["runner"] | graph["sampler"] | graph["model"]
