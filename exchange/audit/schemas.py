"""The JSON schemas of bundle files (specs/audit/*.schema.json), found in a source checkout or in the installed
wheel (`hetex_specs/audit/`), and validation that names the first failing path."""

from __future__ import annotations

import importlib.resources
import json
from functools import cache
from pathlib import Path
from typing import Any

MANIFEST = "manifest"
KEY = "key"
CATALOGUE = "catalogue"
NAMES = (MANIFEST, KEY, CATALOGUE, "record-line", "proof-line", "consistency-line")


class SchemaError(ValueError):
    """A document does not match its schema; the message names the JSON path."""


def schema_dir() -> Path:
    """specs/audit of this source tree, else hetex_specs/audit of the installed wheel."""
    here = Path(__file__).resolve().parents[2] / "specs" / "audit"
    if (here / "manifest.schema.json").is_file():
        return here
    return Path(str(importlib.resources.files("hetex_specs") / "audit"))


@cache
def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator  # the only third-party module the verifier adds

    schema = json.loads((schema_dir() / f"{name}.schema.json").read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def validate(name: str, document: Any) -> None:
    """Raise SchemaError naming the first path where `document` breaks specs/audit/<name>.schema.json."""
    error = next(iter(_validator(name).iter_errors(document)), None)
    if error is None:
        return
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    raise SchemaError(f"{path}: {str(error.message)[:200]}")
