"""The JSON schemas of bundle files (specs/audit/*.schema.json), found in a source checkout or in the installed
wheel (`hetex_specs/audit/`), and validation that names the first failing path."""

from __future__ import annotations

import hashlib
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


#: (schema name, SHA-256 of the exact bytes) of documents already found valid: validation is a pure function of
#: the bytes, and the same catalogue or key file recurs across bundles of one exchange (bounded memo)
_VALID: dict[tuple[str, bytes], None] = {}
_MEMO_SIZE = 1024


def validate(name: str, document: Any, data: bytes | None = None) -> None:
    """Raise SchemaError naming the first path where `document` (parsed from `data`) breaks its schema."""
    memo = (name, hashlib.sha256(data).digest()) if data is not None else None
    if memo is not None and memo in _VALID:
        return
    error = next(iter(_validator(name).iter_errors(document)), None)
    if error is None and memo is not None:
        if len(_VALID) >= _MEMO_SIZE:
            _VALID.pop(next(iter(_VALID)))
        _VALID[memo] = None
    if error is None:
        return
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    raise SchemaError(f"{path}: {str(error.message)[:200]}")
