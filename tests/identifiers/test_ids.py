"""UUIDv7 record ids and the specs directory helper."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from identifiers.ids import new_id, new_id_str
from identifiers.specs import specs_dir


def test_new_id_is_uuid7_and_time_ordered() -> None:
    ids = [new_id() for _ in range(200)]
    assert all(isinstance(i, uuid.UUID) and i.version == 7 for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    # The first 48 bits are the Unix time in milliseconds.
    millis = ids[-1].int >> 80
    assert abs(millis - time.time() * 1000) < 60_000


def test_new_id_str_is_canonical() -> None:
    text = new_id_str()
    assert str(uuid.UUID(text)) == text
    assert uuid.UUID(text).version == 7


def test_specs_dir_finds_repo_specs_and_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HETEX_SPECS_DIR", raising=False)
    assert (specs_dir() / "accelerators.yaml").is_file()
    monkeypatch.setenv("HETEX_SPECS_DIR", str(tmp_path))
    assert specs_dir() == tmp_path
