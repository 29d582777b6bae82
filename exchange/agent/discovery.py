"""Reading a device source (the I/O half): run the vendor tool, read the simulated state file, or ask the
Kubernetes API for this node; the pure parsers in exchange.agent.sources turn the output into a Scan."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from exchange.agent.sources import kubernetes, simulated
from exchange.agent.sources.model import Scan, SourceParseError
from exchange.agent.sources.registry import TOOLS
from identifiers.catalogue import Catalogue


class Source(Protocol):
    """What the agent loop reads every scan."""

    name: str

    async def scan(self) -> Scan:
        """The devices now (SourceParseError when the output cannot be read)."""
        ...


class ToolSource:
    """Runs a vendor tool (or reads a saved output of it from `replay`) and parses the output."""

    def __init__(self, tool: str, replay: Path | None = None, timeout: float = 30) -> None:
        self.name = tool
        self.command, self.parse = TOOLS[tool]
        self.replay = replay
        self.timeout = timeout

    async def scan(self) -> Scan:
        """One run of the tool; a tool that is missing, hangs or fails is a SourceParseError."""
        if self.replay is not None:
            return self.parse(self.replay.read_text(encoding="utf-8", errors="replace"))
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            raise SourceParseError(self.name, f"cannot run {self.command[0]}: {exc.strerror}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            raise SourceParseError(self.name, f"{self.command[0]} did not answer in {self.timeout:g} s") from None
        text = out.decode("utf-8", errors="replace")
        if proc.returncode != 0 and not text.strip():
            msg = err.decode("utf-8", errors="replace").strip().splitlines()[:1]
            raise SourceParseError(self.name, f"exit {proc.returncode}: {msg[0] if msg else 'no output'}")
        return self.parse(text)


class SimulatedSource:
    """The simulated node: its state file, re-read every scan (edit it to fail or remove a device)."""

    name = simulated.TOOL

    def __init__(self, path: Path) -> None:
        self.path = path

    async def scan(self) -> Scan:
        """Devices of the current state."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SourceParseError(self.name, f"cannot read {self.path}: {exc.strerror}") from None
        return simulated.parse(text)


class KubernetesSource:
    """This node's allocatable device-plugin resources through the official `kubernetes` client
    (pip install 'hetex[agent-k8s]'); in-cluster config first, then the kubeconfig."""

    name = kubernetes.TOOL

    def __init__(self, node: str, catalogue: Catalogue, overrides: Mapping[str, str]) -> None:
        self.node = node
        self.overrides = dict(overrides)
        resources: dict[str, tuple[str, ...]] = {}
        for m in catalogue:
            if m.device_plugin_resource:
                resources[m.device_plugin_resource] = (*resources.get(m.device_plugin_resource, ()), m.code)
        self.resources = resources
        self._api: Any = None

    def _read(self) -> Any:
        if self._api is None:
            try:
                from kubernetes import client, config  # type: ignore[import-not-found,import-untyped,unused-ignore]
            except ImportError:
                raise SourceParseError(
                    self.name, "the kubernetes client is not installed: pip install 'hetex[agent-k8s]'"
                ) from None
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._api = client.CoreV1Api()
        node = self._api.read_node(self.node)
        return self._api.api_client.sanitize_for_serialization(node)

    async def scan(self) -> Scan:
        """The node's devices now."""
        try:
            node = await asyncio.to_thread(self._read)
        except SourceParseError:
            raise
        except Exception as exc:  # the client raises ApiException, urllib3 and config errors
            raise SourceParseError(self.name, f"cannot read node {self.node}: {type(exc).__name__}") from None
        return kubernetes.parse_node(node, self.resources, self.overrides)


def make_source(
    kind: str, *, source_file: Path | None, node: str | None, catalogue: Catalogue, overrides: Mapping[str, str]
) -> Source:
    """The source a config names."""
    if kind == "simulated":
        assert source_file is not None
        return SimulatedSource(source_file)
    if kind == "kubernetes":
        import socket

        return KubernetesSource(node or socket.gethostname(), catalogue, overrides)
    return ToolSource(kind, source_file)
