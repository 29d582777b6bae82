"""The standalone-verifier modules import only the standard library, cryptography, rfc8785 and each other."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "federation"
PURE = ["keys", "canonical", "dsse", "note", "merkle", "errors"]
ALLOWED_THIRD_PARTY = {"cryptography", "rfc8785"}
ALLOWED_LOCAL = {f"federation.{m}" for m in PURE} | {"identifiers.errors"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports(module: str) -> None:
    for name in _imports(PKG / f"{module}.py"):
        top = name.split(".")[0]
        ok = top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or name in ALLOWED_LOCAL
        assert ok, f"federation/{module}.py imports {name}"


def test_package_init_is_import_free() -> None:
    assert _imports(PKG / "__init__.py") == set()
