"""The package's floors and cohesion rules (docs/architecture.md, "What CI enforces"), checked on every run.

A module may import its own package and any lower floor, never a higher one, at module level or
inside a function: a function-level import that reaches up is the same dependency, only hidden.
The imports are read from the source with ``ast`` (nothing is run; only the test of hub's moved
paths imports them), so the check is fast and
sees every import, including those under ``if TYPE_CHECKING:`` (annotations are dependencies too).

Cohesion: no ``_private`` name is imported from another module; no import cycle between modules
(module level or in functions; the documented ports aside); a public module exports (``__all__``)
only names it defines, a package's ``__init__`` only names of its own package, plus the documented
ports of old paths (``REEXPORT_PORTS``). Size is a warning with stated exceptions, not a rule.

``DEBT`` lists the upward imports that existed when the rule was introduced, with the issue that
removes them. The list can only shrink: an upward import not in it fails the suite, and so does an
entry that no longer exists (delete it when you pay it off).
"""

from __future__ import annotations

import ast
import functools
import importlib
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import pytest

from pspnet_lib.hub import MOVED_MODULES

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


@functools.cache
def _module_path(module: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every node of ``path``'s syntax tree (parsed once per run)."""
    return tuple(ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))))


def _import_nodes(path: Path) -> list[ast.Import | ast.ImportFrom]:
    return [node for node in _nodes(path) if isinstance(node, (ast.Import, ast.ImportFrom))]


def _import_target(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module name of ``from <module> import ...`` in ``path`` (relative imports resolved)."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if not node.level:
        return node.module or ""
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path) -> set[str]:
    """Every ``pspnet_lib`` module or package ``path`` imports, resolved to absolute names."""
    found: set[str] = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.ImportFrom):
            target = _import_target(node, path)
            if target.split(".")[0] == "pspnet_lib":
                found.add(target)
        else:
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


#: Modules that are pure data tables (one row per checkpoint / dataset): no size warning.
DATA_TABLES = {"hub/zoo/table.py", "hub/zoo/_stats.py", "data/metadata.py"}
#: Size is a hint, not a rule (docs/architecture.md, "What CI enforces"): a module past this many
#: lines is reported as a warning, since a file is split where it is loose, not where it is long.
SOFT_MODULE_LINES = 420
#: Modules over the soft limit on purpose: one concern each, kept whole (stated exceptions).
LARGE_BY_DESIGN = {
    # the loader's middle: Resolved, the checks every source passes, the readers of local files
    # (the pieces call each other; split, they imported 10 private names from each other)
    "hub/checkpoint_files.py",
    # the builder: load_pretrained, PSPNet.from_pretrained's model, backbone weights (one
    # _build_and_load under all three)
    "hub/loading.py",
    # the one reader of pictures and what users call an image, as a tensor: the tensor path reads
    # files through the reader (split in two, the halves imported each other)
    "core/images.py",
}


def test_module_size_is_a_warning_with_stated_exceptions():
    sizes = {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    big = {name: n for name, n in sizes.items() if n > SOFT_MODULE_LINES and name not in DATA_TABLES | LARGE_BY_DESIGN}
    if big:
        warnings.warn(
            f"modules over {SOFT_MODULE_LINES} lines (a hint: split by concern if one holds two): {big}", stacklevel=1
        )
    stale = (DATA_TABLES | LARGE_BY_DESIGN) - set(sizes)
    assert not stale, f"stale DATA_TABLES / LARGE_BY_DESIGN entries in tests/test_architecture.py: {stale}"


# --- cohesion: private names, cycles between modules, one public place per name ------------------


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _resolved_imports(path: Path):
    """``(node, target module, imported name or None)`` for every ``pspnet_lib`` import in ``path``.

    ``from X import n`` where ``X.n`` is a module is reported as an import of the module ``X.n``.
    """
    for node in _import_nodes(path):
        if isinstance(node, ast.ImportFrom):
            target = _import_target(node, path)
            if target.split(".")[0] != "pspnet_lib":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if _module_path(sub) is not None:
                    yield node, sub, None
                else:
                    yield node, target, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pspnet_lib":
                    yield node, alias.name, None


def _internal_owner(module: str) -> str | None:
    """The package a ``_``-module is internal to (its parent), or None for a public module."""
    parts = module.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if _is_private(part):
            return ".".join(parts[:i])
    return None


def private_imports() -> list[str]:
    """Imports of a ``_private`` name of another module, and of a ``_``-module from outside its package.

    The rule (docs/architecture.md, "What CI enforces"): a name whose first character is ``_``
    (not a dunder) belongs to the module that defines it; no other module imports it, at module
    level or in a function, and no other module reads it as ``module._name`` of an imported
    module. A module whose own name starts with ``_`` (``core/_values.py``, ``hub/zoo/_stats.py``,
    ``pspnet_lib/_files.py``) is internal to the package that holds it: modules of that package
    (sub-packages included) import its public names freely; nothing outside it imports it.
    """
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        modules_bound: set[str] = set()
        for node, target, name in _resolved_imports(path):
            where = f"{module} (line {node.lineno})"
            if name is not None and _is_private(name) and target != module:
                found.append(f"{where} imports {name} from {target}")
            owner = _internal_owner(target)
            if owner is not None and not (module == owner or module.startswith(owner + ".")):
                found.append(f"{where} imports {target}, internal to {owner}")
            if name is None and isinstance(node, ast.ImportFrom):
                modules_bound.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Import):
                modules_bound.update(a.asname for a in node.names if a.asname)
        for node in _nodes(path):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules_bound
                and _is_private(node.attr)
            ):
                found.append(f"{module} (line {node.lineno}) reads {node.value.id}.{node.attr}")
    return found


def test_no_private_name_imported_from_another_module():
    found = private_imports()
    assert not found, (
        "private names used outside their module (give them a public name in an internal module, or move "
        "the code to where it is used; docs/architecture.md): " + "; ".join(found)
    )


def module_graph() -> dict[str, set[str]]:
    """Module -> the ``pspnet_lib`` modules it imports (module level, in functions, under TYPE_CHECKING).

    ``from package import name`` is an edge to the package's ``__init__``; the parent packages a
    module import initialises implicitly are not edges. The documented ports are left out.
    """
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        graph[module] = {
            target
            for _, target, _ in _resolved_imports(path)
            if target != module and (module, target) not in PORTS and _module_path(target) is not None
        }
    return graph


def test_no_import_cycles_between_modules():
    # A cycle hidden by a function-level import is still a cycle: the two modules are one concern
    # (merge them) or share a third (move it out).
    cycles = _cycles(module_graph())
    assert not cycles, f"import cycles between modules of pspnet_lib: {cycles}"


#: Documented ports of names (docs/architecture.md, "The ports"): the old paths users import,
#: kept as re-exports (the moved hub modules' flat paths are aliases: ``MOVED_MODULES`` in
#: pspnet_lib/hub/__init__.py, tested below). A public module lists in ``__all__`` only names it defines, a package's ``__init__`` only names
#: of its own package (``pspnet_lib/__init__.py``: the public API, all of them), and these.
REEXPORT_PORTS: dict[str, set[str]] = {
    # the checkpoint reader's 0.1 module (docs/training.md): hub/formats/checkpoint_reader.py now
    "pspnet_lib.hub.formats.serialization": {
        "CheckpointError",
        "InertObject",
        "OpenMMLabPlaceholder",
        "read_checkpoint",
        "pickle_globals",
        "read_safetensors",
    },
    # the dataset metadata's 0.1 path (tests, docs/weights.md's register_weights example)
    # (DATASET_INFO: the 0.2 name hub.DATASETS, deprecated, points users to it)
    "pspnet_lib.hub": {"DATASET_INFO", "DatasetInfo", "get_dataset_info"},
    # the dataset tables' 0.2 path (docs/datasets.md): their records live in data/registry.py
    "pspnet_lib.data.datasets": {"DATASETS", "DEFAULT_SPLITS", "ZOO_DATASETS"},
    # the normalisation constants' 0.1 path (benchmarks/data_pipeline.py)
    "pspnet_lib.data": {"IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD"},
    # core.images is the one reader: its decoding step's names are read through it
    "pspnet_lib.core.images": {"pil_to_rgb", "pil_to_array"},
    # 0.1 paths named by docs/architecture.md: inference.images -> core.images, ...
    "pspnet_lib.inference.images": {
        "load_image",
        "read_image",
        "pil_to_rgb",
        "pil_to_array",
        "to_rgb_tensor",
        "to_image_tensor",
        "is_image_batch",
        "IMAGE_EXTENSIONS",
        "ACCEPTED_INPUTS",
    },
    "pspnet_lib.inference.visualize": {"colorize", "default_palette"},  # -> core.palette
    "pspnet_lib.inference.modes": {"rescale_size", "MODES"},  # -> core.geometry
    "pspnet_lib.runtime": {"agreement_stats"},  # -> core.agreement
    # the export module's names before export_wrapper.py held them (tests, users' export code)
    "pspnet_lib.inference.export": {"ExportWrapper", "OUTPUTS"},
    # the int8 workflow's one import (docs/export.md, docs/performance.md)
    "pspnet_lib.inference.quantize": {"calibration_files", "calibration_images", "check_int8_onnx", "load_onnx_runner"},
    # the settings' 0.1 paths: engine.config (SettingError, docs/architecture.md), engine.trainer
    # (examples/finetune_folder.py imports TrainConfig from it), models.pspnet (PSPNetConfig)
    "pspnet_lib.engine.config": {"SettingError"},
    "pspnet_lib.engine.trainer": {
        "TrainConfig",
        "NonFiniteLossError",
        "AMP_MODES",
        "SettingError",
        "set_seed",
        "usable_workers",
    },
    "pspnet_lib.models.pspnet": {"PSPNetConfig", "PRESETS", "BACKBONES"},
}


@functools.cache
def _exports(path: Path) -> tuple[list[str], dict[str, str]]:
    """``(__all__, {name imported at module level: the module it comes from})`` of ``path``."""
    exported: list[str] = []
    imported: dict[str, str] = {}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = [*tree.body, *(n for block in tree.body if isinstance(block, (ast.If, ast.Try)) for n in block.body)]
    for node in top:
        if isinstance(node, ast.ImportFrom):
            imported.update({alias.asname or alias.name: _import_target(node, path) for alias in node.names})
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            exported = list(ast.literal_eval(node.value))
    if "__all__" in imported:  # a module that re-exports another whole (``from .new import __all__``)
        exported = ["*"]
    return exported, imported


def reexports() -> list[str]:
    """Names a public module lists in ``__all__`` but defines elsewhere, outside the allowed cases.

    Allowed: a package's ``__init__`` re-exporting names defined inside that package (its front
    door; ``pspnet_lib/__init__.py`` is the front door of everything), and the documented ports
    in ``REEXPORT_PORTS``.
    """
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if _internal_owner(module) is not None:
            continue
        exported, imported = _exports(path)
        if exported == ["*"]:
            found.append(f"{module} re-exports a whole module")
            continue
        front_door = path.name == "__init__.py"
        for name in exported:
            source = imported.get(name)
            if source is None or not source.startswith("pspnet_lib") or name in REEXPORT_PORTS.get(module, ()):
                continue
            if not (front_door and (module == "pspnet_lib" or source.startswith(module + "."))):
                found.append(f"{module} exports {name} of {source}")
    return found


def test_each_name_is_exported_from_one_public_place():
    found = reexports()
    assert not found, (
        "names exported (__all__) by a module other than the one that defines them: import them from their "
        "module, or list an old path users import in REEXPORT_PORTS with docs/architecture.md: " + "; ".join(found)
    )


def test_reexport_ports_are_current():
    stale = []
    for module, names in sorted(REEXPORT_PORTS.items()):
        path = _module_path(module)
        exported = _exports(path)[0] if path is not None else []
        stale += [f"{module}.{name}" for name in sorted(names) if name not in exported]
    assert not stale, f"stale REEXPORT_PORTS entries in tests/test_architecture.py (no longer exported): {stale}"


#: hub/'s wings (docs/architecture.md, "The hub in wings"): a wing imports only the wings listed
#: for it, never the loader or the front doors on top of hub/.
HUB_WINGS: dict[str, set[str]] = {
    "pspnet_lib.hub.zoo": set(),
    "pspnet_lib.hub.formats": set(),
    "pspnet_lib.hub.cache": {"pspnet_lib.hub.zoo", "pspnet_lib.hub.formats"},
}


def test_hub_wings_import_down():
    wrong = []
    for module, targets in import_graph().items():
        wing = next((w for w in HUB_WINGS if module == w or module.startswith(w + ".")), None)
        if wing is None:
            continue
        for target in targets:
            if not target.startswith("pspnet_lib.hub") or target == wing or target.startswith(wing + "."):
                continue
            if not any(target == w or target.startswith(w + ".") for w in HUB_WINGS[wing]):
                wrong.append(f"{module} imports {target}")
    assert not wrong, f"a hub wing reaches up or sideways (docs/architecture.md): {wrong}"


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_moved_hub_modules_import_from_their_old_paths(old):
    # hub/'s flat 0.1 paths: no file (git follows the moves), the moved module itself, a warning.
    new = MOVED_MODULES[old]
    assert _module_path(old) is None, f"{old} is an alias of {new}: it has no file of its own"
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new
