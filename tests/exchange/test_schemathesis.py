"""Schemathesis (current major) against the live server with every check, all phases (examples,
coverage, fuzzing, stateful), each request signed with RFC 9421 by a registered participant of the
role the operation needs (tests/exchange/fuzz_hooks.py): server and spec must agree. The CI run leaves the
coverage phase to tests/exchange/test_spec_acceptance.py (every check there too); the soak run has all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.exchange.registration_support import LiveServer
from tests.exchange.speckit import run, show, unexpected


@pytest.fixture
def live(fresh_db_factory: Callable[[], str], tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(fresh_db_factory(), tmp_path) as server:
        yield server


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_schemathesis_all_checks_bounded(live: LiveServer, tmp_path: Path) -> None:
    """CI run: a few examples per operation, every phase and check."""
    out, failures = run(
        live, tmp_path, "--checks", "all", "--max-examples", "5", "--phases", "examples,fuzzing,stateful"
    )
    assert "Stateful" in out, out[-3000:]
    assert not [f for f in failures if f[1].startswith("ST101")], show(failures)  # no server error
    assert not unexpected(failures), show(unexpected(failures))


@pytest.mark.soak
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("backend", ["sqlite", "pg"], indirect=True)
def test_schemathesis_all_checks_200_examples(live: LiveServer, tmp_path: Path) -> None:
    """The slow run: >= 200 examples per operation."""
    out, failures = run(live, tmp_path, "--checks", "all", "--max-examples", "200")
    assert "Stateful" in out, out[-3000:]
    assert not [f for f in failures if f[1].startswith("ST101")], show(failures)
    assert not unexpected(failures), show(unexpected(failures))
