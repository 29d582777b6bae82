"""PostgreSQL round trips per request on the fleet's hot paths (exchange.bench.roundtrips), steady state: a signed
heartbeat is one statement (no ping, no BEGIN/COMMIT, no nonce), a 4-meter usage batch at most 8 (it was ~74: a
pre-ping, four queries per meter and one log append per meter; then 18: one neighbours query per meter, the
counter, entries, nodes, counter update and usage rows as separate statements)."""

from __future__ import annotations

import pytest

from exchange.bench.roundtrips import measure

pytestmark = pytest.mark.pg


async def test_heartbeat_is_one_round_trip_and_a_usage_batch_at_most_eight(pg_server_url: str | None) -> None:
    if pg_server_url is None:
        pytest.skip("no PostgreSQL")
    counts = await measure(pg_server_url, repetitions=6)
    # a request on a pooled connection that has not prepared the statement yet adds its Parse round trip
    beats, batches = sorted(counts["heartbeat"]), sorted(counts["usage_batch_4_meters"])
    assert beats[len(beats) // 2] == 1 and beats[-1] <= 2, counts
    assert batches[len(batches) // 2] <= 8, counts
