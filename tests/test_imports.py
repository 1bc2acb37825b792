"""The package's import graph has no circles, counting imports inside functions: read from the source, so an import
that runs only on some path (a CLI command, an optional extra) counts as much as one at the top of a module."""

import ast
from pathlib import Path

import digitcnn

PACKAGE = Path(digitcnn.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports anywhere in its body: `from . import x` names module x when there
    is one, else the package itself."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            source = ".".join(part for part in (base, node.module) if part)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in modules else source)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each module that is on one (depth-first search, in name order)."""
    found, state = [], {}  # state: "open" while on the current path, "done" after

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    assert "digitcnn.train" in graph["digitcnn.jobs"] and "digitcnn.distributed" in graph["digitcnn.train"]
    assert "digitcnn.serve" in graph["digitcnn.commands"]  # imported inside a function, counted all the same
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    circles = [" -> ".join(circle) for circle in cycles(import_graph())]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_every_name_a_module_imports_from_the_package_exists():
    """Each `from .x import name` resolves: importing every module (functions' imports too, read from the source)
    finds a name that moved to another module without its importers following."""
    import importlib.util

    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0]
                source = importlib.import_module(".".join(part for part in (base, node.module) if part))
                for alias in node.names:
                    if hasattr(source, alias.name):
                        continue
                    is_package = hasattr(source, "__path__")  # `from . import x` names a submodule x
                    if not is_package or importlib.util.find_spec(f"{source.__name__}.{alias.name}") is None:
                        missing.append(f"{name}: {alias.name} from {source.__name__}")
    assert not missing, "imports of names that are not there:\n" + "\n".join(missing)
