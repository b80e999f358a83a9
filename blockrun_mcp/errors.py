"""The root of every error a user can see.

Each carries `message`, the sentence shown to the agent or printed by a command (what happened
and what to do next, never a traceback, never key material), and `money_moved`: False when
nothing was signed, None when a payment was signed and its outcome is unknown (it counts as
spent), True when a payment is known to have settled. The tools and the CLI catch this root and
nothing else; anything else reaching them is a bug, reported as one.
"""

from __future__ import annotations

from types import EllipsisType


class BlockrunError(Exception):
    money_moved: bool | None = False  # a class may say otherwise; an instance may too

    def __init__(self, message: str, *, money_moved: bool | EllipsisType | None = ...) -> None:
        super().__init__(message)
        self.message = message
        if money_moved is not ...:
            self.money_moved = money_moved

    def __str__(self) -> str:
        return self.message
