"""The one-way import rule of DESIGN.md section 2 holds, and the check really catches a violation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run(
        [exe, str(cwd / "pyproject.toml")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_repository_respects_layers() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout


def test_check_fails_when_pure_core_does_io(tmp_path: Path) -> None:
    for pkg in ("identifiers", "matching", "federation", "exchange"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for module in ("identifiers/cri", "identifiers/catalogue", "matching/baselines", "matching/clearing"):
        (tmp_path / f"{module}.py").write_text("")  # the modules the no-circles contract names must exist
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "matching" / "leaky.py").write_text("import sqlalchemy\nimport exchange\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
