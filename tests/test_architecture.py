"""The layout keeps its promises: no import circle, and no lower layer importing an upper one.

The pipeline reads bottom-up: the Alma user-XML format and the errors at the ground floor,
then sources, checks and the store, the pass, the delta and delivery, the job, and the CLI on
top. Imports are read from the source (module level, outside ``if TYPE_CHECKING:``), so the
test needs nothing to be imported. The layers hold for imports inside functions too (deferred
until needed, to keep start-up cheap); only the circle test leaves those out, since deferring is
how an import that would close a circle is made safe.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "deltasync"

GROUND = {"deltasync.errors", "deltasync.userxml", "deltasync.safefiles", "deltasync.redact"}
"""Modules every layer may use; they use nothing of deltasync (but each other, for errors)."""

LAYERS: list[tuple[str, set[str]]] = [
    # (package or module, the deltasync modules and packages it must never import)
    ("deltasync.source", {"deltasync.store", "deltasync.scan", "deltasync.job", "deltasync.cli"}),
    ("deltasync.checks", {"deltasync.store", "deltasync.scan", "deltasync.job", "deltasync.cli"}),
    (
        "deltasync.store",
        {
            "deltasync.scan",
            "deltasync.ingest",
            "deltasync.job",
            "deltasync.ledger",
            "deltasync.delta",
            "deltasync.delivery",
            "deltasync.audit",
            "deltasync.cli",
        },
    ),
    (
        "deltasync.policy",
        {"deltasync.scan", "deltasync.ingest", "deltasync.job", "deltasync.delta", "deltasync.cli"},
    ),
    ("deltasync.scan", {"deltasync.ingest", "deltasync.job", "deltasync.delta", "deltasync.cli"}),
    ("deltasync.delta", {"deltasync.job", "deltasync.ingest", "deltasync.ledger", "deltasync.cli"}),
    (
        "deltasync.delivery",
        {"deltasync.store", "deltasync.job", "deltasync.ledger", "deltasync.cli"},
    ),
    ("deltasync.ingest", {"deltasync.job", "deltasync.ledger", "deltasync.cli"}),
    ("deltasync.audit", {"deltasync.job", "deltasync.cli"}),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(*, deferred: bool = False) -> dict[str, set[str]]:
    """Each deltasync module → the deltasync modules it imports at module level (``deferred``:
    also inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for node in _everywhere(body) if deferred else _top_level(body):
            if isinstance(node, ast.ImportFrom):
                base = _resolve(package, node.module, node.level)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in modules else base)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[name] = {m for m in found if m.startswith("deltasync") and m in modules} - {name}
    return graph


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    nodes: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Try):
            nodes += _top_level(node.body)
        nodes.append(node)
    return nodes


def _everywhere(body: list[ast.stmt]) -> list[ast.stmt]:
    nodes: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        nodes.append(node)
        nodes += _everywhere([n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)])
    return nodes


def _resolve(package: str, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = package.split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_there_is_no_import_circle() -> None:
    graph = _imports()
    state: dict[str, int] = {}
    path: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            # A package importing its own submodules to re-export them is not a circle.
            if _within(nxt, node):
                continue
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == []


def test_the_ground_floor_imports_nothing_above_it() -> None:
    graph = _imports(deferred=True)
    for module in GROUND:
        assert graph[module] <= GROUND, module


def test_no_layer_imports_one_above_it() -> None:
    graph = _imports(deferred=True)
    wrong = [
        (module, imported)
        for module, imported_set in graph.items()
        for layer, forbidden in LAYERS
        if _within(module, layer)
        for imported in imported_set
        if any(_within(imported, f) for f in forbidden)
    ]
    assert wrong == []


def test_only_the_cli_knows_click() -> None:
    users = [
        _module_name(p)
        for p in PACKAGE.rglob("*.py")
        if "import click" in p.read_text(encoding="utf-8")
        and not _within(_module_name(p), "deltasync.cli")
    ]
    assert users == []
