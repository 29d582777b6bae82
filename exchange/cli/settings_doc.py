"""Every HETEX_* environment variable in one generated table (README, `hetex serve --help`, `hetex config
settings`). Service settings come from exchange.settings.Settings (name = HETEX_ + field, default from the
model); a field without a description here fails tests/exchange/test_cli_settings.py."""

from __future__ import annotations

from typing import Any

SERVICE: dict[str, str] = {
    "database_url": "database: sqlite:///FILE or postgresql://user:pass@host/db (also --database-url)",
    "host": "address `hetex serve` binds (also --host)",
    "port": "port `hetex serve` listens on (also --port)",
    "authority": "this exchange's CRI authority code (also --authority)",
    "origin": "name of the transparency log and of the exchange key (C2SP note origin)",
    "public_base_url": "the exchange's public URL: signed requests bind to it; required by `hetex serve` outside --dev",
    "dev": "local development: no public base URL needed, signatures checked against the Host header (also --dev)",
    "key_dir": "directory of the exchange private keys (<key id>.pem), shared by every process (also --key-dir)",
    "exports_dir": "directory where regulator audit bundles are written",
    "signature_window_seconds": "accepted clock skew of signed requests; nonces are kept this long",
    "heartbeat_timeout_seconds": "a site's offers stay matchable this long after its last heartbeat",
    "round_interval_seconds": "seconds between automatic clearing rounds in `hetex serve` (0: off)",
    "round_slot_seconds": "clearing time grid: contracts start on multiples of this",
    "round_max_start_slots": "how many start slots ahead a round considers",
    "checkpoint_interval_seconds": "how often `hetex serve` signs a new log checkpoint (0: off)",
    "fee_bps": "exchange fee in basis points of the buyer's payment",
    "migrate_on_start": "`hetex serve` upgrades the schema on start (false: refuse when behind; also --no-migrate)",
    "workers": "`hetex serve` processes sharing the port (PostgreSQL only; also --workers)",
    "lease_poll_seconds": "how often a process polls for the duties lease, and the holder checks its connection",
    "job_lease_seconds": "a background job (audit export) whose process stops renewing its lease this long is resumed",
    "federation_summary_interval_seconds": "how often capacity summaries are pushed to peers",
    "federation_summary_ttl_seconds": "how long a peer's capacity summary is trusted",
    "federation_hold_ttl_seconds": "how long a capacity hold for a peer's order lives",
    "federation_sync_interval_seconds": "how often peers' checkpoints are fetched and checked",
    "federation_forward_interval_seconds": "how often unfilled orders are considered for forwarding",
    "federation_forward_after_seconds": "an order is forwarded to a peer after waiting this long",
    "federation_sweep_interval_seconds": "how often expired holds are released",
    "federation_peer_timeout_seconds": "timeout of one request to a peer",
    "federation_commit_delay_seconds": "fault injection for partition tests (keep 0)",
    "federation_hub": "authority of this exchange's hub (a peer): it gets our supply curves and unmet demand",
    "federation_hub_mode": "this exchange is a hub: it clears its members' unmet demand on their supply curves",
    "federation_hub_round_interval_seconds": "seconds between hub rounds when federation_hub_mode is on (0: off)",
    "federation_hub_coupled": "member of a hub: send it every open device order, clear only what it routes here",
    "disclosure_min_orders": "public round/market views show a class price only when at least this many orders made it",
    "http_head_timeout_seconds": "a request head must arrive within this (slowloris connections are cut)",
    "http_body_timeout_seconds": "a request body must arrive within this (else 408)",
    "http_keepalive_seconds": "idle keep-alive connections close after this",
    "http_max_connections_per_address": "open connections one client address may hold",
    "round_process": "`hetex serve`: clearing rounds in a child process of their own (on|off)",
    "shutdown_grace_seconds": "on SIGTERM: time for in-flight requests and the running round (also --shutdown-grace)",
}

CLIENT: tuple[tuple[str, str, str], ...] = (
    ("HETEX_URL", "http://127.0.0.1:8470", "exchange base URL for client verbs (beats the profile; --url beats it)"),
    ("HETEX_KEY", "", "participant private key file for client verbs (beats the profile; --key beats it)"),
    ("HETEX_PROFILE", "the config's default_profile", "config profile to use (--profile beats it)"),
    ("HETEX_CONFIG", "$XDG_CONFIG_HOME/hetex/config.toml", "path of the client config file"),
    ("HETEX_SPECS_DIR", "specs/ of the checkout or package", "directory of the catalogue and tier tables"),
    ("HETEX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test", "PostgreSQL server for the test suite"),
    ("HETEX_TEST_KILL_ROUND", "", "test hook: a round process exits at after_solve|before_commit"),
    ("HETEX_TEST_CRASH_AFTER", "", "test hook: a settlement batch exits after its N-th record"),
    ("HETEX_TEST_EXPORT_DELAY", "", "test hook: an audit export waits this many seconds once running"),
    ("HETEX_TEST_ROUND_DELAY", "", "test hook: a round waits this many seconds after its snapshot"),
    ("HETEX_TEST_CORRUPT_PROOF", "", "test hook: the first consistency proof from this peer arrives corrupted"),
    ("HETEX_FUZZ_SEED", "20261203", "test suite: seed of the audit-bundle mutation fuzzer"),
    ("HETEX_FUZZ_COUNT", "5000", "test suite: how many mutants the audit fuzzer runs"),
    ("HETEX_FUZZ_KEYS", "", "test suite: participant keys file for the schemathesis signing hook"),
    ("HETEX_CHROMIUM", "/usr/bin/chromium", "test suite: the Chromium the web-console browser tests drive"),
    ("HETEX_SCREENSHOTS", "", "test suite: folder for the web-console screenshots (default: the test's temp dir)"),
    ("HETEX_SWITCH_INTERVAL", "", "`hetex bench api`: sys.setswitchinterval in the servers"),
    ("HETEX_BENCH_PROFILE", "", "`hetex bench api`: write cProfile stats of the server to this file"),
)


def _default(field: Any) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def rows() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting: the service's, then the client's and tools'."""
    from exchange.settings import Settings

    out = []
    for name, field in Settings.model_fields.items():
        out.append((f"HETEX_{name.upper()}", _default(field), SERVICE.get(name, "")))
    return out + list(CLIENT)


def markdown_table() -> str:
    """The table in Markdown (the README holds exactly this between its settings-table markers)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for var, default, meaning in rows():
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{var}` | {shown} | {meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def text_table() -> str:
    """The table as plain text (`hetex serve --help`)."""
    table = rows()
    width = max(len(v) for v, _, _ in table)
    lines = ["settings (environment; flags beat them):"]
    for var, default, meaning in table:
        lines.append(f"  {var:<{width}}  {meaning}" + (f" [{default}]" if default else ""))
    return "\n".join(lines)
