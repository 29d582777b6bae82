"""Pure readers shared by several vendor parsers: nvidia-smi style CSV queries and summary tables, JSON."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from typing import Any

from exchange.agent.sources.model import (
    Device,
    ModelRules,
    Scan,
    SourceParseError,
    as_int,
    clamp_pct,
    map_model,
    require_lines,
    scan_of,
)

#: what a tool prints for a field it could not read from a failed device
FAILED_MARKERS = ("[gpu requires reset]", "[unknown error]", "err!", "[gpu is lost]", "[not supported]error")
NO_DEVICES = re.compile(r"no devices (were )?found|no (gpu|npu|mlu|xpu|dcu)s? (were )?found", re.IGNORECASE)
HANDLE_FAILURE = re.compile(r"unable to determine the device handle for (?:gpu|device)\s*([0-9a-fA-F:.]+)", re.I)

#: the CSV query the agent runs (nvidia-smi and Iluvatar ixsmi accept the same flags)
CSV_QUERY_FIELDS = ("index", "uuid", "name", "pci.bus_id", "utilization.gpu")


def _failed(value: str) -> bool:
    return value.strip().lower() in FAILED_MARKERS


def parse_csv_query(tool: str, vendor: str, text: str, rules: ModelRules) -> Scan:
    """`--query-gpu=index,uuid,name,pci.bus_id,utilization.gpu --format=csv[,noheader][,nounits]` output."""
    lines = require_lines(tool, text)
    if not lines or (len(lines) == 1 and NO_DEVICES.search(lines[0])):
        return Scan(tool)
    devices: list[Device] = []
    rows = list(csv.reader(lines, skipinitialspace=True))
    if rows and rows[0] and rows[0][0].strip().lower() == "index":
        header = [h.split("[")[0].strip().lower() for h in rows[0]]
        if header != list(CSV_QUERY_FIELDS):
            raise SourceParseError(tool, f"unexpected CSV header {rows[0]!r}; run the documented query")
        rows = rows[1:]
    for n, (line, row) in enumerate(zip(lines[len(lines) - len(rows) :], rows, strict=True), 1):
        handle = HANDLE_FAILURE.search(line)
        if handle is not None:
            bus = handle.group(1).rstrip(":")
            devices.append(Device(vendor, -n, f"bus:{bus}", "unknown", None, healthy=False, note=line.strip()))
            continue
        if NO_DEVICES.search(line):
            continue
        if len(row) != len(CSV_QUERY_FIELDS):
            raise SourceParseError(tool, f"line {n}: expected {len(CSV_QUERY_FIELDS)} fields, got {len(row)}")
        index_text, uuid, name, bus, util = (c.strip() for c in row)
        index = as_int(index_text)
        if index is None or not index_text.isdigit():
            raise SourceParseError(tool, f"line {n}: index {index_text!r} is not a number")
        failed = [c for c in (uuid, name, bus, util) if _failed(c)]
        uid = uuid if uuid and not _failed(uuid) else f"{tool}:{bus or index}"
        devices.append(
            Device(
                vendor,
                index,
                uid,
                name,
                map_model(name, rules) if not _failed(name) else None,
                healthy=not failed,
                utilization_pct=None if failed else clamp_pct(as_int(util)),
                note=f"reported {failed[0]}" if failed else None,
            )
        )
    return scan_of(tool, devices)


_TABLE_ROW = re.compile(r"^\|\s*(\d+)\s+(\S.*?)\s*\|(.*)$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_summary_table(tool: str, vendor: str, text: str, rules: ModelRules) -> Scan:
    """The nvidia-smi-style summary table (`| 0  <name>  ... | <bus id> ... | ... |` then metric lines)
    that xpu-smi, mx-smi and mthreads-gmi print; a device line or its metric lines showing ERR! or an
    error text marks that device failed. The process table after the devices is ignored."""
    lines = require_lines(tool, text)
    handles = [h for h in (HANDLE_FAILURE.search(x) for x in lines) if h is not None]
    if not any(line.lstrip().startswith(("+", "|")) for line in lines):
        if any(NO_DEVICES.search(x) for x in lines) and not handles:
            return Scan(tool)
        if not handles:
            raise SourceParseError(tool, "no table in the output")
    blocks: list[list[str]] = []
    prev = ""
    for line in lines:
        if "processes" in line.lower() and not _TABLE_ROW.match(line):
            break
        if _TABLE_ROW.match(line) and (not blocks or prev.lstrip().startswith(("+", "|=", "|-"))):
            blocks.append([line])
        elif blocks and line.startswith("|") and not line.startswith(("|=", "|-")):
            blocks[-1].append(line)
        prev = line
    devices: list[Device] = []
    for block in blocks:
        head = _TABLE_ROW.match(block[0])
        assert head is not None
        cells = _cells(block[0])
        name = re.sub(r"\s+(On|Off|N/A)$", "", head.group(2)).strip()
        bus = next((c.split()[0] for c in cells[1:] if re.match(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:", c)), "")
        body = " ".join(block).lower()
        failed = "err!" in body or "unknown error" in body or "requires reset" in body
        util = None
        if len(block) > 1:
            mcells = _cells(block[1])
            if len(mcells) >= 3 and mcells[2]:
                util = clamp_pct(as_int(mcells[2].split()[0]))
        devices.append(
            Device(
                vendor,
                int(head.group(1)),
                f"bus:{bus}" if bus else f"{tool}:{head.group(1)}",
                name,
                map_model(name, rules),
                healthy=not failed,
                utilization_pct=None if failed else util,
                note="the tool reports an error for this device" if failed else None,
            )
        )
    for n, handle in enumerate(handles, 1):
        bus = handle.group(1).rstrip(":")
        devices.append(Device(vendor, -n, f"bus:{bus}", "unknown", None, healthy=False, note=handle.group(0)))
    if not devices and not any(NO_DEVICES.search(x) for x in lines):
        raise SourceParseError(tool, "the table lists no device rows")
    return scan_of(tool, devices)


def load_json(tool: str, text: str) -> Any:
    """Decoded JSON output, or SourceParseError naming the tool."""
    require_lines(tool, text)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SourceParseError(tool, f"output is not JSON ({type(exc).__name__})") from None


def parse_card_dict(
    tool: str,
    vendor: str,
    text: str,
    rules: ModelRules,
    *,
    product_keys: tuple[str, ...],
    use_keys: tuple[str, ...],
    id_keys: tuple[str, ...] = ("Unique ID", "Serial Number", "PCI Bus"),
    healthy: Callable[[dict[str, Any]], bool] | None = None,
) -> Scan:
    """rocm-smi / hy-smi `--json` output: {"card0": {"Card Series": ..., "GPU use (%)": ...}, ...}."""
    if not text.strip():
        return Scan(tool)
    data = load_json(tool, text)
    if not isinstance(data, dict):
        raise SourceParseError(tool, "expected a JSON object of cards")
    devices: list[Device] = []
    for key, card in data.items():
        m = re.fullmatch(r"card(\d+)", str(key))
        if m is None:
            continue  # "system" and other sections
        if not isinstance(card, dict):
            raise SourceParseError(tool, f"{key}: expected an object")
        product = next((str(card[k]) for k in product_keys if isinstance(card.get(k), str) and card[k]), "")
        use = next((card[k] for k in use_keys if k in card), None)
        ident = next((str(card[k]) for k in id_keys if isinstance(card.get(k), str) and card[k] not in ("", "N/A")), "")
        readable = bool(product) and product != "N/A" and as_int(use) is not None
        ok = readable and (healthy(card) if healthy is not None else True)
        devices.append(
            Device(
                vendor,
                int(m.group(1)),
                ident or f"{tool}:{key}",
                product or "unknown",
                map_model(product, rules) if product else None,
                healthy=ok,
                utilization_pct=clamp_pct(as_int(use)) if ok else None,
                note=None if ok else "the tool could not read this card",
            )
        )
    return scan_of(tool, devices)
