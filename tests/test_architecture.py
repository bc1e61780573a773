"""The import rule of docs/architecture.md, checked on the source: layers only look down.

- no import cycle among the modules of ``aiodimse/`` (module-level imports, including
  ``TYPE_CHECKING`` blocks: a cycle hidden there is still a cycle);
- no import of an aiodimse module inside a function, unless a comment right above it
  says why;
- a module imports only from its own layer or the layers below it, the SCU and SCP sides
  never import each other, and the sans-I/O core never imports asyncio or socket;
- no ``_private`` name is imported from another module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aiodimse"

#: Bottom to top, as in docs/architecture.md. A module belongs to the first layer that
#: names it or a package above it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("enums", "config", "errors", "uids", "pdu", "ul", "dimse")),
    ("files", ("dicomfile", "completeness", "query", "contexts", "tls")),
    ("transport", ("transport",)),
    ("types", ("requests", "results", "sinks")),
    ("services", ("scu", "scp")),
    ("association", ("association",)),
    ("servers", ("server",)),
    ("products", ("archive", "jobs", "fuzz", "testing", "demo")),
    ("cli", ("cli", "__main__")),
)
#: The sans-I/O core: fed bytes, returns events; it knows no event loop and no socket.
PURE = ("enums", "errors", "pdu", "ul", "dimse")
NETWORK_MODULES = {"asyncio", "socket", "selectors", "ssl"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. "scu.services"
    target: str  # imported aiodimse module, e.g. "transport.exchange"
    names: tuple[str, ...]
    line: int
    in_function: bool
    explained: bool


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if module else []
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *(name.split(".") if name else [])])


def _imports(module: str, path: Path) -> Iterator[Import]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    is_package = path.name == "__init__.py"
    functions: list[tuple[int, int]] = [
        (node.lineno, node.end_lineno or node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]

    def explained(line: int) -> bool:
        above = lines[line - 2].strip() if line >= 2 else ""
        return above.startswith("#") or "#" in lines[line - 1]

    for node in ast.walk(tree):
        targets: list[tuple[str, tuple[str, ...]]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("aiodimse"):
                    continue
                base = (node.module or "").removeprefix("aiodimse").lstrip(".")
            else:
                base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                if sub in MODULES:
                    targets.append((sub, ()))
                else:
                    targets.append((base, (alias.name,)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("aiodimse."):
                    targets.append((alias.name.removeprefix("aiodimse."), ()))
        for target, names in targets:
            inside = any(a <= node.lineno <= b for a, b in functions)
            yield Import(module, target, names, node.lineno, inside, explained(node.lineno))


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def _layer(module: str) -> int:
    head = module.split(".")[0]
    for index, (_, members) in enumerate(LAYERS):
        if module in members or head in members:
            return index
    raise AssertionError(f"aiodimse.{module} is in no layer of tests/test_architecture.py")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _edges(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.in_function or imp.source == "" or imp.target == "":
            continue  # the package's __init__ re-exports everything: it is the public face
        edges.setdefault(imp.source, set()).add(imp.target)
    return edges


def test_the_checker_sees_the_package() -> None:
    assert {"transport.link", "scu.services", "scp.provider", "association"} <= set(MODULES)
    assert any(i.source == "association" and i.target == "transport.link" for i in IMPORTS)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert _cycles(_edges(IMPORTS)) == []


def test_no_unexplained_imports_inside_functions() -> None:
    hidden = [
        f"aiodimse/{MODULES[i.source].relative_to(PACKAGE)}:{i.line} imports {i.target}"
        for i in IMPORTS
        if i.in_function and not i.explained
    ]
    assert hidden == []


def test_layers_only_look_down() -> None:
    upward = [
        f"{i.source} ({LAYERS[_layer(i.source)][0]}) imports {i.target}"
        f" ({LAYERS[_layer(i.target)][0]})"
        for i in IMPORTS
        if i.source and i.target and _layer(i.target) > _layer(i.source)
    ]
    assert upward == []


@pytest.mark.parametrize(("side", "other"), [("scu", "scp"), ("scp", "scu")])
def test_the_scu_and_scp_sides_stand_apart(side: str, other: str) -> None:
    crossing = [
        f"{i.source} imports {i.target}"
        for i in IMPORTS
        if i.source.split(".")[0] == side and i.target.split(".")[0] == other
    ]
    assert crossing == []


def test_the_core_does_no_io() -> None:
    found = []
    for module, path in MODULES.items():
        if module.split(".")[0] not in PURE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            found += [f"{module} imports {n}" for n in names if n in NETWORK_MODULES]
    assert found == []


def test_no_private_names_cross_modules() -> None:
    private = [
        f"{i.source} imports {name} from {i.target}"
        for i in IMPORTS
        for name in i.names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert private == []
