"""Prometheus metrics of the agent (own registry) and the /metrics endpoint."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class AgentMetrics:
    """Devices, last heartbeat, journal depth/size/full, send errors, clock skew, source errors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.devices = Gauge(
            "hetex_agent_devices", "devices seen, by model and health", ["model", "health"], registry=r
        )
        self.last_heartbeat = Gauge(
            "hetex_agent_last_heartbeat_timestamp_seconds", "last accepted heartbeat", registry=r
        )
        self.journal_depth = Gauge("hetex_agent_journal_depth", "usage reports waiting to be sent", registry=r)
        self.journal_bytes = Gauge("hetex_agent_journal_bytes", "journal size on disk", registry=r)
        self.journal_full = Gauge("hetex_agent_journal_full", "1 when the journal reached its disk budget", registry=r)
        self.send_errors = Counter("hetex_agent_send_errors", "usage sends that failed (retried)", ["kind"], registry=r)
        self.reports_sent = Counter("hetex_agent_reports_sent", "usage reports accepted by the exchange", registry=r)
        self.reports_refused = Counter("hetex_agent_reports_refused", "usage reports refused for good", registry=r)
        self.clock_skew = Gauge("hetex_agent_clock_skew_seconds", "exchange clock minus local clock", registry=r)
        self.source_errors = Counter("hetex_agent_source_errors", "device scans that failed", registry=r)
        self.capacity_changes = Counter(
            "hetex_agent_capacity_changes", "offers reduced, withdrawn or restored", registry=r
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> web.AppRunner:
        """Start GET /metrics on host:port; the caller cleans the runner up."""

        async def handler(_: web.Request) -> web.Response:
            return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner
