"""JSON from a peer we do not trust, refused when nested deeper than any real answer before
Python's parser sees it.

`json.loads` recurses once per level of nesting, in C, and its only guard is the interpreter's
recursion limit. Importing eth-account raises that limit to 100,000 (py_ecc sets it on import),
so a body of 100,000 `[` overflows the C stack first: the process dies with SIGSEGV instead of
raising RecursionError. So the depth is measured here, without recursion, and a body too deep,
or whose brackets do not pair up, never reaches the parser.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A gateway answer nests five or six levels; nothing real comes near this.
MAX_DEPTH = 64

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")


class JsonTooDeep(ValueError):
    """The text nests deeper than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"it nests deeper than {limit} levels")
        self.limit = limit


class JsonUnbalanced(ValueError):
    """The brackets of the text do not pair up: cut off, or not JSON at all."""

    def __init__(self) -> None:
        super().__init__("it is cut off, or its brackets do not pair up")


def loads(data: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` of UTF-8 `data` that nests at most `max_depth` deep. ValueError when it is
    not such JSON (UnicodeDecodeError, JsonTooDeep, JsonUnbalanced or json.JSONDecodeError)."""
    text = data.decode("utf-8-sig")  # RFC 8259: JSON exchanged between systems is UTF-8
    check_depth(data, max_depth)
    return json.loads(text)


def check_depth(data: bytes, max_depth: int = MAX_DEPTH) -> None:
    """Raise JsonTooDeep or JsonUnbalanced unless the brackets of UTF-8 `data` outside its
    strings pair up within `max_depth` levels. A few C-speed passes over the bytes.

    In UTF-8 the bytes of `"`, `\\` and the brackets occur only as those characters. Escapes go
    first (so an escaped quote ends no string); then every other quote-separated piece lies
    outside a string. Up to where a text stops being JSON this reads it as the parser does, so
    the parser never nests deeper than measured here.
    """
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    outside = b"".join(data.split(b'"')[::2])
    brackets = outside.translate(_SQUARE, _NOT_BRACKETS)
    # Each pass removes every innermost pair, so brackets within the limit are gone after
    # `max_depth` passes; brackets that stop shrinking before they are gone do not pair up.
    for _ in range(max_depth):
        if not brackets:
            return
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            raise JsonUnbalanced()
        brackets = shorter
    if brackets:
        raise JsonTooDeep(max_depth) if b"[]" in brackets else JsonUnbalanced()
