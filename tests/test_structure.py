"""The code's shape that reviews rely on: imports run one way, config -> arrays, data ->
model/pca -> callbacks/artefacts -> train -> report -> cli, with io and plots at the bottom
beside config."""

from __future__ import annotations

import ast
from pathlib import Path

LAYER = {"config": 0, "io": 0, "lock": 0, "plots": 0, "jobstart": 0, "arrays": 1, "checkpoints": 1,
         "data": 1, "loggers": 1, "progress": 1, "requeue": 1, "nets": 2, "pca": 2, "probe": 2,
         "datamodule": 2, "model": 3, "artefacts": 3, "callbacks": 4, "fast": 4, "train": 5,
         "report": 6, "trained": 7, "cli": 8, "__main__": 9, "__init__": 9}  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aesweep."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "aesweep":
            names.update(alias.name for alias in node.names if alias.name in LAYER)
    return names


def test_imports_run_one_way() -> None:
    package = Path(__file__).parents[1] / "aesweep"
    modules = sorted(p for p in package.glob("*.py"))
    assert {p.stem for p in modules} <= set(LAYER), "give the new module a layer here"
    for path in modules:
        for name in imported_modules(path):
            assert LAYER[name] <= LAYER[path.stem] and (name != path.stem), (
                f"{path.stem} imports {name}, which sits above it"
            )


def test_every_activation_choice_builds_a_model() -> None:
    from aesweep.config import Activation
    from aesweep.nets import mlp

    for activation in Activation:
        assert len(mlp([4, 3, 2], str(activation))) >= 2
