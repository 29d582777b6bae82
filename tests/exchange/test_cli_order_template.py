"""`hetex order template` prints, for every billing mode, a commented order that validates as is."""

from __future__ import annotations

import json

import pytest
import yaml

from exchange.cli.main import main
from exchange.cli.order_template import BILLING_MODES
from exchange.services.orders import OrderSpec


@pytest.mark.parametrize("mode", BILLING_MODES)
def test_template_validates(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["order", "template", "--billing", mode]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# hetex order") and text.count("#") > 10  # commented
    spec = OrderSpec.model_validate(yaml.safe_load(text))
    assert spec.billing_mode == mode
    assert main(["order", "template", "--billing", mode, "-o", "json"]) == 0
    assert OrderSpec.model_validate(json.loads(capsys.readouterr().out)) == spec
