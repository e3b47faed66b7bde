"""No import circles among the project's own modules: the shared layer, the local Factory,
the client and the operators' tool. An import inside a function counts (it runs too); one
under `if TYPE_CHECKING:` does not (it never runs)."""

import ast
import graphlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "aifactory": REPO / "layers" / "common" / "aifactory",
    "aifactory_local": REPO / "local" / "aifactory_local",
    "aifactory_client": REPO / "client" / "aifactory_client",
    "aifactory_admin": REPO / "admin" / "aifactory_admin",
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """The project modules a module imports when it runs."""
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in modules:
                    targets.add(submodule)
                elif node.module in modules:
                    targets.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return targets


def test_the_project_modules_import_one_another_without_a_circle() -> None:
    modules = _modules()
    graph = {
        name: _imports(ast.parse(path.read_text(), str(path)), modules) - {name}
        for name, path in modules.items()
    }
    # a package's __init__ imported by its own modules is not a circle worth reporting
    for name, targets in graph.items():
        targets.difference_update(p for p in PACKAGES if name.startswith(p + "."))
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as circle:
        raise AssertionError(f"import circle: {' -> '.join(circle.args[1])}") from None
