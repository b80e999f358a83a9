"""Wire models of x402 (v1 and v2), validated at the edge so hostile terms fail loudly."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from blockrun_mcp.money import parse_atomic


class ResourceInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str = ""
    description: str = ""
    mimeType: str = ""


class PaymentRequirement(BaseModel):
    """One entry of `accepts`. `raw` keeps the exact JSON received so it can be echoed unchanged."""

    model_config = ConfigDict(extra="allow")

    scheme: str
    network: str
    amount: str = Field(description="atomic USDC units as a decimal string")
    asset: str
    payTo: str
    maxTimeoutSeconds: int = 300
    extra: dict[str, Any] | None = None
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True, repr=False)

    @property
    def amount_atomic(self) -> int | None:
        """The amount as an int, or None when it is not plain ASCII digits."""
        return parse_atomic(self.amount)

    @classmethod
    def from_wire(cls, data: Any, *, version: int) -> PaymentRequirement:
        if not isinstance(data, dict):
            raise ValueError("a payment requirement is not a JSON object")
        fields = dict(data)
        if version == 1 and "amount" not in fields and "maxAmountRequired" in fields:
            fields["amount"] = fields["maxAmountRequired"]
        requirement = cls.model_validate(fields)
        requirement.raw = data
        return requirement


class PaymentRequired(BaseModel):
    """The terms of a 402: which payments the server accepts for which resource."""

    x402Version: int
    resource: ResourceInfo = Field(default_factory=ResourceInfo)
    accepts: list[PaymentRequirement]
    extensions: dict[str, Any] | None = None
    error: str | None = None
    # Why each unreadable entry of `accepts` was left out (the readable ones are in `accepts`).
    unreadable: list[str] = Field(default_factory=list, exclude=True, repr=False)
    raw_resource: dict[str, Any] | None = Field(default=None, exclude=True, repr=False)


class Authorization(BaseModel):
    """EIP-3009 authorization as it travels: every value a string."""

    from_: str = Field(alias="from")
    to: str
    value: str
    validAfter: str
    validBefore: str
    nonce: str

    model_config = ConfigDict(populate_by_name=True)


class SettlementReceipt(BaseModel):
    """What the server says about settlement (PAYMENT-RESPONSE or the legacy headers)."""

    model_config = ConfigDict(extra="allow")

    success: bool = True
    transaction: str | None = None
    network: str | None = None
    payer: str | None = None
    amount: str | None = None
    errorReason: str | None = None
