"""The package's shape: no import circles among djqueue's modules at module level, and the
client side never imports the worker side (docs/architecture.md). Read from the source with
``ast``: nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "djqueue"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: at module level, in ``try``/``if`` blocks
    there, but not under ``if TYPE_CHECKING:`` nor inside functions and classes' methods."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            pending.extend(node.orelse)
            if not _is_type_checking(node):
                pending.extend(node.body)
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.ClassDef):
            pending.extend(s for s in node.body if not isinstance(s, (ast.FunctionDef,
                                                                      ast.AsyncFunctionDef)))
    return found


def import_graph() -> dict[str, set[str]]:
    """djqueue module -> the djqueue modules it imports at module level."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _top_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                stem = node.module or ""
                base = (f"{base}.{stem}" if stem else base) if node.level else stem
                # ``from pkg import mod`` imports the module pkg.mod when there is one.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # Edges go to the module named, not to the packages above it: a package's
                # __init__ that imports a module which imports a sibling of its own (the admin
                # registering beat's admin, which builds on admin.base) is no circle of modules.
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles_at_module_level() -> None:
    graph = import_graph()
    assert len(graph) > 30 and any(graph.values())  # it did read the package
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def _all_imports(path: Path) -> list[tuple[ast.ImportFrom, bool]]:
    """Every ``from … import`` of a file, with whether it runs inside a function."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[ast.ImportFrom, bool]] = []

    def walk(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                found.append((child, inside))
            walk(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    walk(tree, False)
    return found


def _target(node: ast.ImportFrom, path: Path) -> str:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    if not node.level:
        return node.module or ""
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


#: The client side: what a web process imports to send tasks and read results.
CLIENT = ("djqueue/client/", "djqueue/result.py", "djqueue/canvas.py", "djqueue/decorators.py")


def test_the_client_side_never_imports_the_worker_side() -> None:
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE.parent))
        if not relative.startswith(CLIENT):
            continue
        for node, _ in _all_imports(path):
            target = _target(node, path)
            names = {target, *(f"{target}.{alias.name}" for alias in node.names)}
            if any(n == "djqueue.worker" or n.startswith("djqueue.worker.") for n in names):
                offending.append(f"{relative}:{node.lineno}")
    assert not offending, offending


def test_every_import_inside_a_function_says_why() -> None:
    """Imports of djqueue's own modules run at module level, except where Django's app loading
    needs them later; each of those says why in a comment just above it (or on its line)."""
    silent = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        lines = path.read_text().splitlines()
        for node, inside in _all_imports(path):
            if not inside or not _target(node, path).startswith("djqueue"):
                continue
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            if "#" not in lines[node.lineno - 1] and not above.startswith("#"):
                silent.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not silent, silent


def test_every_remote_control_command_has_a_handler_and_no_more() -> None:
    from djqueue.client.control import COMMANDS
    from djqueue.worker.control import HANDLERS

    assert set(HANDLERS) == COMMANDS
