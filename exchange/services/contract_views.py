"""Response and request models of the contract, usage and settlement API (also feed specs/openapi.yaml)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt, StringConstraints

from exchange.services.fields import REQUEST_MODEL, Name
from exchange.services.usage import MAX_BATCH_REPORTS


class ContractView(BaseModel):
    """A contract as its parties see it (the signed record's fields plus its state)."""

    id: str
    round_id: str | None
    order_id: str
    pool_id: str
    offer_id: str | None
    buyer_id: str
    provider_id: str
    model: str
    region: str
    devices: int
    start_at: int
    end_at: int
    buyer_price_fen: int = Field(description="fen per device-hour")
    provider_price_fen: int = Field(description="fen per device-hour")
    fee_bps: int
    billing_mode: str
    billing_terms: dict[str, Any]
    created_at: int
    status: str = Field(description="pending | confirmed | completed | cancelled")
    confirmed_at: int | None
    cancelled_at: int | None
    cancel_reason: str | None
    billable_end: int = Field(description="end of the billable span (cancellation time if cancelled after start)")
    log_index: int | None


class ContractList(BaseModel):
    """The caller's contracts, newest first."""

    items: list[ContractView]


class CancelBody(BaseModel):
    """Body of POST /v1/contracts/{id}/cancel."""

    model_config = REQUEST_MODEL

    reason: Name


class DsseSignature(BaseModel):
    """One DSSE signature."""

    keyid: str | None = None
    sig: str


class DsseEnvelope(BaseModel):
    """A DSSE v1 envelope: base64 payload (RFC 8785 JSON), payload type, signatures."""

    payload: str
    payloadType: str  # the DSSE field name
    signatures: list[DsseSignature]


class UsageSignature(BaseModel):
    """One signature of a usage envelope as sent: a key id and a base64 Ed25519 signature, nothing else."""

    model_config = REQUEST_MODEL

    keyid: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z._:-]+$")] | None = None
    sig: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9+/_-]+={0,2}$")]


class UsageEnvelope(BaseModel):
    """Body of POST /v1/contracts/{id}/usage: a DSSE envelope with exactly the DSSE members."""

    model_config = REQUEST_MODEL

    payload: Annotated[str, StringConstraints(min_length=1, max_length=65536, pattern=r"^[A-Za-z0-9+/_-]+={0,2}$")]
    payloadType: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    signatures: Annotated[list[UsageSignature], Field(min_length=1, max_length=8)]


class UsageBatch(BaseModel):
    """Body of POST /v1/usage/batch: many node-signed usage reports (any of the caller's contracts and
    meters), each a DSSE envelope exactly as POST /v1/contracts/{id}/usage takes it."""

    model_config = REQUEST_MODEL

    reports: Annotated[list[UsageEnvelope], Field(min_length=1, max_length=MAX_BATCH_REPORTS)]


class UsageBatchItem(BaseModel):
    """The outcome of one report of a batch (`index` = its place in `reports`)."""

    index: int
    status: Literal["accepted", "duplicate", "refused"]
    contract_id: str | None = Field(description="the contract the payload names (null when undecodable)")
    id: str | None = Field(default=None, description="the stored report (accepted, duplicate)")
    meter_id: str | None = None
    seq: int | None = None
    flags: list[str] = Field(default_factory=list, description="gap | overlap | out_of_order")
    log_index: int | None = None
    error: dict[str, Any] | None = Field(
        default=None, description="refused: the problem the single-report endpoint answers (code, message, reason)"
    )


class UsageBatchResult(BaseModel):
    """Per-report results of a batch and their counts; the accepted reports committed together."""

    results: list[UsageBatchItem]
    accepted: int
    duplicate: int
    refused: int


class UsageView(BaseModel):
    """A stored usage report; `status` is 'duplicate' when an identical report was sent again."""

    id: str
    contract_id: str
    meter_id: str
    seq: int
    period_start: int
    period_end: int
    device_minutes: int
    availability_bps: int
    status: str
    flags: list[str] = Field(description="gap | overlap | out_of_order")
    log_index: int | None
    settlement_id: str | None
    envelope: DsseEnvelope = Field(description="the node-signed envelope, countersigned by the exchange")
    created_at: int


class UsageList(BaseModel):
    """Usage reports of a contract by meter and sequence number."""

    items: list[UsageView]


class SettlementView(BaseModel):
    """A signed settlement record: postings for one contract period (buyer debit = provider credit + fee)."""

    id: str
    contract_id: str
    batch_id: str
    period_start: int
    period_end: int
    revision: int
    billing_mode: str
    device_minutes: int
    buyer_debit_fen: int
    provider_credit_fen: int
    fee_fen: int
    usage_ids: list[str]
    detail: dict[str, Any]
    supersedes_id: str | None
    created_at: int
    log_index: int | None
    envelope: DsseEnvelope | None


class SettlementList(BaseModel):
    """Settlement records by contract, period and revision."""

    items: list[SettlementView]


class SettlementRun(BaseModel):
    """Body of POST /v1/settlements/run: settle what was due by `as_of` (default: now)."""

    model_config = REQUEST_MODEL

    as_of: StrictInt | None = Field(default=None, ge=0, le=2**53 - 1)


class BatchView(BaseModel):
    """What one settlement run wrote (batch_id is null when nothing was due)."""

    batch_id: str | None
    as_of: int
    count: int
    records: list[SettlementView]
