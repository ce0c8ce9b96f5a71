"""The architecture as a contract: no import circles inside replicate/, read from the source with ast
(every import counts, those inside functions too: a lazy import closes a circle all the same)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "replicate"
# presets.py and convention.py import each other; branch `entry` breaks this circle (issue 16, item 5)
KNOWN_CIRCLES = [{"replicate.conventions.convention", "replicate.conventions.presets"}]


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of the package → the modules of the package it imports."""
    modules = {module_name(path, package): path for path in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1 packages
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            imported |= {target for target in targets if target in modules and target != name}
        graph[name] = imported
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_circle_finder_finds_a_circle_closed_by_a_lazy_import(tmp_path):
    package = tmp_path / "replicate"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from replicate.b import x\n")
    (package / "b.py").write_text("def x():\n    from replicate import c\n")
    (package / "c.py").write_text("import replicate.a\n")
    (package / "d.py").write_text("from . import a\n")
    graph = import_graph(package)
    assert graph["replicate.d"] == {"replicate", "replicate.a"}
    assert circles(graph) == [{"replicate.a", "replicate.b", "replicate.c"}]


def test_no_import_circles_in_replicate():
    unexpected = [sorted(circle) for circle in circles(import_graph()) if circle not in KNOWN_CIRCLES]
    assert not unexpected, f"import circles: {unexpected}"


@pytest.mark.parametrize("module", ["cli", "config"])
def test_the_entry_point_and_the_schema_stay_short(module):
    lines = len((PACKAGE / f"{module}.py").read_text().splitlines())
    assert lines <= 400, f"replicate/{module}.py has {lines} lines; the pipeline lives in replicate/replication.py"
