"""Vendor-tool parsers on the documented sample outputs: normal output, a failed device, an empty host,
garbage -> SourceParseError (never another exception); every device maps to a catalogue model code."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.agent.sources import amd, kubernetes, simulated
from exchange.agent.sources.model import Scan, SourceParseError
from exchange.agent.sources.registry import TOOLS
from identifiers.catalogue import load_catalogue

SAMPLES = Path(__file__).resolve().parents[3] / "specs" / "agent" / "samples"
#: tool -> (model of the normal sample, devices in it, model of the failed sample, healthy, unhealthy)
EXPECTED = {
    "nvidia-smi": ("NV-H100-SXM", 4, "NV-A100-80G-SXM", 1, 2),
    "rocm-smi": ("AMD-MI300X", 2, "AMD-MI250", 1, 1),
    "npu-smi": ("HW-910B3", 3, "HW-910B4", 1, 1),
    "cnmon": ("CAM-MLU370-X8", 2, "CAM-MLU590", 1, 1),
    "hy-smi": ("HG-K100-AI", 2, "HG-Z100", 1, 1),
    "xpu-smi": ("KLX-P800", 2, "KLX-R200", 1, 1),
    "ixsmi": ("IX-BI-V150", 2, "IX-MR-V100", 1, 1),
    "mx-smi": ("MX-C500", 2, "MX-C500", 1, 1),
    "mthreads-gmi": ("MT-S4000", 2, "MT-S4000", 1, 1),
}
EMPTY_HOST = {
    "nvidia-smi": "No devices were found\n",
    "ixsmi": "No devices were found\n",
    "rocm-smi": "",
    "hy-smi": "{}",
    "cnmon": '{"CnmonInfo": []}',
    "npu-smi": "",
    "xpu-smi": "No devices were found\n",
    "mx-smi": "no devices found\n",
    "mthreads-gmi": "No devices were found\n",
    "amd-smi": "[]",
}


def sample(tool: str, kind: str) -> str:
    [path] = SAMPLES.glob(f"{tool}.{kind}.*")
    return path.read_text()


@pytest.mark.parametrize("tool", sorted(EXPECTED))
def test_normal_output(tool: str) -> None:
    model, count, *_ = EXPECTED[tool]
    scan = TOOLS[tool][1](sample(tool, "normal"))
    assert scan.healthy_by_model() == {model: count}
    assert all(d.utilization_pct is not None and 0 <= d.utilization_pct <= 100 for d in scan.devices)
    assert len({d.uid for d in scan.devices}) == count


@pytest.mark.parametrize("tool", sorted(EXPECTED))
def test_failed_device_is_listed_unhealthy(tool: str) -> None:
    _, _, model, healthy, unhealthy = EXPECTED[tool]
    scan = TOOLS[tool][1](sample(tool, "failed"))
    assert scan.healthy_by_model() == {model: healthy}
    bad = [d for d in scan.devices if not d.healthy]
    assert len(bad) == unhealthy and all(d.utilization_pct is None and d.note for d in bad)


@pytest.mark.parametrize("tool", sorted(EMPTY_HOST))
def test_empty_host(tool: str) -> None:
    assert TOOLS[tool][1](EMPTY_HOST[tool]).devices == ()


def test_every_mapped_code_is_in_the_catalogue() -> None:
    catalogue = load_catalogue()
    from exchange.agent.sources import cambricon, huawei, hygon, iluvatar, kunlunxin, metax, mthreads, nvidia

    for module in (nvidia, amd, huawei, cambricon, hygon, kunlunxin, iluvatar, metax, mthreads):
        for _pattern, code in module.RULES:
            assert code in catalogue, code


def test_amd_smi_json() -> None:
    scan = amd.parse_amd_smi(sample("amd-smi", "normal"))
    assert scan.healthy_by_model() == {"AMD-MI300X": 2}
    broken = amd.parse_amd_smi('[{"gpu": 0, "asic": {"market_name": "N/A"}}, {"gpu": 1}]')
    assert [d.healthy for d in broken.devices] == [False, False]


def test_kubernetes_node_allocatable() -> None:
    node = json.loads((SAMPLES / "kubernetes.node.json").read_text())
    catalogue = load_catalogue()
    resources: dict[str, tuple[str, ...]] = {}
    for m in catalogue:
        if m.device_plugin_resource:
            resources[m.device_plugin_resource] = (*resources.get(m.device_plugin_resource, ()), m.code)
    scan = kubernetes.parse_node(node, resources, {})
    assert scan.healthy_by_model() == {"NV-H800-SXM": 7}  # 8 in capacity, 7 allocatable
    assert len([d for d in scan.devices if not d.healthy]) == 1
    node["metadata"]["labels"] = {}
    assert kubernetes.parse_node(node, resources, {}).healthy_by_model() == {}  # nvidia.com/gpu names many models
    assert kubernetes.parse_node(node, resources, {"nvidia.com/gpu": "NV-H20"}).healthy_by_model() == {"NV-H20": 7}
    node["status"]["allocatable"]["nvidia.com/gpu"] = "seven"
    with pytest.raises(SourceParseError, match="whole number"):
        kubernetes.parse_node(node, resources, {})


def test_simulated_source_removes_and_fails_devices() -> None:
    state = {"devices": [{"model": "NV-H100-SXM", "count": 4}], "failed": ["sim-NV-H100-SXM-1"], "removed": []}
    assert simulated.parse(json.dumps(state)).healthy_by_model() == {"NV-H100-SXM": 3}
    state["removed"] = ["sim-NV-H100-SXM-0"]
    scan = simulated.parse(json.dumps(state))
    assert len(scan.devices) == 3 and scan.healthy_by_model() == {"NV-H100-SXM": 2}


@pytest.mark.parametrize(
    ("tool", "text"),
    [
        ("nvidia-smi", "index, uuid, name\n0, x, y\n"),
        ("nvidia-smi", "zero, GPU-1, NVIDIA H100, 0000:01:00.0, 5\n"),
        ("rocm-smi", "{not json"),
        ("rocm-smi", "[1, 2]"),
        ("cnmon", '{"CnmonInfo": [{"CardNum": "x"}]}'),
        ("npu-smi", "hello\nworld\n"),
        ("xpu-smi", "hello\n"),
        ("mx-smi", "+----+\n| no rows |\n+----+\n"),
        ("hy-smi", '{"card0": 5}'),
        ("amd-smi", '{"gpu": 0}'),
        ("nvidia-smi", "0, a, b, c, 1\n0, a, b, c, 2\n"),  # one uuid twice
    ],
)
def test_garbage_is_a_named_error(tool: str, text: str) -> None:
    with pytest.raises(SourceParseError) as info:
        TOOLS[tool][1](text)
    assert info.value.tool == tool and info.value.code == "agent_source_unparseable"


@settings(max_examples=60, deadline=None)
@given(
    tool=st.sampled_from(sorted(TOOLS)),
    text=st.one_of(
        st.text(max_size=400),
        st.text(alphabet="|+-=0123456789 .:%ABCDEFHMNPRSVX/\n", max_size=400),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
            max_leaves=12,
        ).map(json.dumps),
    ),
)
def test_any_input_parses_or_raises_the_named_error(tool: str, text: str) -> None:
    try:
        scan = TOOLS[tool][1](text)
    except SourceParseError:
        return
    assert isinstance(scan, Scan)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=300))
def test_simulated_and_kubernetes_never_crash(text: str) -> None:
    with contextlib.suppress(SourceParseError):
        simulated.parse(text)
    with contextlib.suppress(SourceParseError, ValueError):
        kubernetes.parse_node(json.loads(text) if text.startswith("{") else {"x": text}, {}, {})


def test_parsers_do_no_io() -> None:
    """exchange/agent/sources imports nothing that does I/O: running the tools is discovery.py's job."""
    import ast

    forbidden = {"aiohttp", "sqlalchemy", "sqlite3", "subprocess", "asyncio", "socket", "http", "os", "shutil"}
    forbidden_local = {"exchange.agent.discovery", "exchange.agent.runner", "exchange.agent.journal"}
    root = Path(__file__).resolve().parents[3] / "exchange" / "agent" / "sources"
    files = sorted(root.glob("*.py"))
    assert len(files) >= 12
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden and name not in forbidden_local, (path.name, name)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "open", path.name
