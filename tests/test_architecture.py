"""The import rules of ``docs/architecture.md``, checked on the source (AST of every file, nothing imported).

Subpackages of the runtime, from the bottom up; each may import only the ones listed for it
(and itself). Imports under ``if TYPE_CHECKING:`` are annotations only and are not counted.

- ``core``: the contract shared with the trainer: numpy and the standard library only.
- ``io``: ``core``; h5py (NXcanSAS), matplotlib on demand (figures).
- ``model``: ``core``; the only subpackage that imports onnxruntime.
- ``plugins``: ``core``, ``model``; pluggy.
- front ends: ``cli`` (``core``, ``io``, ``model``, ``plugins``, and ``gui`` for ``sasview-bnn gui``),
  ``gui`` (``core``, ``io``, ``model``, ``plugins``; Qt and SasView), ``bluesky`` (``core``, ``io``,
  ``model``, ``plugins``).

Nothing outside ``model`` imports onnxruntime; nothing in the runtime imports torch or the trainer;
Qt and SasView only in ``gui``; no cycle between subpackages; plugins and scripts use the public API.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sasview_bnn_plugin"

#: subpackage (or top-level module) -> the subpackages it may import
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "io": {"core"},
    "model": {"core"},
    "plugins": {"core", "model"},
    "cli": {"core", "io", "model", "plugins", "gui"},
    "gui": {"core", "io", "model", "plugins"},
    "bluesky": {"core", "io", "model", "plugins"},
    "onnx_models": set(),
    "__init__": {"core", "io", "model", "plugins"},
}

#: third-party top-level modules each part may import (the standard library is always allowed)
THIRD_PARTY: dict[str, set[str]] = {
    "core": {"numpy"},
    "io": {"numpy", "h5py", "matplotlib", "sasdata"},
    "model": {"numpy", "onnxruntime"},
    "plugins": {"numpy", "pluggy"},
    "cli": {"numpy", "tqdm", "dask", "distributed"},
    "gui": {"numpy", "matplotlib", "PySide6", "shiboken6", "sas"},
    "bluesky": {"numpy", "event_model", "bluesky"},
    "onnx_models": set(),
    "__init__": set(),
}

#: the trainer may use the runtime's contract and these runtime modules, nothing else of it
TRAINER_MAY_IMPORT = (
    "sasview_bnn_plugin.core",
    "sasview_bnn_plugin.cli.command_line",
    "sasview_bnn_plugin.cli.dask_cluster",
    "sasview_bnn_plugin.model.card",
    "sasview_bnn_plugin.model.catalog",
)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path`` that runs, TYPE_CHECKING blocks left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_parts = path.relative_to(package_root(package)).with_suffix("").parts
    if module_parts[-1] == "__init__":
        module_parts = module_parts[:-1]
        is_package = True
    else:
        is_package = False
    here = [package, *module_parts] if is_package else [package, *module_parts[:-1]]
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = here[: len(here) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                    if child.module is None:  # from . import a, b: the modules a, b (or names of the package)
                        found.extend((child.lineno, f"{target}.{alias.name}") for alias in child.names)
                        continue
                else:
                    target = child.module or ""
                found.append((child.lineno, target))
            visit(child)

    visit(tree)
    return found


def package_root(package: str) -> Path:
    return PACKAGE if package == "sasview_bnn_plugin" else ROOT / "trainer"


def part_of(path: Path) -> str:
    """The subpackage (``core``, ``gui``, ...) or top-level module (``bluesky``) a runtime file belongs to."""
    first = path.relative_to(PACKAGE).parts[0]
    return first[:-3] if first.endswith(".py") else first


def runtime_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "onnx_models" not in p.relative_to(PACKAGE).parts)


def _own_part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "sasview_bnn_plugin":
        return None
    if len(parts) == 1 or parts[1] == "__version__":
        return "__init__"
    return parts[1]


def test_the_runtime_has_only_subpackages_and_the_documented_front_end_modules():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "bluesky.py"]
    # (onnx_models/ is installed as sasview_bnn_plugin.onnx_models: models, not code)
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} - {"onnx_models"} == {
        "core", "io", "model", "plugins", "cli", "gui",
    }


@pytest.mark.parametrize("path", runtime_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_each_runtime_file_imports_only_what_its_folder_may(path: Path):
    part = part_of(path)
    assert part in ALLOWED, f"{part} is not in docs/architecture.md's import rules"
    wrong = []
    for line, module in runtime_imports(path, "sasview_bnn_plugin"):
        own = _own_part(module)
        top = module.split(".")[0]
        if own is not None:
            if own != part and own != "__init__" and own not in ALLOWED[part]:
                wrong.append(f"line {line}: {module} ({part} may import {sorted(ALLOWED[part]) or 'no other part'})")
            elif own == "__init__" and module not in ("sasview_bnn_plugin", "sasview_bnn_plugin.__version__"):
                wrong.append(f"line {line}: {module}")
        elif top == "sasview_bnn_trainer" or top == "torch":
            wrong.append(f"line {line}: {module} (the runtime never imports the trainer or torch)")
        elif not _is_stdlib(top) and top not in THIRD_PARTY[part]:
            wrong.append(f"line {line}: {module} ({part} may import {sorted(THIRD_PARTY[part])} besides the standard library)")
    assert not wrong, f"{path.relative_to(ROOT)}:\n" + "\n".join(wrong)


def _is_stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"


def test_no_import_cycle_between_subpackages():
    edges: dict[str, set[str]] = {}
    for path in runtime_files():
        part = part_of(path)
        for _, module in runtime_imports(path, "sasview_bnn_plugin"):
            own = _own_part(module)
            if own is not None and own not in (part, "__init__"):
                edges.setdefault(part, set()).add(own)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(part for part in edges if reaches(part, part, {part}))
    assert not cycles, f"import cycle through {cycles}: {edges}"


def test_no_import_cycle_between_gui_modules():
    gui = PACKAGE / "gui"
    edges = {
        p.stem: {m.split(".")[2] for _, m in runtime_imports(p, "sasview_bnn_plugin") if m.startswith("sasview_bnn_plugin.gui.")}
        for p in gui.glob("*.py")
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ()))

    assert not [m for m in edges if reaches(m, m, {m})], edges


def test_the_guis_hookspecs_import_no_qt_and_the_runtimes_specify_no_ui_hook():
    """Plugins and runtime-only tests import ``gui/hookspecs.py`` without Qt; the UI hooks are specified there only."""
    gui_specs = PACKAGE / "gui" / "hookspecs.py"
    tops = {module.split(".")[0] for _, module in runtime_imports(gui_specs, "sasview_bnn_plugin")}
    assert not tops & {"PySide6", "shiboken6", "sas", "matplotlib"}, tops
    runtime_specs = ast.parse((PACKAGE / "plugins" / "hookspecs.py").read_text())
    functions = {node.name for node in runtime_specs.body if isinstance(node, ast.FunctionDef)}
    ui = {node.name for node in ast.parse(gui_specs.read_text()).body if isinstance(node, ast.FunctionDef)
          and node.name.startswith("sasview_bnn_")}
    assert ui == {"sasview_bnn_perspectives", "sasview_bnn_menu_actions", "sasview_bnn_grid_columns"}
    assert not functions & ui


def test_the_trainer_uses_only_the_runtimes_contract():
    wrong = []
    for path in sorted((ROOT / "trainer").rglob("*.py")):
        for line, module in runtime_imports(path, "sasview_bnn_trainer"):
            if module.startswith("sasview_bnn_plugin") and module not in ("sasview_bnn_plugin", "sasview_bnn_plugin.__version__"):
                if not module.startswith(TRAINER_MAY_IMPORT):
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("folder", ["tests/plugins/sasview-bnn-example-plugin/sasview_bnn_example_plugin", "scripts"])
def test_plugins_and_scripts_use_only_the_public_api(folder: str):
    wrong = []
    for path in sorted((ROOT / folder).glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.ImportFrom) and not node.level:
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            wrong += [f"{path.name}:{node.lineno}: {m}" for m in modules if m.startswith("sasview_bnn_plugin.")]
    assert not wrong, "import these from sasview_bnn_plugin itself:\n" + "\n".join(wrong)


def test_the_public_api_names_what_plugins_and_scripts_need():
    import sasview_bnn_plugin

    for name in ("hookimpl", "ModelSource", "Curve", "ClassificationResult", "BNNClassifier", "CurveLoader", "resolve_model"):
        assert name in sasview_bnn_plugin.__all__
        assert getattr(sasview_bnn_plugin, name) is not None
