"""Accelerator catalogue: coverage, provenance of every figure, SCU and memory lens rules, validation."""

from __future__ import annotations

import copy
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from identifiers.catalogue import (
    NUMERIC_FIGURES,
    TEXT_FIGURES,
    Catalogue,
    load_catalogue,
    parse_catalogue,
)
from identifiers.cri import is_model_code
from identifiers.errors import CatalogueError, NotFoundError, UnknownModelError
from identifiers.specs import specs_dir

REQUIRED_VENDORS = {
    "NVIDIA",
    "AMD",
    "Huawei",
    "Cambricon",
    "Hygon",
    "Kunlunxin",
    "MetaX",
    "Moore Threads",
    "Iluvatar CoreX",
    "Enflame",
    "Biren",
    "T-Head",
}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    with (specs_dir() / "accelerators.yaml").open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def test_coverage(catalogue: Catalogue) -> None:
    assert len(catalogue) >= 25
    assert len(catalogue.vendors) >= 10
    assert set(catalogue.vendors) >= REQUIRED_VENDORS
    assert len(set(catalogue.codes)) == len(catalogue)
    assert all(is_model_code(code) for code in catalogue.codes)
    for code in ("NV-H100-SXM", "HW-910B3", "CAM-MLU590"):
        assert code in catalogue


def test_every_figure_has_a_source(catalogue: Catalogue) -> None:
    for model in catalogue:
        for name in (*NUMERIC_FIGURES, *TEXT_FIGURES):
            fig = model.figure(name)
            if fig.value is not None:
                assert fig.sources, f"{model.code}.{name} has no source"
            for key in fig.sources:
                assert key in catalogue.sources, f"{model.code}.{name} cites {key}"
        assert model.sources, f"{model.code} cites nothing"


def test_unconfirmed_compute_means_no_scu(catalogue: Catalogue) -> None:
    unconfirmed = [m for m in catalogue if m.figure("fp16_dense_tflops").unconfirmed]
    assert unconfirmed, "the reference marks several compute figures unconfirmed"
    for model in unconfirmed:
        assert model.scu is None
        assert "unconfirmed" in model.scu_note
    for model in catalogue:
        if model.fp16_dense_tflops is None:
            assert model.scu is None and model.scu_note.startswith("no SCU")


def test_scu_and_memory_lens_arithmetic(catalogue: Catalogue) -> None:
    quantum = Decimal("0.0001")
    with_scu = [m for m in catalogue if m.scu is not None]
    assert len(with_scu) >= 10
    for model in with_scu:
        assert model.fp16_dense_tflops is not None
        expected = (model.fp16_dense_tflops / Decimal(312)).quantize(quantum, rounding=ROUND_HALF_EVEN)
        assert model.scu == expected
        assert isinstance(model.scu, Decimal)
    for model in catalogue:
        if model.memory_lens is not None:
            assert model.memory_bandwidth_gbs is not None
            assert model.memory_lens == (model.memory_bandwidth_gbs / Decimal(2039)).quantize(quantum)
    a100 = catalogue.get("NV-A100-80G-SXM")
    assert a100.scu == Decimal("1.0000") and a100.memory_lens == Decimal("1.0000")
    # Reference table of the lens examples (rounded to two places there).
    assert catalogue.get("NV-H100-SXM").scu == Decimal("3.1712")
    assert round(catalogue.get("NV-H20").memory_lens or 0, 2) == Decimal("1.96")


def test_dense_not_sparse_for_nvidia(catalogue: Catalogue) -> None:
    # The NVIDIA headline 1,979 BF16 for H100 is sparse; the catalogue must hold the dense figure.
    assert catalogue.get("NV-H100-SXM").fp16_dense_tflops == Decimal("989.4")


def test_domestic_flags_and_plugins(catalogue: Catalogue) -> None:
    for model in catalogue:
        assert model.domestic == (model.vendor not in {"NVIDIA", "AMD"})
    assert catalogue.get("NV-H100-SXM").device_plugin_resource == "nvidia.com/gpu"
    assert catalogue.get("HW-910B3").device_plugin_resource == "huawei.com/Ascend910"
    assert catalogue.get("AMD-MI300X").device_plugin_resource == "amd.com/gpu"
    assert catalogue.get("CAM-MLU370-X8").device_plugin_resource == "cambricon.com/mlu"


def test_get_unknown_model(catalogue: Catalogue) -> None:
    with pytest.raises(UnknownModelError) as info:
        catalogue.get("NV-B999")
    assert info.value.code == "unknown_model"
    assert isinstance(info.value, NotFoundError)


def test_vendors_and_families_ordered(catalogue: Catalogue) -> None:
    assert catalogue.vendors[0] == catalogue.models[0].vendor
    assert len(catalogue.families) == len(set(catalogue.families))
    assert all(m.vendor == "Huawei" for m in catalogue.by_vendor("Huawei"))
    assert catalogue.by_family("Hopper")


def test_to_dict_is_json_ready(catalogue: Catalogue) -> None:
    import json

    body = json.loads(json.dumps([m.to_dict() for m in catalogue]))
    h100 = next(m for m in body if m["code"] == "NV-H100-SXM")
    assert h100["scu"] == "3.1712"
    assert h100["fp16_dense_tflops"]["value"] == 989.4
    assert h100["fp16_dense_tflops"]["sources"]


def test_load_is_cached_and_path_override(tmp_path: Path, raw: dict[str, Any]) -> None:
    assert load_catalogue() is load_catalogue()
    small = copy.deepcopy(raw)
    small["models"] = small["models"][:2]
    path = tmp_path / "acc.yaml"
    path.write_text(yaml.safe_dump(small, allow_unicode=True), encoding="utf-8")
    assert len(load_catalogue(path)) == 2


def _broken(raw: dict[str, Any], index: int, field: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    data["models"][index][field] = value
    return data


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("memory_gb", {"value": 80}, "no source"),
        ("memory_gb", {"value": -1, "sources": ["N1"]}, "positive"),
        ("memory_gb", {"value": "lots", "sources": ["N1"]}, "number"),
        ("memory_gb", {"value": 80, "sources": ["NOPE"]}, "unknown source"),
        ("memory_gb", {"value": 80, "sources": ["N1"], "unconfirmed": "yes"}, "unconfirmed"),
        ("memory_gb", {"value": 80, "sources": ["N1"], "colour": "red"}, "unknown keys"),
        ("code", "h100", "code"),
        ("domestic", "no", "domestic"),
        ("vendor", "", "vendor"),
    ],
)
def test_validation_errors_name_model_and_field(raw: dict[str, Any], field: str, value: Any, fragment: str) -> None:
    data = _broken(raw, 0, field, value)
    with pytest.raises(CatalogueError) as info:
        parse_catalogue(data)
    message = info.value.message
    assert fragment in message
    assert field in message
    if field != "code":
        assert raw["models"][0]["code"] in message


def test_missing_figure_and_duplicates_are_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    del data["models"][3]["fp16_dense_tflops"]
    with pytest.raises(CatalogueError, match="fp16_dense_tflops"):
        parse_catalogue(data)
    data = copy.deepcopy(raw)
    data["models"].append(copy.deepcopy(data["models"][0]))
    with pytest.raises(CatalogueError, match="duplicated"):
        parse_catalogue(data)
    with pytest.raises(CatalogueError):
        parse_catalogue({"schema": "other", "sources": {}, "models": []})


def test_codes_one_separator_apart_are_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    twin = copy.deepcopy(data["models"][0])
    twin["code"] = "NV-A100-40GASXM"  # NV-A100-40G-SXM with one '-' turned into a letter
    data["models"].append(twin)
    with pytest.raises(CatalogueError, match="separator"):
        parse_catalogue(data)
