"""Everything the sandbox remembers, behind one lock.

uvicorn serves from a background thread while tests read and change the state from theirs, so
every mutation and every multi-step read takes `lock`.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from blockrun_mcp.money import usd_to_atomic
from blockrun_mcp.sandbox.faults import Faults
from blockrun_mcp.x402.networks import NetworkSpec, network_by_name

# A fixed, valid checksummed address nobody holds a key for: where sandbox payments go.
TREASURY = "0x130d82d2DfCa15271d16F5467C0CCb4b7564d11F"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def checksum(address: str) -> str:
    from eth_utils import to_checksum_address  # slow import: only once payments arrive

    return to_checksum_address(address)


class Settlement(BaseModel):
    """One payment that moved money: what a facilitator would have put on chain."""

    nonce: str
    payer: str
    amount_atomic: int
    tx_hash: str
    endpoint: str
    time: float
    network: str = ""
    pay_to: str = ""


class VerifiedPayment(BaseModel):
    """A payment header that passed every check except the spend-time ones (nonce, balance)."""

    version: int
    payer: str
    pay_to: str
    amount_atomic: int
    nonce: str
    network: str = Field(description="as the requirement named it: CAIP-2 for v2, a name for v1")
    valid_before: int
    payload: dict[str, Any]


class VideoJob(BaseModel):
    id: str
    model: str
    prompt: str
    duration_seconds: float
    endpoint: str
    payment: VerifiedPayment
    polls: int = 0
    status: Literal["queued", "in_progress", "completed", "failed"] = "queued"
    url: str | None = None
    error: str | None = None
    settlement: Settlement | None = None
    created: float = Field(default_factory=time.time)


class IssuedRequirement(BaseModel):
    """A requirement a 402 offered, and the request (path + body digest) it was offered for."""

    request_key: str
    version: int
    requirement: dict[str, Any]


class SandboxState:
    """All mutable state of one sandbox gateway."""

    def __init__(self, network: str = "base", starting_balance_usd: float = 10.0) -> None:
        self.network_spec: NetworkSpec = network_by_name(network)
        self.network = self.network_spec.name
        self.starting_balance_usd = starting_balance_usd
        self.treasury = TREASURY
        # "models" serves the documented catalog shape, "data" the SDK-seen one.
        self.catalog_shape: Literal["models", "data"] = "models"
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything: payments, balances, jobs, logs, faults."""
        with self.lock:
            self.faults = Faults()
            self.settlements: list[Settlement] = []
            # Every decoded payment header, as received, so tests can re-verify each one.
            self.payments_seen: list[dict[str, Any]] = []
            # Every requirement a 402 offered; `issued` also says which request it was for.
            self.issued_terms: list[dict[str, Any]] = []
            self.issued: list[IssuedRequirement] = []
            # (version, canonical JSON of the terms) -> the requests they were issued for:
            # verifying a payment is a lookup, not a scan of every 402 ever issued.
            self.issued_by_terms: dict[tuple[int, str], set[str]] = {}
            # Atomic USDC per checksummed payer; payers not listed hold the starting balance.
            self.balances: dict[str, int] = {}
            # (method, path, had a payment header) of every /api request; /_sandbox/* is left
            # out so test controls never disturb what a test counts.
            self.requests_seen: list[tuple[str, str, bool]] = []
            # (path, JSON body) of each request to a paid endpoint, so a test can check what a
            # client asked for (a streamed chat, the exact messages) as well as what it paid.
            self.bodies_seen: list[tuple[str, Any]] = []
            self.jobs: dict[str, VideoJob] = {}
            self.media: dict[str, tuple[bytes, str]] = {}
            self.settled_nonces: set[str] = set()
            # (lowercase authorizer, lowercase nonce) of every settlement: USDC's
            # authorizationState, which keys a nonce by its authorizer, as the chain answers it.
            self.settled_authorizations: set[tuple[str, str]] = set()
            # (method, selector or "") of every POST /rpc, so a test can count how often the
            # chain was asked. Kept apart from requests_seen, which counts gateway requests.
            self.rpc_calls: list[tuple[str, str]] = []
            # The latest chain time reached: a chain never goes back, even if a test lowers
            # chain_time_offset_seconds.
            self.chain_time_reached = 0
            self.payto_counter = 0
            # Bytes of huge_success_body_bytes answers actually sent: how much a client read.
            self.huge_bytes_sent = 0
            # Bytes of trickled bodies sent: stops growing once the client has gone.
            self.trickle_bytes_sent = 0

    # faults
    def set_faults(self, **kwargs: Any) -> Faults:
        """Switch faults on (or off) by name, on top of those already set."""
        with self.lock:
            self.faults = Faults.model_validate({**self.faults.model_dump(), **kwargs})
            return self.faults

    def clear_faults(self) -> None:
        with self.lock:
            self.faults = Faults()

    def faults_for(self, path: str) -> Faults:
        with self.lock:
            return self.faults.scoped_to(path)

    def fault_hit(self) -> None:
        """Count one request hit by a counted fault; at zero the counted faults switch off."""
        with self.lock:
            if self.faults.times is None:
                return
            remaining = self.faults.times - 1
            if remaining <= 0:
                self.faults = self.faults.without_counted()
            else:
                self.faults = self.faults.model_copy(update={"times": remaining})

    # the stand-in chain's clock
    def chain_now(self) -> int:
        """The chain's time (a block timestamp): the wall clock moved by chain_time_offset_seconds.

        It never runs backwards: lowering the offset holds it at the time already reached until
        the wall clock catches up (`reset()` starts it over). Otherwise an authorization the
        chain had shown expired and unused could become valid again and settle, the one thing
        a reconciler releasing it relies on never happening.
        """
        with self.lock:
            return self.chain_now_locked()

    def chain_now_locked(self) -> int:
        """`chain_now` for a caller already holding `lock` (settle judges expiry under it)."""
        now = int(time.time()) + self.faults.chain_time_offset_seconds
        self.chain_time_reached = max(self.chain_time_reached, now)
        return self.chain_time_reached

    def authorization_used(self, authorizer: str, nonce: str) -> bool:
        """USDC's authorizationState(authorizer, nonce): did the sandbox settle that pair?"""
        with self.lock:
            return (authorizer.lower(), nonce.lower()) in self.settled_authorizations

    # balances (atomic units, keyed by checksummed address; unseen payers start funded)
    @property
    def starting_balance_atomic(self) -> int:
        return usd_to_atomic(self.starting_balance_usd)

    def balance_atomic(self, address: str) -> int:
        with self.lock:
            return self.balances.get(checksum(address), self.starting_balance_atomic)

    def set_balance(self, address: str, usd: float) -> None:
        with self.lock:
            self.balances[checksum(address)] = usd_to_atomic(usd)

    def balance_usd(self, address: str) -> float:
        return self.balance_atomic(address) / 10**6

    def settled_total_atomic(self) -> int:
        with self.lock:
            return sum(s.amount_atomic for s in self.settlements)

    # logs
    def log_request(self, method: str, path: str, had_payment_header: bool) -> None:
        with self.lock:
            self.requests_seen.append((method, path, had_payment_header))

    def log_body(self, path: str, body: Any) -> None:
        with self.lock:
            self.bodies_seen.append((path, body))

    def log_rpc(self, method: str, selector: str) -> None:
        with self.lock:
            self.rpc_calls.append((method, selector))

    def log_payment(self, decoded: Any) -> None:
        with self.lock:
            self.payments_seen.append(decoded)

    def record_issued(self, request_key: str, version: int, requirement: dict[str, Any]) -> None:
        issued = IssuedRequirement(
            request_key=request_key, version=version, requirement=requirement
        )
        with self.lock:
            self.issued_terms.append(requirement)
            self.issued.append(issued)
            terms = (version, canonical(requirement))
            self.issued_by_terms.setdefault(terms, set()).add(request_key)

    def issued_for(
        self, requirement: dict[str, Any], version: int, request_key: str
    ) -> bool | None:
        """Were exactly these terms (key order ignored) issued for this request? None: never
        issued at all; False: issued, but for another request.

        A set per terms, not a list: a client repeating one request gets the same terms every
        time, and scanning every issue made each verification slower than the last."""
        with self.lock:
            keys = self.issued_by_terms.get((version, canonical(requirement)))
            return None if keys is None else request_key in keys

    def next_payto_index(self) -> int:
        with self.lock:
            self.payto_counter += 1
            return self.payto_counter

    def store_media(self, name: str, data: bytes, content_type: str) -> None:
        with self.lock:
            self.media[name] = (data, content_type)

    def snapshot(self) -> dict[str, Any]:
        """What `GET /_sandbox/state` shows a test running the sandbox in another process."""
        with self.lock:
            return {
                "network": self.network,
                "caip2": self.network_spec.caip2,
                "treasury": self.treasury,
                "starting_balance_usd": self.starting_balance_usd,
                "chain_now": self.chain_now_locked(),
                "settlements": [s.model_dump() for s in self.settlements],
                "settled_total_atomic": sum(s.amount_atomic for s in self.settlements),
                "balances": dict(self.balances),
                "faults": self.faults.model_dump(),
                "jobs": {
                    job_id: {"status": job.status, "polls": job.polls, "model": job.model}
                    for job_id, job in self.jobs.items()
                },
                "counts": {
                    "requests": len(self.requests_seen),
                    "payments_seen": len(self.payments_seen),
                    "issued_terms": len(self.issued_terms),
                    "settlements": len(self.settlements),
                    "jobs": len(self.jobs),
                    "rpc_calls": len(self.rpc_calls),
                },
            }
