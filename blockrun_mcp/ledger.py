"""The spend ledger: every reservation, payment and receipt, surviving restarts.

One row per payment, moving reserved -> signed -> settled | released. A row that stays
`signed` is a payment whose outcome is unknown: it counts as spent, here and after a crash,
until the reconciler (payments.py) finds it settled or expired unused on chain. A signed row
records the authorizer, payee and validBefore that the chain check needs.

The SQL here is written once, for two stores (one interface, two implementations):
- SQLite in the data dir (ledger_sqlite.py), the zero-set-up default. Several servers may share
  one data dir: every check-and-reserve runs in an IMMEDIATE transaction, serialized by SQLite.
- PostgreSQL (ledger_postgres.py, BLOCKRUN_LEDGER_URL) for a team's several instances: a
  check-and-reserve locks the totals rows it checks (see `reserve`).

Running totals per session, per day and per identity and day are kept in the same transaction
as every status change, so checking a budget is a lookup, not a sum over every payment.

Every public method may be called from several threads at once (the server runs them in worker
threads, off its event loop): the stores serialize what must be serialized (SQLite: one
connection under a lock; PostgreSQL: a pool, one connection per transaction), and what this
module keeps in memory (the reservations calls hold, the settlements not booked yet) is guarded
by a lock. No call waits on the store without bound: a lock held too long by someone else ends
in LedgerBusy, a StoreUnavailable, and nothing half done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from blockrun_mcp.errors import BlockrunError

Status = Literal["reserved", "signed", "settled", "released"]
# Statuses whose amount counts against budgets.
COUNTED = ("reserved", "signed", "settled")
DEFAULT_IDENTITY = "default"  # one user, one token, or stdio: no per-person budget

# `note = note + "; " + new` with the empty cases handled; takes the new text three times.
ABANDONED_NOTE = "its process ended before signing"
NOTE_APPENDED = "CASE WHEN ? = '' THEN note WHEN note = '' THEN ? ELSE note || '; ' || ? END"
COUNTED_SQL = (
    "CASE WHEN status='settled' THEN COALESCE(settled_atomic, amount_atomic)"
    " WHEN status IN ('reserved','signed') THEN amount_atomic ELSE 0 END"
)
# The totals a payment moves: its identity's that day, its day's, and its session's; in the one
# order every transaction takes their rows (see total_keys). (Earlier versions took them sorted
# by name: day, identity-day, session. While instances of both run on one database, during an
# upgrade, two of them can deadlock on one person's rows: PostgreSQL ends one transaction after
# its deadlock_timeout, which fails closed as LedgerBusy.)
TOTAL_SCOPES = ("identity-day", "day", "session")


def counted_atomic(status: str, amount_atomic: int, settled_atomic: int | None) -> int:
    """What a payment counts against budgets: settled amount, the amount while open, else 0."""
    if status == "settled":
        return settled_atomic if settled_atomic is not None else amount_atomic
    return amount_atomic if status in COUNTED else 0


def utc_day(at: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).strftime("%Y-%m-%d")


def identity_day(identity: str, day: str) -> str:
    return f"{identity}|{day}"


def total_keys(session: str, day: str, identity: str) -> list[tuple[str, str]]:
    """The totals rows a payment moves, in the one order every transaction takes them (a
    reservation locks them so, a settlement updates them so): two transactions never wait on
    each other in a cycle (PostgreSQL would abort one as a deadlock).

    The order is TOTAL_SCOPES': one person's row first, the rows everyone shares last (the day,
    and the one session of a team's stateless instances), so that a reservation checking only
    a person's budget locks only that person's row (`locked_keys`), and takes the shared ones
    last, at its increments, for a moment."""
    keys = {"identity-day": identity_day(identity, day), "day": day, "session": session}
    return [(scope, keys[scope]) for scope in TOTAL_SCOPES]


def locked_keys(keys: list[tuple[str, str]], limited_scopes: set[str]) -> list[tuple[str, str]]:
    """Of `keys` (in total_keys' order), the rows a reservation must lock before it checks: those
    of the limits it checks, and the rows before the last of them in that one order.

    The rows after it are not locked up front: nothing is checked against them, and their
    increments at the end of the transaction (`Ledger._add`, in the same order) take them last,
    for a moment. So every transaction still takes its rows in the one order (no deadlock, with
    any mix of limits across instances), and a shared row nobody limits (a team's one session
    row; the day, without a wallet budget) is not held while every reservation checks and
    records. The rows before the last limited one stay locked: taking them later would take them
    out of the order.
    """
    last = max((i for i, (scope, _) in enumerate(keys) if scope in limited_scopes), default=-1)
    return keys[: last + 1]


@dataclass(frozen=True)
class PaymentRow:
    id: int
    created_at: float
    day: str
    session: str
    tool: str
    model: str
    amount_atomic: int
    settled_atomic: int | None
    status: Status
    nonce: str | None
    tx_hash: str | None
    network: str
    note: str
    payer: str | None = None  # the authorizer, once signed (None on rows from older versions)
    pay_to: str | None = None
    valid_before: int | None = None
    identity: str = DEFAULT_IDENTITY

    @property
    def counted_atomic(self) -> int:
        return counted_atomic(self.status, self.amount_atomic, self.settled_atomic)


@dataclass(frozen=True)
class VideoJobRow:
    job_id: str
    payment_id: int
    session: str
    model: str
    poll_url: str
    header_name: str
    header_value: str
    valid_before: int
    status: str
    path: str | None
    url: str | None


_IN_FLIGHT: dict[str, set[int]] = {}
# Settlements a call received but could not book (the store failed at that moment), per store:
# payment id -> (settled amount, transaction, note). Retried by `book_unbooked_settlements`.
_UNBOOKED: dict[str, dict[int, tuple[int, str | None, str]]] = {}
# Guards both (every Ledger of the process, any thread); held for memory only, never across a
# statement.
_MEMORY = threading.Lock()


class StoreUnavailable(BlockrunError):
    """The ledger's store (the team's PostgreSQL) cannot be used right now. Whoever called says
    what became of the money: a reservation that failed means nothing was signed."""


class LedgerBusy(StoreUnavailable):
    """The store is up, but what a call needed was held by another transaction (or process) for
    longer than the store waits: a row lock (PostgreSQL's lock_timeout), the database's write
    lock (SQLite's busy timeout), a statement past statement_timeout, or a deadlock. The call's
    transaction was rolled back whole. `reason` says which, as a sentence."""

    def __init__(self, reason: str, *, nothing_signed: bool = False) -> None:
        self.reason = reason
        self.nothing_signed = nothing_signed  # the message says so itself
        after = (
            "Nothing was signed (no reservation was recorded); try again in a moment."
            if nothing_signed
            else "Try again in a moment."
        )
        super().__init__(f"{reason} {after}")

    def for_reservation(self) -> LedgerBusy:
        """The same, said of a reservation: nothing was signed."""
        return LedgerBusy(self.reason, nothing_signed=True)


class LimitExceeded(Exception):
    """A reservation would pass a limit. `limit` names it: 'budget', 'daily budget' or
    'identity budget'."""

    def __init__(self, limit: str, remaining_atomic: int) -> None:
        super().__init__(limit)
        self.limit = limit
        self.remaining_atomic = remaining_atomic


# --- what a store provides ------------------------------------------------------------------


@dataclass
class Result:
    rows: list[Mapping[str, Any]]
    rowcount: int

    def one(self) -> Mapping[str, Any] | None:
        return self.rows[0] if self.rows else None


class Tx(Protocol):
    """One transaction: statements with `?` placeholders (the store translates them).

    A store may send a statement only when its result (or a later one's) is read, or at the
    commit (PostgreSQL batches them so: fewer round trips). So a caller reads what it needs
    before acting on it, and a failure can surface at a later read or at the commit: always
    inside the transaction, which is then rolled back whole."""

    def execute(self, sql: str, args: Sequence[object] = ()) -> Result: ...


class Backend(Protocol):
    """A store the ledger's SQL runs on: SQLite (ledger_sqlite) or PostgreSQL (ledger_postgres).

    Safe to call from several threads at once. A wait on another transaction's lock that lasts
    longer than the store allows raises LedgerBusy; a store that cannot be used at all raises
    StoreUnavailable. Either way the transaction was rolled back."""

    kind: str
    read_only: bool
    where: str  # where it is, as users are told (a path, or a URL without its password)

    def transaction(self) -> AbstractContextManager[Tx]: ...

    def run(self, sql: str, args: Sequence[object] = ()) -> Result:
        """One statement, committed on its own."""

    def lock_totals(self, tx: Tx, keys: list[tuple[str, str]]) -> None:
        """Hold the totals rows `keys` (some of total_keys', in its order; they are created when
        missing) until `tx` ends (PostgreSQL); SQLite's IMMEDIATE transaction already holds the
        whole database."""

    def owner(self) -> dict[str, object]:
        """The columns that say which process reserved a payment (to release it if it dies)."""

    def abandoned_reservations(self, tx: Tx) -> list[int]:
        """Reservations whose process (or instance) is gone: they never reached signing. Judged
        on one clock: the database server's (PostgreSQL: heartbeats written and compared with
        its now()), or none (SQLite: the reserving pid is alive or not, on this one host)."""

    def close(self) -> None: ...


class Ledger:
    """Every payment, its status and the running totals, on one store."""

    def __init__(self, store: Backend | Path, *, read_only: bool = False) -> None:
        if isinstance(store, Path):
            from blockrun_mcp.ledger_sqlite import SQLiteBackend

            store = SQLiteBackend(store, read_only=read_only)
        self.store = store
        self.path = Path(store.where) if store.kind == "sqlite" else None
        # Reservations a call of this process still holds; shared by every Ledger of this
        # process on the same store (a SQLite file's owner is the pid, not the Ledger).
        with _MEMORY:
            self._in_flight = _IN_FLIGHT.setdefault(store.where, set())
            self._unbooked = _UNBOOKED.setdefault(store.where, {})
        if not store.read_only:
            self.release_abandoned_reservations()

    @classmethod
    def open(cls, url: str | None, data_dir: Path, *, read_only: bool = False) -> Ledger:
        """The ledger BLOCKRUN_LEDGER_URL names, else the SQLite file in the data dir."""
        if url:
            from blockrun_mcp.ledger_postgres import PostgresBackend

            return cls(PostgresBackend(url, read_only=read_only))
        return cls(data_dir / "ledger.sqlite3", read_only=read_only)

    def close(self) -> None:
        self.store.close()

    @property
    def read_only(self) -> bool:
        return self.store.read_only

    def transaction(self) -> AbstractContextManager[Tx]:
        """One transaction on the ledger's store, for stores that share it (threads.py): their
        writes are serialized with the ledger's."""
        return self.store.transaction()

    def read(self, sql: str, args: Sequence[object] = ()) -> list[Mapping[str, Any]]:
        return self.store.run(sql, args).rows

    def release_abandoned_reservations(self) -> int:
        """Reservations of processes (instances) that are gone never reached signing: nothing
        can settle them, so they are released, once, by whichever process sees them first.

        Signed rows stay as they are: their payment may have left, so they remain counted.
        """
        with self.store.transaction() as tx:
            ids = self.store.abandoned_reservations(tx)
            ids += self._stranded_reservations(tx)
        released = 0
        for payment_id in ids:
            # Only while still a reservation: a process taken for dead that signs meanwhile
            # keeps its payment counted (mark_signed and this UPDATE cannot both win).
            released += self._close(
                payment_id,
                f"status='released', note={NOTE_APPENDED}",
                (ABANDONED_NOTE,) * 3,
                only_reserved=True,
            )
        return released

    def _stranded_reservations(self, tx: Tx) -> list[int]:
        """This process's own reservations that no call of its holds any more: a release that
        failed (the database was down), or a reservation whose commit was never acknowledged.
        Nothing can sign them now, so they are released like a dead process's."""
        owner = self.store.owner()
        rows = tx.execute(
            "SELECT id FROM payments WHERE status = 'reserved' AND "
            + " AND ".join(f"{column} = ?" for column in owner),
            list(owner.values()),
        ).rows
        # A reservation is held (in flight) before its transaction commits (see `reserve`), so a
        # committed one this reads is never taken for stranded while its call still runs.
        with _MEMORY:
            return [row["id"] for row in rows if row["id"] not in self._in_flight]

    def _hold(self, payment_id: int) -> None:
        with _MEMORY:
            self._in_flight.add(payment_id)

    def _let_go(self, payment_id: int | None) -> None:
        if payment_id is not None:
            with _MEMORY:
                self._in_flight.discard(payment_id)

    # --- reservations --------------------------------------------------------------------

    def reserve(
        self,
        *,
        session: str,
        tool: str,
        model: str,
        amount_atomic: int,
        network: str,
        session_limit_atomic: int | None,
        daily_limit_atomic: int | None,
        identity: str = DEFAULT_IDENTITY,
        identity_daily_limit_atomic: int | None = None,
        lock_all_totals: bool = True,
    ) -> int:
        """Atomically check the session, daily and identity limits and record a reservation.

        On PostgreSQL the totals rows checked are locked (SELECT ... FOR UPDATE, always in the
        same order, so two instances cannot deadlock) until the reservation is committed: a
        concurrent reservation on the same session, day or identity waits, then sees this one.
        Row locks rather than SERIALIZABLE: they serialize only the reservations that compete
        for the same budget, and never make a caller retry a failed transaction.

        `lock_all_totals=False` locks only the rows the limits given (not None) are checked on,
        and those before them in the one order (`locked_keys`); True, the default, locks all
        three, as before. Every row is incremented either way, at the end, in the same order: an
        increment (`counted_atomic = counted_atomic + x`) is atomic per row, and one that waits
        for a checking reservation's lock adds to the total that reservation committed, so a
        check is never made on a total missing a committed reservation. A row that stays locked
        by another transaction longer than the store waits (PostgreSQL's lock_timeout, SQLite's
        busy timeout) ends the reservation in LedgerBusy: rolled back, nothing signed.
        """
        now = time.time()
        day = utc_day(now)
        keys = total_keys(session, day, identity)
        checks = (
            ("budget", "session", session_limit_atomic),
            ("identity budget", "identity-day", identity_daily_limit_atomic),
            ("daily budget", "day", daily_limit_atomic),
        )
        limited = {scope for _, scope, limit_atomic in checks if limit_atomic is not None}
        locked = keys if lock_all_totals else locked_keys(keys, limited)
        payment_id: int | None = None
        try:
            with self.store.transaction() as tx:
                spent: dict[str, int] = {}
                if locked:
                    self.store.lock_totals(tx, locked)
                    spent = {
                        row["scope"]: int(row["counted_atomic"])
                        for row in tx.execute(
                            "SELECT scope, counted_atomic FROM totals WHERE "
                            + " OR ".join("(scope = ? AND key = ?)" for _ in locked),
                            [value for pair in locked for value in pair],
                        ).rows
                    }
                for limit, scope, limit_atomic in checks:
                    used = spent.get(scope, 0)
                    if limit_atomic is not None and used + amount_atomic > limit_atomic:
                        raise LimitExceeded(limit, max(0, limit_atomic - used))
                owner = self.store.owner()
                columns = ["created_at", "updated_at", "day", "session", "tool", "model"]
                columns += ["amount_atomic", "status", "network", "identity", *owner]
                values = [now, now, day, session, tool, model, amount_atomic, "reserved", network]
                values += [identity, *owner.values()]
                row = tx.execute(
                    f"INSERT INTO payments ({', '.join(columns)})"
                    f" VALUES ({', '.join('?' * len(values))}) RETURNING id",
                    values,
                ).one()
                assert row is not None
                payment_id = int(row["id"])
                # Held before the commit: another thread's pass over stranded reservations that
                # sees the committed row also sees that a call holds it (until signed or closed).
                self._hold(payment_id)
                self._add(tx, session, day, identity, amount_atomic)
        except LedgerBusy as exc:
            self._let_go(payment_id)
            raise exc.for_reservation() from None
        except BaseException:
            # Not committed (or its commit unacknowledged): no call holds it. Were it committed
            # after all, the next pass over stranded reservations releases it.
            self._let_go(payment_id)
            raise
        return payment_id

    def mark_signed(
        self,
        payment_id: int,
        nonce: str,
        *,
        payer: str | None = None,
        pay_to: str | None = None,
        valid_before: int | None = None,
    ) -> bool:
        """Record the signature before the payment leaves. False when the row is no longer a
        reservation (another process released it): the caller must not send.

        Reserved and signed count the same amount, so no total moves: one statement, committed
        on its own, durably (SQLite's synchronous=FULL, PostgreSQL's default): after a power
        loss it is still signed, so never released as a reservation nobody signed.
        """
        try:
            result = self.store.run(
                "UPDATE payments SET status='signed', nonce=?, payer=?, pay_to=?, valid_before=?,"
                " updated_at=? WHERE id=? AND status='reserved'",
                (nonce, payer, pay_to, valid_before, time.time(), payment_id),
            )
        finally:
            self._let_go(payment_id)
        return result.rowcount == 1

    def mark_settled(
        self, payment_id: int, settled_atomic: int, tx_hash: str | None, *, note: str = ""
    ) -> bool:
        """Book an open payment as settled; False if it was no longer open (booked already)."""
        return (
            self._close(
                payment_id,
                f"status='settled', settled_atomic=?, tx_hash=?, note={NOTE_APPENDED}",
                (settled_atomic, tx_hash, note, note, note),
            )
            == 1
        )

    def settle_later(
        self, payment_id: int, settled_atomic: int, tx_hash: str | None, note: str = ""
    ) -> None:
        """A settlement whose booking failed: kept in memory and booked by the next pass. Until
        then the payment is still signed in the ledger, so it counts its full amount (safe); if
        this process ends first, the chain's reconciliation books it."""
        with _MEMORY:
            self._unbooked[payment_id] = (settled_atomic, tx_hash, note)

    @property
    def unbooked_settlements(self) -> int:
        with _MEMORY:
            return len(self._unbooked)

    def book_unbooked_settlements(self) -> int:
        """Book the settlements `settle_later` kept; how many were booked. One that still cannot
        be booked stays for the next pass (the store's error is raised after the others).

        Two passes at once (two threads) may both book one: the second finds it booked already
        (mark_settled moves only an open payment) and counts nothing."""
        booked = 0
        failure: Exception | None = None
        with _MEMORY:
            unbooked = list(self._unbooked.items())
        for payment_id, entry in unbooked:
            settled_atomic, tx_hash, note = entry
            try:
                self.mark_settled(payment_id, settled_atomic, tx_hash, note=note)
            except Exception as exc:
                failure = exc
                continue
            # Booked now, or booked by someone else meanwhile (the chain's pass): done either way.
            with _MEMORY:
                if self._unbooked.get(payment_id) == entry:
                    del self._unbooked[payment_id]
                    booked += 1
        if failure is not None:
            raise failure
        return booked

    def mark_released(self, payment_id: int, note: str) -> bool:
        """Release an open payment; False if it was no longer open."""
        return (
            self._close(payment_id, f"status='released', note={NOTE_APPENDED}", (note, note, note))
            == 1
        )

    def add_note(self, payment_id: int, note: str) -> None:
        """Append to a payment's note (what the gateway claimed, why a call ended)."""
        self.store.run(
            f"UPDATE payments SET note={NOTE_APPENDED}, updated_at=? WHERE id=?",
            (note, note, note, time.time(), payment_id),
        )

    def open_signed(self) -> list[PaymentRow]:
        """Signed payments whose outcome is still unknown, oldest first (for the reconciler)."""
        rows = self.read("SELECT * FROM payments WHERE status = 'signed' ORDER BY id")
        return [_payment(row) for row in rows]

    def _close(
        self,
        payment_id: int,
        assignments: str,
        values: tuple[object, ...],
        *,
        only_reserved: bool = False,
    ) -> int:
        """Move an open payment to settled or released, and its totals by what that changes.

        Only an open payment moves (a settled one is never released, nor settled twice), and an
        open one, reserved or signed, counts its full amount: so the change in what it counts is
        known from the updated row alone, without reading it first.
        """
        still = "status = 'reserved'" if only_reserved else "status IN ('reserved','signed')"
        try:
            with self.store.transaction() as tx:
                after = tx.execute(
                    f"UPDATE payments SET {assignments}, updated_at=? WHERE id=? AND {still}"
                    " RETURNING status, amount_atomic, settled_atomic, session, day, identity",
                    (*values, time.time(), payment_id),
                ).one()
                if after is None:
                    return 0
                delta = (
                    counted_atomic(after["status"], after["amount_atomic"], after["settled_atomic"])
                    - after["amount_atomic"]
                )
                self._add(tx, after["session"], after["day"], after["identity"], delta)
                return 1
        finally:
            # Whether this succeeded or the store failed, no call holds the payment any more: if
            # it is still a reservation, the next pass over stranded reservations releases it.
            # (Let go only now: until this transaction ends, another thread's pass must not
            # release, with another note, what this call is closing.)
            self._let_go(payment_id)

    @staticmethod
    def _add(tx: Tx, session: str, day: str, identity: str, delta: int) -> None:
        if not delta:
            return
        for scope, key in total_keys(session, day, identity):
            tx.execute(
                "INSERT INTO totals (scope, key, counted_atomic) VALUES (?, ?, ?) ON CONFLICT"
                " (scope, key) DO UPDATE SET counted_atomic ="
                " totals.counted_atomic + excluded.counted_atomic",
                (scope, key, delta),
            )

    def _total(self, scope: str, key: str) -> int:
        rows = self.read(
            "SELECT counted_atomic FROM totals WHERE scope = ? AND key = ?", (scope, key)
        )
        return int(rows[0]["counted_atomic"]) if rows else 0

    # --- reading -------------------------------------------------------------------------

    def counted_by_sum(self, where: str, args: Sequence[object]) -> int:
        """The slow, obviously right sum over payments (reports on old ledgers, and tests)."""
        rows = self.read(
            f"SELECT COALESCE(SUM({COUNTED_SQL}), 0) AS counted FROM payments WHERE {where}", args
        )
        return int(rows[0]["counted"])

    def session_spent_atomic(self, session: str) -> int:
        return self._total("session", session)

    def day_spent_atomic(self, day: str | None = None) -> int:
        return self._total("day", day or utc_day())

    def identity_spent_atomic(self, identity: str, day: str | None = None) -> int:
        return self._total("identity-day", identity_day(identity, day or utc_day()))

    def payments(
        self,
        *,
        session: str | None = None,
        since_day: str | None = None,
        limit: int | None = None,
        identity: str | None = None,
    ) -> list[PaymentRow]:
        where, args = ["1=1"], []
        for column, value in (("session", session), ("identity", identity)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since_day is not None:
            where.append("day >= ?")
            args.append(since_day)
        sql = f"SELECT * FROM payments WHERE {' AND '.join(where)} ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_payment(row) for row in self.read(sql, args)]

    def payment(self, payment_id: int) -> PaymentRow | None:
        rows = self.read("SELECT * FROM payments WHERE id = ?", (payment_id,))
        return _payment(rows[0]) if rows else None

    # --- video jobs ----------------------------------------------------------------------

    def save_video_job(self, job: VideoJobRow) -> None:
        self.store.run(
            "INSERT INTO video_jobs (job_id, payment_id, session, model, poll_url,"
            " header_name, header_value, valid_before, status, path, url, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (job_id) DO UPDATE SET"
            " payment_id = excluded.payment_id, status = excluded.status",
            (
                job.job_id,
                job.payment_id,
                job.session,
                job.model,
                job.poll_url,
                job.header_name,
                job.header_value,
                job.valid_before,
                job.status,
                job.path,
                job.url,
                time.time(),
            ),
        )

    def update_video_job(
        self, job_id: str, *, status: str, path: str | None = None, url: str | None = None
    ) -> None:
        self.store.run(
            "UPDATE video_jobs SET status=?, path=COALESCE(?, path), url=COALESCE(?, url)"
            " WHERE job_id=?",
            (status, path, url, job_id),
        )

    def end_video_jobs_of(self, payment_id: int, status: str) -> None:
        """Mark the still-running jobs a payment paid for as ended (its authorization expired)."""
        self.store.run(
            "UPDATE video_jobs SET status=? WHERE payment_id=? AND status='running'",
            (status, payment_id),
        )

    def running_jobs_by_payment(self, payment_ids: list[int] | None = None) -> dict[int, str]:
        """payment id -> job id of the jobs still running (all of them, or of these payments)."""
        sql = "SELECT payment_id, job_id FROM video_jobs WHERE status = 'running'"
        args: list[int] = []
        if payment_ids is not None:
            if not payment_ids:
                return {}
            sql += f" AND payment_id IN ({','.join('?' * len(payment_ids))})"
            args = payment_ids
        return {row["payment_id"]: row["job_id"] for row in self.read(sql, args)}

    def video_job(self, job_id: str) -> VideoJobRow | None:
        rows = self.read("SELECT * FROM video_jobs WHERE job_id = ?", (job_id,))
        if not rows:
            return None
        return VideoJobRow(**{k: rows[0][k] for k in VideoJobRow.__dataclass_fields__})


def _payment(row: Mapping[str, Any]) -> PaymentRow:
    # A ledger from an older version (read-only, not migrated) lacks the newer columns.
    present = set(row.keys())
    return PaymentRow(**{k: row[k] for k in PaymentRow.__dataclass_fields__ if k in present})
