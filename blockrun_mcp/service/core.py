"""The service the tools call: its parts wired once (wallet, ledger, budgets, payer, gateway,
catalog, media), and one family of tools per module (chat, images, video, models, account).

The MCP layer calls one method per tool and turns a ToolFailure into a tool error.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from blockrun_mcp.budget import Limits, SessionBudget
from blockrun_mcp.catalog import Catalog
from blockrun_mcp.gateway import POLL_TIMEOUT_SECONDS, GatewayClient
from blockrun_mcp.gateway_models import CatalogEntry
from blockrun_mcp.ledger import DEFAULT_IDENTITY
from blockrun_mcp.media import MediaStore
from blockrun_mcp.money import usd_to_atomic
from blockrun_mcp.off_loop import off_loop
from blockrun_mcp.payments import Approval, PaidCall
from blockrun_mcp.service import arguments
from blockrun_mcp.service.account import Account
from blockrun_mcp.service.caller import Caller, Payer
from blockrun_mcp.service.chat import Chat
from blockrun_mcp.service.consult import Consulting
from blockrun_mcp.service.delegate import Delegation
from blockrun_mcp.service.failures import ToolFailure
from blockrun_mcp.service.images import Images
from blockrun_mcp.service.models import Models
from blockrun_mcp.service.video import Video
from blockrun_mcp.wallet import Wallet, WalletError, find_wallet
from blockrun_mcp.x402.networks import network_by_name
from blockrun_mcp.x402.payer import X402Payer, refuse_payment
from blockrun_mcp.x402.policy import SigningPolicy

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from blockrun_mcp.config import Config
    from blockrun_mcp.identities import Identity
    from blockrun_mcp.ledger import Ledger
    from blockrun_mcp.payments import Reconciliation
    from blockrun_mcp.threads import ThreadStore
    from blockrun_mcp.workspace import Selection, Workspace

log = logging.getLogger("blockrun_mcp")

REMOTE_FILES_UNCONFIGURED = (
    "files cannot be read over HTTP here: this server reads only a workspace its operator "
    "configured, never the client's paths. Set BLOCKRUN_WORKSPACE on the server, or a "
    "`workspace` for this identity in the tokens file, or send the text in the prompt. "
    "Nothing was signed."
)


@dataclass
class ServiceOptions:
    video_wait_seconds: float = 120.0
    video_poll_interval: float = 3.0
    video_poll_timeout: float = POLL_TIMEOUT_SECONDS  # one poll, first byte to last
    funding_hint: str | None = None  # replaces the funding text (the sandbox's throwaway wallet)
    # This machine's clock, as the reconciler reads it (a sandbox whose chain runs ahead, in
    # tests, needs ours to agree before anything expired is released).
    clock: Callable[[], float] = time.time


class BlockrunService:
    def __init__(
        self,
        config: Config,
        *,
        wallet: Wallet | None = None,
        options: ServiceOptions | None = None,
        gateway: GatewayClient | None = None,
    ) -> None:
        self.config = config
        self.options = options or ServiceOptions()
        self.network = network_by_name(config.network)
        self.limits = Limits(
            config.session_budget_usd, config.max_per_call_usd, config.daily_budget_usd
        )
        self._wallet = wallet
        policy = SigningPolicy(
            self.network, usd_to_atomic(config.max_per_call_usd), pay_to=config.pay_to
        )
        # Nothing pays unless a tool call binds its own PaidCall (gateway.paid_by): a catalog
        # or a download that answers 402 is refused.
        self.payer = X402Payer(self._account, policy, approve=refuse_payment)
        self.gateway = gateway or GatewayClient(config.api_url, self.payer)
        self.catalog = Catalog(self.gateway.list_models)
        self.media = MediaStore(config.output_dir, config.api_url)
        self._ledger: Ledger | None = None
        self._ledger_opening = threading.Lock()
        self._threads: ThreadStore | None = None
        self._sessions: dict[tuple[str, str], SessionBudget] = {}
        self.start_dir = Path.cwd()  # the workspace when neither the client nor the env names one
        self._reconciling = anyio.Lock()
        self.chat = Chat(self)
        self.consult = Consulting(self)
        self.delegation = Delegation(self)
        self.images = Images(self)
        self.video = Video(self)
        self.models = Models(self)
        self.account = Account(self)

    # --- wiring ---------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        if self._ledger is not None:
            return self._ledger
        with self._ledger_opening:  # opened once, by whichever thread comes first
            if self._ledger is not None:
                return self._ledger
            from blockrun_mcp.ledger import Ledger  # sqlite: imported on first use

            try:
                self.config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                url = self.config.ledger_url
                self._ledger = Ledger.open(
                    url.get_secret_value() if url else None, self.config.data_dir
                )
            except OSError as exc:
                raise ToolFailure(
                    f"The ledger in {self.config.data_dir} could not be opened ({exc}); set "
                    "BLOCKRUN_DATA_DIR to a writable folder. Nothing was signed."
                ) from None
            return self._ledger

    async def open_ledger_early(self) -> None:
        """Opens the ledger in a worker thread while the host lists tools, so the first call's
        event loop does not wait on a database connection (or a SQLite file's creation). A
        failure here is left for that call to report."""
        try:
            await off_loop(lambda: self.ledger)
        except Exception as exc:  # (reported, with what to do, by the call that needs it)
            log.info("the ledger could not be opened yet: %s", exc)

    @property
    def threads(self) -> ThreadStore:
        if self._threads is None:
            from blockrun_mcp.threads import ThreadStore

            self._threads = ThreadStore(self.ledger)
        return self._threads

    async def thread_store(self) -> ThreadStore:
        """The thread store, opened off the event loop the first time (opening the ledger
        connects and may migrate); no thread hop once it is open."""
        if self._threads is None:
            await off_loop(lambda: self.threads)
        assert self._threads is not None
        return self._threads

    def workspace_roots(self, caller: Caller) -> list[Path]:
        """Where `files` may come from for this call. Locally: the client's roots, else
        BLOCKRUN_WORKSPACE, else the start directory. Over HTTP only what the operator
        configured: a client's roots name its own disk, never this server's."""
        from blockrun_mcp.workspace import workspace_roots

        if caller.payer.remote:
            if not caller.workspace:
                raise ToolFailure(REMOTE_FILES_UNCONFIGURED)
            return list(caller.workspace)
        return workspace_roots(caller.roots, list(self.config.workspace), self.start_dir)

    def workspace(self, roots: list[Path]) -> Workspace:
        """The workspace of `roots`, and what is never sent from it: our own files (refused by
        identity, so a hard link under another name is refused too) and any file holding the
        wallet's key. Blocking (it indexes our directories and may load the wallet): see
        select_files."""
        from blockrun_mcp.wallet import key_file_candidates
        from blockrun_mcp.workspace import Workspace

        config = self.config
        # Named on their own as well as under their directories: they are indexed first, so a
        # walk cut short by its cap (a huge media dir) still knows them.
        ledger = config.data_dir / "ledger.sqlite3"
        if self._ledger is not None and self._ledger.path is not None:
            ledger = self._ledger.path
        private = [
            config.data_dir,
            config.output_dir,
            config.home / ".blockrun",
            *key_file_candidates(config.home),
            *(ledger.with_name(ledger.name + end) for end in ("", "-wal", "-shm", "-journal")),
        ]
        if config.tokens_file is not None:
            private.append(config.tokens_file)
        wallet = self._loaded_wallet()
        if wallet is not None and Path(wallet.source).is_absolute():
            private.append(Path(wallet.source))
        # The key itself, so a copy of it under any name is refused too (never shown).
        key = wallet.reveal_private_key() if wallet is not None else None
        return Workspace(roots, forbidden=private, private_key=key)

    def _loaded_wallet(self) -> Wallet | None:
        """The wallet if there is one that loads; None (never an error) otherwise: a call
        with files but no wallet (a free model) is still checked for every other file."""
        try:
            return self.wallet()
        except WalletError:
            return None

    async def select_files(self, caller: Caller, specs: list[str]) -> Selection:
        """A call's `files`, chosen and read in a worker thread: walking, matching, stats and
        reads are blocking work that must never hold the event loop (every other call and
        session waits on it). The selection names the workspace it came from."""
        roots = self.workspace_roots(caller)
        selection = await anyio.to_thread.run_sync(lambda: self.workspace(roots).select(specs))
        selection.roots = [str(root) for root in roots]
        return selection

    def budget(self, payer: Payer, identity: Identity | None = None) -> SessionBudget:
        """The session budget `payer` draws on; `identity` carries its limits from the tokens
        file (None: the one user of a local server). Held in memory until its session ends:
        a lowered limit is kept with it."""
        key = (payer.scope, payer.identity)
        budget = self._sessions.get(key)
        if budget is None:
            budget = SessionBudget(
                self.ledger,
                payer.scope,
                self.limits,
                self.network.name,
                identity=identity,
                per_session=payer.per_session,
            )
            self._sessions[key] = budget
        elif identity is not None:
            budget.identity = identity  # the tokens file may have changed its limits
        return budget

    def session(
        self, key: str, identity: Identity | None = None, *, per_session: bool = True
    ) -> SessionBudget:
        """The budget of session `key` for `identity` (tests and the CLI; tools use budget())."""
        name = identity.name if identity is not None else DEFAULT_IDENTITY
        return self.budget(Payer(identity=name, scope=key, per_session=per_session), identity)

    def forget_session(self, session_id: str) -> None:
        """An HTTP session ended: its budget objects go (its spend stays in the ledger)."""
        scope = f"http-{session_id}"
        for key in [key for key in self._sessions if key[0] == scope]:
            del self._sessions[key]

    def remote_workspace(self, identity: Identity | None) -> list[Path] | None:
        """Where an HTTP caller's `files` come from: its identity's `workspace` in the tokens
        file, else BLOCKRUN_WORKSPACE; None when the operator configured neither."""
        if identity is not None and identity.workspace:
            return list(identity.workspace)
        return list(self.config.workspace) or None

    @property
    def session_count(self) -> int:
        """Session budgets held in memory (bounded: see sessions.py)"""
        return len(self._sessions)

    @staticmethod
    def new_session_key(prefix: str = "stdio") -> str:
        return f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"

    def wallet(self) -> Wallet:
        if self._wallet is None:
            wallet = find_wallet(self.config)
            if wallet is None:
                raise WalletError(
                    "No wallet is configured, so paid models cannot be used (free nvidia/* models "
                    "still work). Run `blockrun-mcp wallet create`, or set BLOCKRUN_WALLET_KEY."
                )
            self._wallet = wallet
        return self._wallet

    def _account(self) -> LocalAccount:
        return self.wallet().account

    def approval(self, caller: Caller) -> Approval:
        """BLOCKRUN_CONFIRM_ABOVE_USD, asked through this caller's client."""
        return Approval(self.config.confirm_above_usd, caller.confirm)

    def paid_call(
        self,
        budget: SessionBudget,
        caller: Caller,
        *,
        tool: str,
        model: str,
        estimate_atomic: int | None,
    ) -> PaidCall:
        return PaidCall(
            budget,
            tool=tool,
            model=model,
            estimate_atomic=estimate_atomic,
            approval=self.approval(caller),
        )

    async def model(self, model: str | None, kind: str) -> CatalogEntry:
        """The catalog entry for a tool's `model` argument, or the family's default."""
        wanted = arguments.model_id(model)
        if wanted is None:
            return await self.catalog.default(kind)
        return await self.catalog.lookup(wanted, kind)

    async def aclose(self) -> None:
        await self.gateway.aclose()
        if self._ledger is not None:
            self._ledger.close()

    # --- the money rule over time ---------------------------------------------------------

    async def reconcile(self) -> Reconciliation:
        """Settle or release, as the chain says, the signed payments whose outcome is unknown."""
        from blockrun_mcp.chain import ChainReader
        from blockrun_mcp.payments import reconcile

        async with self._reconciling, ChainReader(self.config.rpc_url, self.network.usdc) as chain:
            return await reconcile(
                self.ledger, chain, self.network.name, local_now=self.options.clock()
            )

    async def reconcile_periodically(self) -> None:
        """The server's own passes over open payments, for as long as it runs. Never raises: a
        chain that cannot be read only leaves the payments counted, as the rule says.

        Every RELEASE_INTERVAL_SECONDS: reservations that no process holds any more (a team's
        instance that died, a release that failed) are released, once, by whoever looks first;
        a local query, so often. Every RECONCILE_INTERVAL_SECONDS: the chain is asked about
        signed payments."""
        from blockrun_mcp.payments import (
            FIRST_RECONCILE_DELAY_SECONDS,
            RECONCILE_INTERVAL_SECONDS,
            RELEASE_INTERVAL_SECONDS,
        )

        await anyio.sleep(FIRST_RECONCILE_DELAY_SECONDS)
        next_reconcile = 0.0
        while True:
            try:
                ledger = self.ledger
                if ledger.unbooked_settlements:
                    booked = await off_loop(ledger.book_unbooked_settlements)
                    log.info("booked %d settlement(s) the ledger missed", booked)
                released = await off_loop(ledger.release_abandoned_reservations)
                if released:
                    log.info("released %d reservation(s) no process holds", released)
                if time.monotonic() >= next_reconcile:
                    next_reconcile = time.monotonic() + RECONCILE_INTERVAL_SECONDS
                    outcome = await self.reconcile()
                    if outcome.chain_error:
                        log.warning("reconciling payments: %s", outcome.chain_error)
            except Exception:
                log.exception("reconciling payments failed")
            await anyio.sleep(RELEASE_INTERVAL_SECONDS)
