"""Accelerator catalogue: models with sourced figures and the two normalized-compute lenses (SCU, memory).

Data lives in specs/accelerators.yaml. `parse_catalogue` is pure; `load_catalogue` reads the file.
SCU (compute lens) = dense FP16 TFLOPS / 312 and memory lens = bandwidth GB/s / 2039 (an A100 80GB),
both quantized to 0.0001 (half-even). A model whose figure is unconfirmed or missing has no lens value
until measured, and `scu_note` / `memory_lens_note` say why.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from identifiers.cri import is_model_code
from identifiers.errors import CatalogueError, UnknownModelError
from identifiers.specs import specs_dir

SCU_REFERENCE_TFLOPS = Decimal(312)
MEMORY_REFERENCE_GBS = Decimal(2039)
LENS_QUANTUM = Decimal("0.0001")
SCHEMA = "hetex.accelerators/1"

NUMERIC_FIGURES = (
    "memory_gb",
    "memory_bandwidth_gbs",
    "fp16_dense_tflops",
    "fp8_dense_tflops",
    "int8_dense_tops",
)
TEXT_FIGURES = ("interconnect", "device_plugin_resource")
_MODEL_KEYS = frozenset(
    {"code", "vendor", "family", "name", "domestic", "software_stack", "memory_type", "notes"}
    | set(NUMERIC_FIGURES)
    | set(TEXT_FIGURES)
)
_FIGURE_KEYS = frozenset({"value", "sources", "unconfirmed", "approximate", "derived", "note"})


@dataclass(frozen=True, slots=True)
class Source:
    """Where a figure comes from: a short key, a title and an address."""

    key: str
    title: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Figure:
    """One catalogue figure with its provenance flags; value None means unknown or not disclosed."""

    value: Decimal | str | None
    sources: tuple[str, ...] = ()
    unconfirmed: bool = False
    approximate: bool = False
    derived: bool = False
    note: str | None = None

    @property
    def usable(self) -> bool:
        """True when the figure is known and not flagged unconfirmed."""
        return self.value is not None and not self.unconfirmed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (Decimals as JSON numbers for display)."""
        value: Any = self.value
        if isinstance(value, Decimal):
            value = int(value) if value == value.to_integral_value() else float(value)
        out: dict[str, Any] = {"value": value, "sources": list(self.sources)}
        for flag in ("unconfirmed", "approximate", "derived"):
            if getattr(self, flag):
                out[flag] = True
        if self.note:
            out["note"] = self.note
        return out


def _lens(figure: Figure, reference: Decimal, lens: str, what: str) -> tuple[Decimal | None, str]:
    """Ratio of a figure to the reference device, or None with the reason."""
    if figure.value is None or figure.unconfirmed:
        state = "unconfirmed" if figure.unconfirmed else "not published"
        why = f" ({figure.note})" if figure.note else ""
        return None, f"no {lens} until measured: {what} is {state}{why}"
    assert isinstance(figure.value, Decimal)
    ratio = (figure.value / reference).quantize(LENS_QUANTUM, rounding=ROUND_HALF_EVEN)
    qualifiers = [q for q in ("approximate", "derived") if getattr(figure, q)]
    qualifier = f" ({', '.join(qualifiers)} figure)" if qualifiers else ""
    return ratio, f"{what} {figure.value} / {reference}{qualifier}"


@dataclass(frozen=True, slots=True)
class AcceleratorModel:
    """One accelerator model: identity, software, device-plugin resource and sourced figures."""

    code: str
    vendor: str
    family: str
    name: str
    domestic: bool
    software_stack: str | None
    memory_type: str | None
    figures: Mapping[str, Figure] = field(repr=False)
    notes: str | None = None

    def figure(self, name: str) -> Figure:
        """The named figure (e.g. 'fp16_dense_tflops') with its sources and flags."""
        return self.figures[name]

    def _number(self, name: str) -> Decimal | None:
        value = self.figures[name].value
        return value if isinstance(value, Decimal) else None

    @property
    def memory_gb(self) -> Decimal | None:
        """Device memory in GB (check `figure('memory_gb').unconfirmed`)."""
        return self._number("memory_gb")

    @property
    def memory_bandwidth_gbs(self) -> Decimal | None:
        """Peak memory bandwidth in GB/s."""
        return self._number("memory_bandwidth_gbs")

    @property
    def fp16_dense_tflops(self) -> Decimal | None:
        """Dense FP16/BF16 TFLOPS (no structured sparsity)."""
        return self._number("fp16_dense_tflops")

    @property
    def fp8_dense_tflops(self) -> Decimal | None:
        """Dense FP8 TFLOPS where published."""
        return self._number("fp8_dense_tflops")

    @property
    def int8_dense_tops(self) -> Decimal | None:
        """Dense INT8 TOPS where published."""
        return self._number("int8_dense_tops")

    @property
    def interconnect(self) -> str | None:
        """Scale-up interconnect description."""
        value = self.figures["interconnect"].value
        return value if isinstance(value, str) else None

    @property
    def device_plugin_resource(self) -> str | None:
        """Kubernetes extended-resource name of the vendor device plugin (e.g. nvidia.com/gpu)."""
        value = self.figures["device_plugin_resource"].value
        return value if isinstance(value, str) else None

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source key cited by this model's figures, in first-use order."""
        seen: dict[str, None] = {}
        for fig in self.figures.values():
            for key in fig.sources:
                seen.setdefault(key, None)
        return tuple(seen)

    @property
    def scu(self) -> Decimal | None:
        """Standard compute units per device: dense FP16 / 312, None while unconfirmed or missing."""
        return _lens(self.figures["fp16_dense_tflops"], SCU_REFERENCE_TFLOPS, "SCU", "dense FP16 TFLOPS")[0]

    @property
    def scu_note(self) -> str:
        """How the SCU was computed, or why there is none."""
        return _lens(self.figures["fp16_dense_tflops"], SCU_REFERENCE_TFLOPS, "SCU", "dense FP16 TFLOPS")[1]

    @property
    def memory_lens(self) -> Decimal | None:
        """Memory bandwidth relative to an A100 80GB (/ 2039 GB/s), None while unconfirmed or missing."""
        return _lens(
            self.figures["memory_bandwidth_gbs"], MEMORY_REFERENCE_GBS, "memory lens", "memory bandwidth GB/s"
        )[0]

    @property
    def memory_lens_note(self) -> str:
        """How the memory lens was computed, or why there is none."""
        return _lens(
            self.figures["memory_bandwidth_gbs"], MEMORY_REFERENCE_GBS, "memory lens", "memory bandwidth GB/s"
        )[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the catalogue API (lenses as decimal strings to keep them exact)."""
        out: dict[str, Any] = {
            "code": self.code,
            "vendor": self.vendor,
            "family": self.family,
            "name": self.name,
            "domestic": self.domestic,
            "software_stack": self.software_stack,
            "memory_type": self.memory_type,
        }
        for name in (*NUMERIC_FIGURES, *TEXT_FIGURES):
            out[name] = self.figures[name].to_dict()
        out["scu"] = None if self.scu is None else str(self.scu)
        out["scu_note"] = self.scu_note
        out["memory_lens"] = None if self.memory_lens is None else str(self.memory_lens)
        out["memory_lens_note"] = self.memory_lens_note
        out["sources"] = list(self.sources)
        if self.notes:
            out["notes"] = self.notes
        return out


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The ordered set of accelerator models and the sources they cite."""

    models: tuple[AcceleratorModel, ...]
    sources: Mapping[str, Source] = field(repr=False)
    _by_code: Mapping[str, AcceleratorModel] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Index models by code."""
        object.__setattr__(self, "_by_code", {m.code: m for m in self.models})

    def get(self, code: str) -> AcceleratorModel:
        """The model with this code; raises UnknownModelError."""
        try:
            return self._by_code[code]
        except KeyError:
            raise UnknownModelError(
                f"accelerator model {code!r} is not in the catalogue", field="model", model=code
            ) from None

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self) -> Iterator[AcceleratorModel]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    @property
    def codes(self) -> tuple[str, ...]:
        """Model codes in catalogue order."""
        return tuple(m.code for m in self.models)

    @property
    def vendors(self) -> tuple[str, ...]:
        """Vendors in order of first appearance."""
        return tuple(dict.fromkeys(m.vendor for m in self.models))

    @property
    def families(self) -> tuple[str, ...]:
        """Architecture families in order of first appearance."""
        return tuple(dict.fromkeys(m.family for m in self.models))

    def by_vendor(self, vendor: str) -> tuple[AcceleratorModel, ...]:
        """Models of one vendor, in catalogue order."""
        return tuple(m for m in self.models if m.vendor == vendor)

    def by_family(self, family: str) -> tuple[AcceleratorModel, ...]:
        """Models of one architecture family, in catalogue order."""
        return tuple(m for m in self.models if m.family == family)


def _fail(where: str, field_name: str, problem: str) -> CatalogueError:
    return CatalogueError(f"{where}: field {field_name!r} {problem}", field=field_name, model=where)


def _text(raw: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
    value = raw.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, key, "must be a non-empty string")
    return value


def _figure(raw: Any, name: str, where: str, known_sources: Mapping[str, Source], numeric: bool) -> Figure:
    if not isinstance(raw, Mapping):
        raise _fail(where, name, "must be a mapping with value and sources")
    extra = set(raw) - _FIGURE_KEYS
    if extra:
        raise _fail(where, name, f"has unknown keys {sorted(extra)}")
    if "value" not in raw:
        raise _fail(where, name, "needs a value (null when unknown)")
    value_raw = raw["value"]
    value: Decimal | str | None
    if value_raw is None:
        value = None
    elif numeric:
        if isinstance(value_raw, bool) or not isinstance(value_raw, int | float | str):
            raise _fail(where, name, f"value must be a number, got {value_raw!r}")
        try:
            value = Decimal(str(value_raw))
        except InvalidOperation:
            raise _fail(where, name, f"value must be a number, got {value_raw!r}") from None
        if not value.is_finite() or value <= 0:
            raise _fail(where, name, f"value must be a positive number, got {value_raw!r}")
    else:
        if not isinstance(value_raw, str) or not value_raw.strip():
            raise _fail(where, name, "value must be a non-empty string")
        value = value_raw
    sources_raw = raw.get("sources", [])
    if not isinstance(sources_raw, list) or not all(isinstance(s, str) for s in sources_raw):
        raise _fail(where, name, "sources must be a list of source keys")
    for key in sources_raw:
        if key not in known_sources:
            raise _fail(where, name, f"cites unknown source {key!r}")
    if value is not None and not sources_raw:
        raise _fail(where, name, "has a value but no source")
    flags: dict[str, bool] = {}
    for flag in ("unconfirmed", "approximate", "derived"):
        flag_value = raw.get(flag, False)
        if not isinstance(flag_value, bool):
            raise _fail(where, name, f"flag {flag} must be true or false")
        flags[flag] = flag_value
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        raise _fail(where, name, "note must be a string")
    return Figure(value=value, sources=tuple(sources_raw), note=note, **flags)


def _model(raw: Any, index: int, known_sources: Mapping[str, Source]) -> AcceleratorModel:
    if not isinstance(raw, Mapping):
        raise CatalogueError(f"models[{index}] must be a mapping", field="models")
    code = raw.get("code")
    where = code if isinstance(code, str) else f"models[{index}]"
    if not isinstance(code, str) or not is_model_code(code):
        raise _fail(where, "code", "must be a model code like NV-H100-SXM (specs/cri.abnf rule `model`)")
    extra = set(raw) - _MODEL_KEYS
    if extra:
        raise _fail(where, sorted(extra)[0], "is not a catalogue field")
    domestic = raw.get("domestic")
    if not isinstance(domestic, bool):
        raise _fail(where, "domestic", "must be true or false")
    figures: dict[str, Figure] = {}
    for name in NUMERIC_FIGURES:
        if name not in raw:
            raise _fail(where, name, "is missing (use value: null when unknown)")
        figures[name] = _figure(raw[name], name, where, known_sources, numeric=True)
    for name in TEXT_FIGURES:
        if name not in raw:
            raise _fail(where, name, "is missing (use value: null when unknown)")
        figures[name] = _figure(raw[name], name, where, known_sources, numeric=False)
    return AcceleratorModel(
        code=code,
        vendor=_text(raw, "vendor", where) or "",
        family=_text(raw, "family", where) or "",
        name=_text(raw, "name", where) or "",
        domestic=domestic,
        software_stack=_text(raw, "software_stack", where, optional=True),
        memory_type=_text(raw, "memory_type", where, optional=True),
        figures=figures,
        notes=_text(raw, "notes", where, optional=True),
    )


def _separator_confusable(a: str, b: str) -> bool:
    """True when a and b differ in exactly one position and one of the two characters there is '-'."""
    if len(a) != len(b):
        return False
    diffs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    return len(diffs) == 1 and "-" in diffs[0]


def parse_catalogue(data: Mapping[str, Any]) -> Catalogue:
    """Validate catalogue data (as loaded from YAML) and build a Catalogue; raises CatalogueError."""
    if not isinstance(data, Mapping):
        raise CatalogueError("catalogue must be a mapping", field="catalogue")
    if data.get("schema") != SCHEMA:
        raise CatalogueError(f"catalogue schema must be {SCHEMA!r}", field="schema")
    sources_raw = data.get("sources")
    if not isinstance(sources_raw, Mapping):
        raise CatalogueError("catalogue needs a sources mapping", field="sources")
    sources: dict[str, Source] = {}
    for key, entry in sources_raw.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("title"), str):
            raise CatalogueError(f"source {key!r} needs a title", field="sources")
        url = entry.get("url")
        sources[str(key)] = Source(key=str(key), title=entry["title"], url=url if isinstance(url, str) else None)
    models_raw = data.get("models")
    if not isinstance(models_raw, Sequence) or isinstance(models_raw, str) or not models_raw:
        raise CatalogueError("catalogue needs a non-empty models list", field="models")
    models = [_model(raw, i, sources) for i, raw in enumerate(models_raw)]
    seen: set[str] = set()
    for model in models:
        if model.code in seen:
            raise _fail(model.code, "code", "is duplicated")
        seen.add(model.code)
    # A '-' turned into a letter (or back) is invisible to the check character, which skips separators;
    # the catalogue lookup catches it only if no other code is one such edit away.
    codes = [m.code for m in models]
    for i, a in enumerate(codes):
        for b in codes[i + 1 :]:
            if _separator_confusable(a, b):
                raise _fail(b, "code", f"differs from {a!r} only by a separator; one typo would swap them")
    return Catalogue(models=tuple(models), sources=sources)


def _read_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@lru_cache(maxsize=1)
def _default_catalogue() -> Catalogue:
    return parse_catalogue(_read_yaml(specs_dir() / "accelerators.yaml"))


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load the catalogue from `path`, or the packaged specs/accelerators.yaml (cached)."""
    if path is None:
        return _default_catalogue()
    return parse_catalogue(_read_yaml(Path(path)))
