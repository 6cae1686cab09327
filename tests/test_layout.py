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


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    pending = [start]
    while pending:
        for target in graph[pending.pop()] - seen:
            seen.add(target)
            pending.append(target)
    return seen


def test_lower_layers_never_import_higher_ones_at_module_level() -> None:
    """The client side never loads the worker side; the broker loads neither (it is what both
    build on). Imports inside functions are left out, as above."""
    graph = import_graph()
    for name in graph:
        if name.startswith(("djqueue.client", "djqueue.broker")):
            above = ("djqueue.worker",) if name.startswith("djqueue.client") else (
                "djqueue.worker", "djqueue.client")
            loaded = sorted(t for t in _reachable(graph, name) if t.startswith(above))
            assert not loaded, f"{name} imports {', '.join(loaded)}"


# Vendor branches: only djqueue/broker/<vendor>.py (and the registry) depend on the database vendor.

#: Names Django gives database vendors (``connection.vendor``), registered or not.
VENDOR_NAMES = frozenset({"postgresql", "sqlite", "mysql", "oracle", "microsoft", "mariadb"})
#: Modules that only one vendor uses: its driver, or Django's backend for it.
VENDOR_IMPORTS = frozenset({
    "psycopg", "psycopg2", "psycopg_pool", "sqlite3", "MySQLdb", "pymysql", "mysql", "oracledb",
    "cx_Oracle", "django.db.backends.postgresql", "django.db.backends.sqlite3",
    "django.db.backends.mysql", "django.db.backends.oracle",
})


def registered_vendors() -> dict[str, str]:
    """``VENDORS`` of djqueue/broker/__init__.py (the registry), read from its source."""
    tree = ast.parse((PACKAGE / "broker" / "__init__.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id == "VENDORS" and node.value is not None):
            return ast.literal_eval(node.value)
    raise AssertionError("no VENDORS in djqueue/broker/__init__.py")


def _names_a_vendor(node: ast.AST) -> bool:
    """``x.vendor``, ``vendor``, a vendor's name, or a tuple/list/set of vendor names."""
    if isinstance(node, ast.Attribute):
        return node.attr == "vendor"
    if isinstance(node, ast.Name):
        return node.id == "vendor"
    if isinstance(node, ast.Constant):
        return node.value in VENDOR_NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_vendor(element) for element in node.elts)
    return False


def vendor_branches(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` of each place ``source`` depends on the database vendor: a comparison
    with ``.vendor`` or a vendor's name (``==``, ``!=``, ``in``…), a ``match`` on it, a dict
    keyed by vendor names (a dispatch table), an import of one vendor's driver or backend."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(
                map(_names_a_vendor, [node.left, *node.comparators])):
            found.append((node.lineno, "compares the vendor"))
        elif isinstance(node, ast.Match) and _names_a_vendor(node.subject):
            found.append((node.lineno, "matches on the vendor"))
        elif isinstance(node, ast.MatchValue) and _names_a_vendor(node.value):
            found.append((node.lineno, "matches a vendor's name"))
        elif isinstance(node, ast.Dict) and any(
                key is not None and _names_a_vendor(key) for key in node.keys):
            found.append((node.lineno, "a dict keyed by vendor"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if not node.level else [])
            for module in modules:
                if any(module == m or module.startswith(m + ".") for m in VENDOR_IMPORTS):
                    found.append((node.lineno, f"imports {module}"))
    return sorted(found)


def test_the_vendor_scan_finds_branches() -> None:
    source = (
        "import psycopg\n"
        "if connection.vendor == 'postgresql': pass\n"
        "postgres = connections[using].vendor != 'postgresql'\n"
        "ok = vendor(using) in ('sqlite', 'postgresql')\n"
        "kind = name\nif kind == 'sqlite': pass\n"
        "if connection.vendor not in SUPPORTED: pass\n"
        "SQL = {'postgresql': 'now()', 'sqlite': '%s'}\n"
        "match connection.vendor:\n    case 'mysql': pass\n"
        "print(f'{connection.vendor} is fine to show')\n"
        "from django.db.backends.sqlite3.base import DatabaseWrapper\n"
    )
    assert [line for line, _ in vendor_branches(source)] == [1, 2, 3, 4, 6, 7, 8, 9, 10, 12]


def test_vendor_branches_live_only_in_the_vendor_modules() -> None:
    """Adding a vendor means adding djqueue/broker/<vendor>.py and registering it in
    djqueue/broker/__init__.py: nothing else in djqueue depends on the database vendor.

    Migrations are exempt: they are history, written once and never changed, and must not import
    code that may change after them. 0002 tunes PostgreSQL's autovacuum and 0003 sets PostgreSQL
    column collations (``COLLATE "C"``), which only PostgreSQL has, and 0008 gives MySQL its
    character set, collations and indexes, so each tests the vendor.
    """
    vendors = registered_vendors()
    allowed = {PACKAGE / "broker" / "__init__.py"}
    for vendor, path in vendors.items():
        module = path.rpartition(".")[0]
        assert module == f"djqueue.broker.{vendor}", f"{vendor}'s operations are not in broker/{vendor}.py"
        assert (PACKAGE / "broker" / f"{vendor}.py").exists()
        allowed.add(PACKAGE / "broker" / f"{vendor}.py")
    branches = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in allowed and "migrations" not in path.relative_to(PACKAGE).parts
        for line, what in vendor_branches(path.read_text())
    ]
    assert not branches, "vendor branches outside djqueue/broker/<vendor>.py:\n" + "\n".join(branches)


def test_no_module_grows_past_about_400_lines() -> None:
    """A module past ~400 lines is split along a seam (the brief's rule); migrations excepted."""
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if "migrations" not in p.parts and (n := len(p.read_text().splitlines())) > 420}
    assert not long, long
