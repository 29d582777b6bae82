"""`hetex order template [--billing MODE]`: a commented order (YAML) that validates as is; submit it with
`hetex order submit --file order.yaml` after editing. Field meanings: DESIGN.md section 6."""

from __future__ import annotations

import argparse

BILLING_MODES = ("per_minute", "compute_tier", "subscription", "project")

_HEAD = """\
# hetex order ({mode}); submit with: hetex order submit --file order.yaml
# Exactly one of quantity_devices / quantity_scu, and one of limit_fen_per_device_hour / limit_fen_per_scu_hour.
quantity_devices: 8                # devices wanted (or quantity_scu: "40", A100-equivalents per hour)
models: [HW-910B3, NV-H100-SXM]    # acceptable catalogue models (`hetex cri` / GET /v1/catalogue/accelerators)
constraints:                       # optional: filters instead of / besides models
  min_memory_gb: 64
  domestic_only: false
regions: [CN-GZ, CN-SH, CN-NM]     # allowed regions (data residency); leave out for any
# home_region: CN-SH               # with max_latency_ms: only regions that close
# max_latency_ms: 15
all_or_nothing: true               # false: accept a partial fill of at least min_fill_devices
max_pools: 2                       # spread over at most this many pools
same_model: true                   # every device the same model
colocation: any                    # site | region | any
duration_seconds: 28800            # 8 h lease
# start_earliest: 1796300000       # epoch seconds; default: the next clearing slot
# start_latest: 1796310000
limit_fen_per_device_hour:         # the most you pay, fen per device-hour, per model ('*': any model)
  HW-910B3: 1500
  NV-H100-SXM: 3000
billing_mode: {mode}
"""

_TERMS = {
    "per_minute": "# per_minute: billed on signed usage reports, by the minute; no billing_terms\n",
    "compute_tier": "billing_terms:\n  tier_table: standard           # standard | reserved | premium\n",
    "subscription": "billing_terms:\n  period: monthly                # monthly | yearly, prorated\n",
    "project": (
        "billing_terms:\n"
        "  fixed_price_fen: 5000000        # 50,000 yuan for the whole project\n"
        "  milestones:                     # shares in basis points, adding up to 10000\n"
        "    - {name: data ready, share_bps: 3000}\n"
        "    - {name: training done, share_bps: 7000}\n"
    ),
}


def template(mode: str) -> str:
    """The commented YAML template for one billing mode."""
    return _HEAD.format(mode=mode) + _TERMS[mode]


def register_template(osub: argparse._SubParsersAction) -> None:
    """Add `order template` to the `order` group."""
    t = osub.add_parser("template", help="print a commented example order (YAML) that validates")
    t.add_argument("--billing", choices=BILLING_MODES, default="per_minute", help="billing mode (default per_minute)")
    t.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    t.set_defaults(func=run_template)


def run_template(args: argparse.Namespace) -> int:
    """Print the template."""
    text = template(args.billing)
    if args.output == "json":
        import json

        import yaml

        print(json.dumps(yaml.safe_load(text), indent=2))
    else:
        print(text, end="")
    return 0
