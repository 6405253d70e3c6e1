"""The package's floors (docs/architecture.md), checked on every run.

A module may import its own package and any lower floor, never a higher one, at module level or
inside a function: a function-level import that reaches up is the same dependency, only hidden.
The imports are read from the source with ``ast`` (nothing is imported), so the check is fast and
sees every import, including those under ``if TYPE_CHECKING:`` (annotations are dependencies too).

``DEBT`` lists the upward imports that existed when the rule was introduced, with the issue that
removes them. The list can only shrink: an upward import not in it fails the suite, and so does an
entry that no longer exists (delete it when you pay it off).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pspnet_lib"

#: Floor of each top-level part of the package: a module may import equal or lower floors only.
FLOORS: dict[str, int] = {
    "_version": 0,
    "_files": 0,
    "_progress": 0,
    "_testing": 0,
    "core": 0,
    "assets": 0,
    "models": 1,
    "data": 2,
    "hub": 3,
    "inference": 4,
    "runtime": 4,
    "recipes": 5,
    "engine": 5,
    "demo": 6,
    "cli": 7,
    "__main__": 8,
    "": 9,  # pspnet_lib/__init__.py: the public API re-exports everything
}

#: Documented ports (docs/architecture.md): the model's two user-facing entry points that are
#: served by higher floors, reached through a function-level import at call time.
PORTS: set[tuple[str, str]] = {
    # model.predict(images): the prediction API (pspnet_lib.predict) served on the model.
    ("pspnet_lib.models.pspnet", "pspnet_lib.inference.predict"),
    # PyTorchModelHubMixin hooks _save_pretrained / _from_pretrained: the Hub files format.
    ("pspnet_lib.models.pspnet", "pspnet_lib.hub.hf"),
    # model.generate_model_card(): the mixin's model card, written by the hub.
    ("pspnet_lib.models.pspnet", "pspnet_lib.hub.model_card"),
    # build_pspnet(weights=...): torchvision-style builder loading zoo/Hub weights.
    ("pspnet_lib.models.pspnet", "pspnet_lib.hub.entrypoints"),
    # build_pspnet(weights_backbone=...): ImageNet backbone weights read by the hub's loader.
    ("pspnet_lib.models.pspnet", "pspnet_lib.hub.loading"),
}

#: Upward imports that existed when the rule was introduced (issue 11 removes them). Empty:
#: the last ones (data/hub -> inference/engine, inference -> engine) moved to core/ or went
#: with engine/model_io.py; keep it empty.
DEBT: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``pspnet_lib`` module or package ``path`` imports, resolved to absolute names."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "pspnet_lib":
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "pspnet_lib")
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def upward_imports() -> set[tuple[str, str]]:
    out = set()
    for module, targets in import_graph().items():
        for target in targets:
            low, high = _part(module), _part(target)
            if low not in FLOORS or high not in FLOORS:
                continue  # reported by test_every_part_has_a_floor
            if FLOORS[high] > FLOORS[low]:
                out.add((module, target))
    return out


def test_every_part_has_a_floor():
    parts = {_part(m) for m in import_graph()}
    missing = sorted(p for p in parts if p not in FLOORS)
    assert not missing, f"give these parts of pspnet_lib a floor in tests/test_architecture.py FLOORS: {missing}"


def test_no_new_upward_imports():
    new = sorted(upward_imports() - PORTS - DEBT)
    assert not new, (
        "these imports reach a higher floor (see docs/architecture.md): "
        + "; ".join(f"{a} imports {b}" for a, b in new)
        + ". Move the shared code down a floor instead."
    )


def test_debt_list_is_current():
    paid = sorted(DEBT - upward_imports())
    assert not paid, f"these upward imports are gone: delete them from DEBT in tests/test_architecture.py: {paid}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_packages():
    # A package's __init__ re-exporting its own modules is not a cycle between floors; cycles
    # across parts of the package are.
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in import_graph().items():
        for target in targets:
            if _part(module) != _part(target) and (module, target) not in PORTS | DEBT:
                graph[_part(module)].add(_part(target))
        graph.setdefault(_part(module), set())
    cycles = _cycles(graph)
    assert not cycles, f"import cycles between parts of pspnet_lib: {cycles}"


@pytest.mark.parametrize("module,target", sorted(PORTS))
def test_ports_are_function_level(module, target):
    path = PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py")
    if not path.exists():
        path = path.with_suffix("") / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:  # module level only
        if isinstance(node, ast.ImportFrom) and target.endswith(node.module or ""):
            pytest.fail(f"{module} imports the port {target} at module level; import it inside the function")


#: Modules that are pure data tables (one row per checkpoint / dataset), exempt from the size rule.
DATA_TABLES = {"hub/zoo/table.py", "hub/zoo/_stats.py", "data/metadata.py"}
#: One concern per file: a module past this many lines holds more than one (docs/architecture.md).
MAX_MODULE_LINES = 420


def test_modules_stay_small():
    sizes = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    big = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES and name not in DATA_TABLES}
    assert not big, (
        f"split these modules by concern (at most {MAX_MODULE_LINES} lines, see docs/architecture.md): {big}"
    )
    assert DATA_TABLES <= set(sizes), f"stale DATA_TABLES entries: {DATA_TABLES - set(sizes)}"
