"""Database work runs in worker threads, never on the event loop.

One reservation waiting on a row lock, or a database that stalls, must not freeze every other
request of the instance (other people's streams, free calls, pings): each ledger or thread-store
call is handed to a worker thread and awaited. The threads are bounded (as the connection pool
is), so a stalled database queues its own callers, not the loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

P = ParamSpec("P")
T = TypeVar("T")

DATABASE_THREADS = 8  # the PostgreSQL pool's size; SQLite serialises on its own lock anyway

# One limiter per event loop (a limiter belongs to the loop it was made in).
_limiter: RunVar[anyio.CapacityLimiter] = RunVar("blockrun_database_limiter")


def _database_limiter() -> anyio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(DATABASE_THREADS)
        _limiter.set(limiter)
        return limiter


async def off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` in a database worker thread, and its result.

    Shielded from cancellation: a call cancelled while its ledger write runs (a reservation, a
    signature's record, a release) still learns how the write ended, and a release or note made
    while the call is being cancelled still happens. The store's own timeouts bound the wait."""
    call = functools.partial(fn, *args, **kwargs)
    with anyio.CancelScope(shield=True):
        return await anyio.to_thread.run_sync(call, limiter=_database_limiter())
