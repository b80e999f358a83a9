"""Fault switches: the ways a real gateway (or the proxy in front of it) misbehaves, on demand.

All are off by default. Tests turn them on with `SandboxState.set_faults(...)` or over HTTP with
`POST /_sandbox/faults`, so a client can be proven to survive each one.

The chain switches (`chain_time_offset_seconds`, `rpc_down`, `rpc_garbage`) describe the sandbox's
stand-in chain as a whole: `endpoints` does not scope them and `times` does not count them.
"""

from __future__ import annotations

from collections.abc import Callable
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
    "pricier_first",
    "malformed_first",
]
TrickleAt = Literal["402", "paid_402", "answer", "poll"]
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


class CountOnce:
    """Counts one request against `times` the first time it is called, never again.

    `times` counts requests, not faults: a request that both omits its receipt and garbles its
    body uses up one. Make one per request around `SandboxState.fault_hit`.
    """

    def __init__(self, count: Callable[[], None]) -> None:
        self._count = count
        self._counted = False

    def __call__(self) -> None:
        if not self._counted:
            self._counted = True
            self._count()


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
    hostile_terms: HostileTermsKind | None = Field(
        default=None,
        description="terms a client must refuse or choose among; 'pricier_first' lists an "
        "honest option at 1.4x the quote before the real one (both payable), 'malformed_first' "
        "an option whose amount is written in non-ASCII digits before the real one",
    )
    force_payment_code: PaymentCode | None = None
    quote_percent: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="402 terms ask this percent of the honest quote (an overcharging gateway; "
        "the payment is then verified against the inflated terms it issued)",
    )
    quote_models: list[str] | None = Field(
        default=None, description="the models quote_percent applies to; None = all"
    )
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
    receipt_amount: str | None = Field(
        default=None,
        description="the `amount` a v2 PAYMENT-RESPONSE receipt claims (chat, images, a completed "
        "video poll); the full signed amount is still settled",
    )
    image_count: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="an image answer carries this many `data` entries, whatever `n` was asked "
        "(each a distinct sandbox media URL, or `media_url` when set)",
    )
    trickle_seconds: float | None = Field(
        default=None,
        gt=0,
        description="the response chosen by `trickle_at` sends its headers at once, then one "
        "body byte every this many seconds, forever (until the client disconnects)",
    )
    trickle_at: TrickleAt = Field(
        default="answer",
        description="'402': the unpaid 402 (terms header intact); 'paid_402': the 402 answered to "
        "a paid request (requote_after_payment, force_payment_code); 'answer': a paid chat or image "
        "answer, after settlement; 'poll': every video poll answer",
    )
    # The stand-in chain, answered at POST /rpc (see the module docstring).
    chain_time_offset_seconds: int = Field(
        default=0,
        description="the chain clock runs this far from the wall clock: authorizations expire "
        "(for verify, settle and eth_getBlockByNumber) without waiting. The clock never runs "
        "backwards: lowering this holds it where it was until the wall clock catches up",
    )
    rpc_down: bool = Field(default=False, description="POST /rpc answers HTTP 503")
    rpc_garbage: bool = Field(
        default=False,
        description="POST /rpc answers 200 with unusable results ('0x02', malformed hex)",
    )

    def applies_to(self, path: str) -> bool:
        """Whether the endpoint-scoped faults hit a request for `path` (a full path or suffix)."""
        if self.endpoints is None:
            return True
        return any(path.rstrip("/").endswith(suffix.rstrip("/")) for suffix in self.endpoints)

    def scoped_to(self, path: str) -> Faults:
        """The faults as one request on `path` sees them: endpoint-scoped ones off if it is not listed.

        Model latency, the video switches and the chain describe the sandbox as a whole, so
        they stay.
        """
        if self.applies_to(path):
            return self.model_copy()
        return Faults(
            model_latency_seconds=self.model_latency_seconds,
            video_fail_mid_poll=self.video_fail_mid_poll,
            video_polls_before_done=self.video_polls_before_done,
            video_timeout_seconds=self.video_timeout_seconds,
            chain_time_offset_seconds=self.chain_time_offset_seconds,
            rpc_down=self.rpc_down,
            rpc_garbage=self.rpc_garbage,
        )

    def without_counted(self) -> Faults:
        """A copy with every counted fault switched off (what remains once `times` runs out)."""
        defaults = Faults()
        update = {name: getattr(defaults, name) for name in COUNTED_FAULTS}
        update["times"] = None
        return self.model_copy(update=update)
