"""The published spec's own positive and negative examples (schemathesis' coverage phase: each parameter and
body property at its bounds and just past them, required ones left out, wrong types, patterns and enums broken,
extra properties) sent for every operation, signed by the role it is meant for: the server accepts what the
spec allows (positive_data_acceptance) and refuses what it does not (negative_data_rejection), with every
other check too. The refusals of schema-valid requests a JSON Schema cannot foresee are listed with their
reasons in tests/exchange/speckit.py (NOT_EXPRESSIBLE); anything else fails."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exchange.api.openapi import build_openapi
from tests.exchange.registration_support import LiveServer
from tests.exchange.speckit import run, show, unexpected

#: Operations the coverage phase reaches only as far as authentication, and why: peer messages are signed by a
#: peer exchange's key and verified by the federation service against its peers (tests/federation covers them);
#: a participant's signature is 401 whatever the values.
PEER_MESSAGES = {
    "POST /v1/federation/summaries",
    "POST /v1/federation/orders",
    "POST /v1/federation/mirror",
    "POST /v1/federation/holds/{id}/commit",
    "POST /v1/federation/holds/{id}/release",
    "POST /v1/federation/hub/summaries",  # hub messages: signed by a member or hub exchange, checked against peers
    "POST /v1/federation/hub/demand",
    "POST /v1/federation/hub/routes",
}


@pytest.fixture
def live(fresh_db_factory: Callable[[], str], tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(fresh_db_factory(), tmp_path) as server:
        yield server


def _tested(report_dir: Path) -> set[str]:
    report = sorted(report_dir.glob("junit*.xml"))[-1]
    return {str(case.get("name")) for case in ET.parse(report).getroot().iter("testcase")}


def _only_401(out: str) -> set[str]:
    """The operations schemathesis reports as answering nothing but 401/403."""
    block = re.search(r"401 Unauthorized \(\d+ operations?\):\n((?:\s+- .+\n)+)", out)
    return set(re.findall(r"- (\S+ \S+)", block.group(1))) if block else set()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_operation_accepts_exactly_what_the_spec_allows(live: LiveServer, tmp_path: Path) -> None:
    out, failures = run(live, tmp_path, "--phases", "coverage", "--checks", "all")
    spec = build_openapi()
    operations = {f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item}
    # schemathesis leaves out the document it loads (GET /openapi.json; tests/exchange/test_openapi.py reads it)
    assert _tested(tmp_path / "report") == operations - {"GET /openapi.json"}, out[-3000:]
    generated = re.search(r"(\d+) generated", out)
    assert generated and int(generated.group(1)) >= 10 * len(operations), out[-3000:]
    assert not [f for f in failures if f[1].startswith("ST101")], show(failures)  # no server error
    assert not unexpected(failures), show(unexpected(failures))
    assert _only_401(out) <= PEER_MESSAGES, out[-3000:]
