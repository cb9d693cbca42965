"""The package's imports point one way: io and friends <- data <- model <- evaluate <- train <- tools.

Every import in every module is read from its source (lazy imports inside functions included), so an
upward import fails here before it tangles the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hrnet_lib"

# Lower numbers are lower layers; a module may import its own layer and those below it.
LAYERS = {
    "hrnet_lib.io": 0,
    "hrnet_lib.device": 0,
    "hrnet_lib.provenance": 0,
    "hrnet_lib.viz": 0,
    "hrnet_lib.data": 1,
    "hrnet_lib.model": 2,
    "hrnet_lib.evaluate": 3,
    "hrnet_lib.train": 4,
    "hrnet_lib.book": 5,
    "hrnet_lib.bench": 5,
    "hrnet_lib.data.cli": 5,  # the `data` command: downloads data and checks weights (model)
    "hrnet_lib.__main__": 5,
    "hrnet_lib": 5,  # the package's lazy public API re-exports every layer
}


def layer(module: str) -> int:
    """The layer of a module: that of the longest LAYERS prefix naming it or a package above it."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in LAYERS:
            return LAYERS[name]
    raise KeyError(f"{module} has no layer in LAYERS")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every hrnet_lib import in a source file, at any depth."""
    found = []
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
            names = [f"{base}.{alias.name}" for alias in node.names]
            # `from hrnet_lib.data import loader` imports the module hrnet_lib.data.loader
            found += [(node.lineno, n if _is_module(n) else base) for n in names]
    return [(line, name) for line, name in found if name.split(".")[0] == "hrnet_lib"]


def upward_imports(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        here = module_name(path)
        for line, target in imports(path):
            if layer(target) > layer(here):
                problems.append(
                    f"{path.relative_to(root.parent)}:{line}: {here} (layer {layer(here)}) "
                    f"imports {target} (layer {layer(target)})"
                )
    return problems


def test_every_module_has_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer(module_name(path))


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports() == []


def test_an_upward_import_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lazy import of the training loop inside a data function is reported with its file and line."""
    fake = tmp_path / "hrnet_lib"
    (fake / "data").mkdir(parents=True)
    (fake / "train").mkdir()
    (fake / "train" / "loop.py").write_text("")
    (fake / "data" / "loader.py").write_text(
        "import numpy\n\n\ndef f():\n    from hrnet_lib.train import loop\n"
    )
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert upward_imports(fake) == [
        "hrnet_lib/data/loader.py:5: hrnet_lib.data.loader (layer 1) imports hrnet_lib.train.loop (layer 4)"
    ]
