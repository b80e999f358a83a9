"""The dashboard's one HTML document: its style and script inlined, so that the same file works
served by our HTTP servers and handed to an MCP Apps host (whose views load nothing from
anywhere: no CDN, no second request). Over HTTP a Content-Security-Policy allows exactly these
inline blocks, by their hashes, and no other script or style.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from importlib import resources
from typing import Literal

from blockrun_mcp import __version__

REFRESH_SECONDS = 5


def _asset(name: str) -> str:
    return resources.files("blockrun_mcp.dashboard").joinpath("assets", name).read_text("utf-8")


@cache
def _parts() -> tuple[str, str, str]:
    """The template, style and script, checked once: nothing in them may end its own element
    early, or the rest would be read as markup."""
    style, script = _asset("dashboard.css"), _asset("dashboard.js")
    if "</" in style or "</" in script:
        raise RuntimeError("an inlined dashboard asset contains '</', which would end its element")
    return _asset("dashboard.html"), style, script


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def page(mode: Literal["http", "app"], api: str | None = None) -> str:
    """The page. `http`: it fetches `api` (a path on the same origin) every REFRESH_SECONDS;
    `app`: it waits for the budget tool's result from its MCP Apps host."""
    template, style, script = _parts()
    settings = {
        "mode": mode,
        "api": api,
        "refresh_seconds": REFRESH_SECONDS,
        "version": __version__,
    }
    # A JSON data block is never run, but `<` could still close it: written as \u003c.
    data = json.dumps(settings).replace("<", "\\u003c")
    return (
        template.replace("/*STYLE*/", style, 1)
        .replace("/*CONFIG*/", data, 1)
        .replace("/*SCRIPT*/", script, 1)
    )


@cache
def content_security_policy() -> str:
    """For the HTTP page: its own inline script and style only (by hash), requests to its own
    origin only, never framed (clickjacking), no forms, no base URL games."""
    _, style, script = _parts()
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {_sha256(script)}",
            f"style-src {_sha256(style)}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
