"""Ctrl-C (SIGINT) ends a serving process within milliseconds, with nothing lost.

MCP hosts stop a stdio server with SIGINT and follow it with SIGTERM about 100 ms later (Claude
Code), so a server slower than that is always killed mid-exit. What SIGINT sets off is quick:
asyncio cancels the serving task; every ledger write in flight finishes first (off_loop shields
them, so a signed payment is recorded, and a cancelled call's note is written); the lifespan
closes the gateway's connections and the ledger (SQLite commits each transaction durably; the
PostgreSQL pool is closed). That takes 5-25 ms. The 100-500 ms after it were the interpreter's
own finalization (tearing down every imported module, collecting a large heap), which writes
nothing of ours. So once serving has ended on KeyboardInterrupt, the process flushes its output
and logs, then leaves with os._exit, skipping only that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

# 128 + SIGINT: how shells report a process that Ctrl-C ended.
INTERRUPTED_EXIT_CODE = 130


@contextlib.contextmanager
def exit_promptly_on_interrupt() -> Iterator[None]:
    """Around serving: a KeyboardInterrupt that reaches here, after every context inside has
    closed (service, sandbox, pipes), ends the process at once, with exit code 130."""
    try:
        yield
    except KeyboardInterrupt:
        leave(INTERRUPTED_EXIT_CODE)


def leave(code: int) -> None:
    """Exit now: flush what Python would have flushed at exit, then skip its finalization."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream has nothing to flush
            stream.flush()
    os._exit(code)
