"""Fault switches: the ways a real gateway (or the proxy in front of it) misbehaves, on demand.

All are off by default. Tests turn them on with `SandboxState.set_faults(...)` or over HTTP with
`POST /_sandbox/faults`, so a client can be proven to survive each one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MalformedTermsKind = Literal["garbage", "not_json", "no_accepts", "huge", "deep", "missing"]
HostileTermsKind = Literal[
    "wrong_asset",
    "wrong_domain",
    "wrong_version",
    "wrong_network",
    "upto_only",
    "overpriced",
    "long_timeout",
    "v1",
    "payto_changes",
]
PaymentCode = Literal["PAYMENT_INVALID", "PAYMENT_UNFUNDED", "PAYMENT_REPLAY"]

# The faults that `times` counts down. Hostile terms are left out on purpose: a client pays
# the terms it was given on its retry, so they must stay stable between the 402 and the retry.
COUNTED_FAULTS: tuple[str, ...] = (
    "status_before_payment",
    "status_after_payment",
    "status_after_settlement",
    "drop_after_settlement",
    "force_payment_code",
    "malformed_success_body",
    "omit_receipt",
    "stream_cut_after_chunks",
    "malformed_402",
)


class Faults(BaseModel):
    """Which misbehaviours are switched on. `extra="forbid"` so a typo in a test fails loudly."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    endpoints: list[str] | None = Field(
        default=None,
        description="path suffixes the faults apply to, e.g. '/v1/chat/completions'; None = all",
    )
    times: int | None = Field(
        default=None,
        ge=1,
        description="requests the counted faults hit before switching themselves off; None = all",
    )
    status_before_payment: int | None = Field(default=None, ge=400, le=599)
    status_after_payment: int | None = Field(default=None, ge=400, le=599)
    status_after_settlement: int | None = Field(default=None, ge=400, le=599)
    drop_after_settlement: bool = False
    delay_seconds: float = Field(default=0.0, ge=0)
    model_latency_seconds: float = Field(default=0.0, ge=0)
    malformed_402: MalformedTermsKind | None = None
    hostile_terms: HostileTermsKind | None = None
    force_payment_code: PaymentCode | None = None
    malformed_success_body: bool = False
    omit_receipt: bool = False
    stream_cut_after_chunks: int | None = Field(default=None, ge=0)
    video_fail_mid_poll: bool = False
    video_polls_before_done: int = Field(default=2, ge=0)
    video_timeout_seconds: int | None = Field(
        default=None, ge=1, description="maxTimeoutSeconds of video quotes (default 600)"
    )
    # Hostile answers, for proving what the client refuses to do with them.
    requote_after_payment: bool = Field(
        default=False, description="answer a paid request with a fresh 402 instead of settling"
    )
    media_url: str | None = Field(
        default=None, description="the URL image answers and completed videos carry instead"
    )
    huge_success_body_bytes: int | None = Field(
        default=None, ge=1, description="a paid answer streams this many bytes of filler"
    )
    poll_url: str | None = Field(default=None, description="the poll_url video job answers carry")

    def applies_to(self, path: str) -> bool:
        """Whether the endpoint-scoped faults hit a request for `path` (a full path or suffix)."""
        if self.endpoints is None:
            return True
        return any(path.rstrip("/").endswith(suffix.rstrip("/")) for suffix in self.endpoints)

    def scoped_to(self, path: str) -> Faults:
        """The faults as one request on `path` sees them: endpoint-scoped ones off if it is not listed.

        Model latency and the video switches describe the sandbox as a whole, so they stay.
        """
        if self.applies_to(path):
            return self.model_copy()
        return Faults(
            model_latency_seconds=self.model_latency_seconds,
            video_fail_mid_poll=self.video_fail_mid_poll,
            video_polls_before_done=self.video_polls_before_done,
            video_timeout_seconds=self.video_timeout_seconds,
        )

    def without_counted(self) -> Faults:
        """A copy with every counted fault switched off (what remains once `times` runs out)."""
        defaults = Faults()
        update = {name: getattr(defaults, name) for name in COUNTED_FAULTS}
        update["times"] = None
        return self.model_copy(update=update)
