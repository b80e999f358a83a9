"""Tool-argument mistakes as short sentences that say how to fix them.

The SDK reports a bad argument as pydantic's multi-line report (with a documentation link), and
silently drops an argument the tool does not have. A dropped `max_token` would run the call with
the default 1024 tokens and pay for them, so an unknown name is refused, with the likely one.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

# pydantic error type -> what the argument must be.
_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "int_parsing_size": "a whole number of a sensible size",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
}


@dataclass(frozen=True)
class ToolParameters:
    """A tool's argument names, from its input schema, in schema order."""

    tool: str
    names: tuple[str, ...]
    required: frozenset[str]

    @classmethod
    def from_schema(cls, tool: str, schema: dict[str, Any]) -> ToolParameters:
        properties = schema.get("properties")
        required = schema.get("required")
        return cls(
            tool,
            tuple(properties) if isinstance(properties, dict) else (),
            frozenset(required) if isinstance(required, list) else frozenset(),
        )

    def listing(self) -> str:
        if not self.names:
            return f"{self.tool} takes no arguments."
        names = [f"{n} (required)" if n in self.required else n for n in self.names]
        return f"{self.tool}'s arguments: {', '.join(names)}."

    def unknown(self, arguments: dict[str, Any]) -> str | None:
        """The refusal for arguments the tool does not have, or None when there are none."""
        unknown = [name for name in arguments if name not in self.names]
        if not unknown:
            return None
        problems = []
        for name in unknown[:5]:
            shown = _shown_name(name)
            close = difflib.get_close_matches(name, self.names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{shown}{hint}")
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        noun = "argument" if len(unknown) == 1 else "arguments"
        return (
            f"{self.tool} has no {noun} {', '.join(problems)}{more}; nothing was sent or paid. "
            f"{self.listing()}"
        )

    def invalid(self, error: ValidationError) -> str:
        """The refusal for arguments that failed validation, one clause per problem."""
        problems = [_problem(detail) for detail in error.errors()[:5]]
        return (
            f"{self.tool}: {'; '.join(problems)}. Nothing was sent or paid; fix the arguments "
            f"and call again. {self.listing()}"
        )


def _problem(detail: Any) -> str:
    location = ".".join(str(part) for part in detail.get("loc", ())) or "the arguments"
    kind = detail.get("type", "")
    if kind == "missing":
        return f"{location} is required"
    if kind in _EXPECTED:
        return f"{location} must be {_EXPECTED[kind]}, not {_shown_value(detail.get('input'))}"
    if kind == "value_error":
        # Our own validators' sentences, without pydantic's "Value error, " prefix.
        context = detail.get("ctx") or {}
        return f"{location}: {context.get('error', detail.get('msg', 'invalid'))}"
    return f"{location}: {detail.get('msg', 'invalid')}"


def _shown_name(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:40] + "…")


def _shown_value(value: Any) -> str:
    """A short JSON-ish description of what was sent: never a long echo of the caller's data."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 24 else "a very long number"
    if isinstance(value, str):
        return f"the text {value[:24]!r}" + ("…" if len(value) > 24 else "")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
