"""File names and line formats of an audit bundle (pure: standard library only; see specs/audit-verifier.md)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_SIG = "manifest.sig"
RECORDS = "records.jsonl"
PROOFS = "proofs.jsonl"
CHECKPOINT = "checkpoint"
CONSISTENCY = "consistency.jsonl"
CATALOGUE = "catalogue.json"
SUMMARY = "summary.csv"
KEYS_DIR = "keys"
MANIFEST_PAYLOAD_TYPE = "application/vnd.hetex.audit-manifest+json"
KEY_ROLES = frozenset({"exchange", "peer-exchange", "participant"})

#: Names a bundle may contain (keys/<8 hex>.json besides the fixed files).
FIXED_FILES = (RECORDS, PROOFS, CHECKPOINT, CONSISTENCY, CATALOGUE, SUMMARY)
KEY_FILE = re.compile(r"keys/[0-9a-f]{8}\.json\Z")

_RECORD_PREFIX = b'{"entry":'
_RECORD_INDEX = re.compile(rb',"index":(0|[1-9][0-9]{0,17})}\Z')


class LineError(ValueError):
    """A bundle line does not have the documented shape."""


def record_line(index: int, entry: bytes) -> bytes:
    """`{"entry":<stored bytes>,"index":<n>}` + LF: the stored log bytes verbatim (RFC 8785 when they are)."""
    return _RECORD_PREFIX + entry + b',"index":' + str(index).encode("ascii") + b"}\n"


def parse_record_line(line: bytes) -> tuple[int, bytes, dict[str, Any]]:
    """(log index, exact stored entry bytes, parsed envelope) of one records.jsonl line."""
    body = line[:-1] if line.endswith(b"\n") else line
    m = _RECORD_INDEX.search(body)
    if not body.startswith(_RECORD_PREFIX) or m is None:
        raise LineError('a record line is {"entry":<envelope>,"index":<n>}')
    raw = body[len(_RECORD_PREFIX) : m.start()]
    try:
        entry = json.loads(raw)
    except ValueError as exc:
        raise LineError("the entry is not JSON") from exc
    if not isinstance(entry, dict):
        raise LineError("the entry is not a JSON object")
    return int(m.group(1)), raw, entry


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


def _hashes(value: Any) -> list[bytes]:
    if not isinstance(value, list):
        raise LineError("hashes must be a list of base64 strings")
    out = []
    for item in value:
        if not isinstance(item, str):
            raise LineError("hashes must be a list of base64 strings")
        try:
            out.append(base64.b64decode(item, validate=True))
        except ValueError as exc:
            raise LineError("a hash is not base64") from exc
    return out


def proof_line(index: int, hashes: list[bytes]) -> bytes:
    """`{"hashes":[b64...],"index":<n>}` + LF (RFC 8785 form): the inclusion proof of one record."""
    return json.dumps({"hashes": [_b64(h) for h in hashes], "index": index}, separators=(",", ":")).encode() + b"\n"


def parse_proof_line(line: bytes) -> tuple[int, list[bytes]]:
    """(log index, proof hashes) of one proofs.jsonl line."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise LineError("a proof line is not JSON") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("index"), int) or isinstance(obj.get("index"), bool):
        raise LineError('a proof line is {"hashes":[...],"index":<n>}')
    return obj["index"], _hashes(obj.get("hashes"))


@dataclass(frozen=True)
class ConsistencyLine:
    """A consistency proof from an earlier tree size to the bundle's checkpoint size."""

    size1: int
    size2: int
    hashes: list[bytes]


def consistency_line(size1: int, size2: int, hashes: list[bytes]) -> bytes:
    """`{"hashes":[...],"size1":m,"size2":n}` + LF."""
    obj = {"hashes": [_b64(h) for h in hashes], "size1": size1, "size2": size2}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def parse_consistency_line(line: bytes) -> ConsistencyLine:
    """One consistency.jsonl line."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise LineError("a consistency line is not JSON") from exc
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), int) for k in ("size1", "size2")):
        raise LineError('a consistency line is {"hashes":[...],"size1":m,"size2":n}')
    return ConsistencyLine(obj["size1"], obj["size2"], _hashes(obj.get("hashes")))


def key_file_name(key_id: str) -> str:
    """keys/<key id>.json."""
    return f"{KEYS_DIR}/{key_id}.json"
