"""The verifier's JSON schemas ship in the wheel (hetex_specs/audit) and are found from an installed package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from exchange.audit import schemas as S

ROOT = Path(__file__).resolve().parents[2]


def test_every_schema_the_verifier_uses_is_in_specs_audit_and_force_included() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]["specs"] == "hetex_specs"
    assert "jsonschema" in " ".join(pyproject["project"]["dependencies"])
    for name in S.NAMES:
        assert (ROOT / "specs" / "audit" / f"{name}.schema.json").is_file(), name


def test_schemas_are_found_in_an_installed_layout(tmp_path: Path) -> None:
    """exchange/ without a specs/ beside it (as in site-packages): the schemas come from hetex_specs/audit."""
    site = tmp_path / "site"
    (site / "exchange" / "audit").mkdir(parents=True)
    (site / "exchange" / "__init__.py").write_text("")
    (site / "exchange" / "audit" / "__init__.py").write_text("")
    shutil.copy(ROOT / "exchange" / "audit" / "schemas.py", site / "exchange" / "audit" / "schemas.py")
    shutil.copytree(ROOT / "specs" / "audit", site / "hetex_specs" / "audit")
    code = (
        "from exchange.audit import schemas as S\n"
        "print(S.schema_dir())\n"
        "S.validate('catalogue', {'models': {}})\n"
        "try:\n    S.validate('catalogue', {'models': {'X': 'a string'}})\nexcept S.SchemaError as e:\n    print(e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    where, error = proc.stdout.splitlines()
    assert Path(where) == site / "hetex_specs" / "audit"
    assert error.startswith("$.models.X:")
