"""Kubernetes node -> devices: the node's allocatable extended resources named by the catalogue's
device-plugin resources (pure: takes the Node object as a dict, from the API or `kubectl get node -o json`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exchange.agent.sources import amd, cambricon, huawei, hygon, iluvatar, kunlunxin, metax, mthreads, nvidia
from exchange.agent.sources.model import Device, ModelRules, Scan, SourceParseError, map_model, scan_of

TOOL = "kubernetes"
#: node labels that name the product (NVIDIA GPU feature discovery, AMD node labeller, Ascend, Cambricon)
PRODUCT_LABELS = (
    "nvidia.com/gpu.product",
    "amd.com/gpu.product-name",
    "beta.amd.com/gpu.product-name",
    "accelerator",
    "node.kubernetes.io/npu.chip.name",
    "cambricon.com/mlu.model",
)
RULES_BY_VENDOR_PREFIX: tuple[tuple[str, ModelRules], ...] = (
    ("nvidia.com/", nvidia.RULES),
    ("amd.com/", amd.RULES),
    ("huawei.com/", huawei.RULES),
    ("cambricon.com/", cambricon.RULES),
    ("hygon.com/", hygon.RULES),
    ("kunlunxin.com/", kunlunxin.RULES),
    ("metax-tech.com/", metax.RULES),
    ("mthreads.com/", mthreads.RULES),
    ("iluvatar.ai/", iluvatar.RULES),
)


def _quantity(tool: str, name: str, value: Any) -> int:
    text = str(value)
    if not text.isdigit():
        raise SourceParseError(tool, f"{name}: device count {text!r} is not a whole number")
    return int(text)


def parse_node(node: Mapping[str, Any], resources: Mapping[str, tuple[str, ...]], overrides: Mapping[str, str]) -> Scan:
    """Devices of a Node: for each catalogue device-plugin resource in status.allocatable, that many healthy
    devices and (capacity - allocatable) unhealthy ones. The model is `overrides[resource]`, else the product
    label mapped with the vendor's rules, else the one catalogue model of that resource, else unmapped.
    `resources` maps a resource name to the catalogue models that use it."""
    if not isinstance(node, Mapping):
        raise SourceParseError(TOOL, "expected a Node object")
    meta = node.get("metadata")
    status = node.get("status")
    if not isinstance(meta, Mapping) or not isinstance(status, Mapping):
        raise SourceParseError(TOOL, "the Node has no metadata or status")
    name = str(meta.get("name") or "node")
    labels = meta.get("labels") or {}
    allocatable = status.get("allocatable") or {}
    capacity = status.get("capacity") or allocatable
    if not isinstance(labels, Mapping) or not isinstance(allocatable, Mapping) or not isinstance(capacity, Mapping):
        raise SourceParseError(TOOL, "labels, allocatable and capacity must be objects")
    product = next((str(labels[k]) for k in PRODUCT_LABELS if k in labels), "")
    devices: list[Device] = []
    for resource in sorted(set(allocatable) | set(capacity)):
        models = resources.get(resource)
        if models is None:
            continue
        alloc = _quantity(TOOL, resource, allocatable.get(resource, 0))
        cap = max(alloc, _quantity(TOOL, resource, capacity.get(resource, alloc)))
        model = overrides.get(resource)
        if model is None and product:
            rules = next((r for prefix, r in RULES_BY_VENDOR_PREFIX if resource.startswith(prefix)), ())
            model = map_model(product.replace("-", " "), rules) or map_model(product, rules)
        if model is None and len(models) == 1:
            model = models[0]
        vendor = resource.split("/")[0]
        for i in range(cap):
            ok = i < alloc
            devices.append(
                Device(
                    vendor,
                    i,
                    f"{name}/{resource}/{i}",
                    product or resource,
                    model,
                    healthy=ok,
                    note=None if ok else "in capacity but not allocatable (the device plugin marks it unhealthy)",
                )
            )
    return scan_of(TOOL, devices)
