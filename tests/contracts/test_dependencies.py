"""`contracts` depends on nothing else in tradeengine."""

from __future__ import annotations

import ast
from pathlib import Path

import contracts

FORBIDDEN = ("engine", "config", "plugins")
PACKAGE = Path(contracts.__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_import_when_contracts_modules_scanned_then_no_engine_config_or_plugins() -> None:
    # Arrange
    files = sorted(PACKAGE.rglob("*.py"))

    # Act
    offenders = [
        f"{path.name}: {module}"
        for path in files
        for module in _imported_modules(path)
        if module.split(".")[0] in FORBIDDEN
    ]

    # Assert
    assert files
    assert offenders == []
