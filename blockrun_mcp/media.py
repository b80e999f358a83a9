"""Saving generated images and videos into the output dir: safe names, no escapes, size caps.

Upstream URLs expire (DALL-E's after an hour), so media is saved the moment it arrives.
Downloads are refused for non-http schemes and for loopback or private addresses other than
the gateway's own, so a hostile answer cannot make us fetch from the user's network.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlparse

from blockrun_mcp.errors import BlockrunError
from blockrun_mcp.ledger import DEFAULT_IDENTITY

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_VIDEO_BYTES = 512 * 1024 * 1024

EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
}
MAGIC = [
    (b"\x89PNG", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF8", "gif"),
    (b"RIFF", "webp"),
    (b"\x1aE\xdf\xa3", "webm"),
]


class MediaError(BlockrunError):
    """Media could not be saved; the message says why and what to do."""


def safe_stem(prompt: str, kind: str) -> str:
    """A file name stem from the prompt: lowercase ascii words, short, unique."""
    words = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40].strip("-") or kind
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{stamp}-{words}-{secrets.token_hex(3)}"


def _extension(head: bytes, content_type: str | None, default: str) -> str:
    if content_type:
        ext = EXTENSIONS.get(content_type.split(";")[0].strip().lower())
        if ext:
            return ext
    for magic, ext in MAGIC:
        if head.startswith(magic):
            return ext
    if head[4:8] == b"ftyp":
        return "mp4"
    return default


class MediaStore:
    def __init__(self, output_dir: Path, gateway_url: str) -> None:
        self.output_dir = output_dir
        self._gateway_url = gateway_url
        self._gateway_origin = _origin(gateway_url)

    def for_identity(self, identity: str) -> MediaStore:
        """Where `identity`'s media go: the output dir itself for the one local user, else a
        folder of its own under it, so one person's files are never written beside, or named
        after, another's. (Identity names are checked when the tokens file is read: a plain
        name, never a path.)"""
        if identity == DEFAULT_IDENTITY:
            return self
        if Path(identity).name != identity or identity in (".", ".."):
            raise MediaError(f"Refused an identity name that is not a plain name: {identity!r}.")
        return MediaStore(self.output_dir / identity, self._gateway_url)

    def _ensure_dir(self) -> Path:
        try:
            self.output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise MediaError(
                f"The output dir {self.output_dir} could not be created ({exc.strerror}); "
                "set BLOCKRUN_OUTPUT_DIR to a writable folder."
            ) from None
        return self.output_dir

    def _target(self, stem: str, ext: str) -> Path:
        directory = self._ensure_dir().resolve()
        path = (directory / f"{stem}.{ext}").resolve()
        if path.parent != directory:  # a name that tries to leave the output dir
            raise MediaError("Refused a file name that would leave the output dir.")
        return path

    def save_data_uri(self, data_uri: str, prompt: str, kind: str = "image") -> Path:
        match = re.match(r"^data:([\w.+/-]+)?(;[\w=.+-]+)*?;base64,(.*)$", data_uri, re.DOTALL)
        if not match:
            raise MediaError("The gateway sent a data URI that is not base64 media.")
        try:
            content = base64.b64decode(match.group(3), validate=False)
        except (binascii.Error, ValueError):
            raise MediaError("The gateway sent a data URI whose base64 does not decode.") from None
        if len(content) > MAX_IMAGE_BYTES:
            raise MediaError("The gateway sent an image larger than the size limit.")
        if not content:
            raise MediaError("The gateway sent an empty image.")
        path = self._target(
            safe_stem(prompt, kind), _extension(content[:16], match.group(1), "bin")
        )
        _write_new(path, content)
        return path

    def check_download_url(self, url: str) -> bool:
        """Refuse unsafe URLs; True when the host is a DNS name still to be checked once resolved."""
        try:
            parsed = urlparse(url)
            host = (parsed.hostname or "").rstrip(".")
            origin = _origin(url)
        except ValueError:  # e.g. a port that is not a number
            raise MediaError("Refused to download media from a malformed URL.") from None
        if parsed.scheme not in ("http", "https") or not host:
            raise MediaError(
                f"Refused to download media from a non-http URL ({parsed.scheme or 'none'}:)."
            )
        if origin == self._gateway_origin:
            return False
        if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
            raise MediaError(f"Refused to download media from a local address ({host}).")
        address = _literal_address(host)
        if address is None:
            return True  # a DNS name: check_resolved looks at what it resolves to
        if not address.is_global:
            raise MediaError(
                f"Refused to download media from a private or loopback address ({host})."
            )
        return False

    async def check_resolved(self, url: str) -> tuple[str, ...]:
        """Refuse a DNS name that resolves to a private or loopback address; else the addresses
        to connect to, in the resolver's order (the download is pinned to them, so a second
        lookup cannot rebind it)."""
        import anyio

        parsed = urlparse(url)
        host = (parsed.hostname or "").rstrip(".")
        try:
            infos = await anyio.getaddrinfo(host, parsed.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            raise MediaError(f"Refused to download media: {host} does not resolve.") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        for address in addresses:
            if not address.is_global:
                raise MediaError(
                    f"Refused to download media from {host}: it resolves to a private or "
                    f"loopback address ({address})."
                )
        if not addresses:
            raise MediaError(f"Refused to download media: {host} does not resolve.")
        return tuple(dict.fromkeys(str(address) for address in addresses))

    async def save_download(
        self,
        url: str,
        prompt: str,
        chunks: Callable[[str, tuple[str, ...] | None], AsyncIterator[bytes]],
        *,
        kind: str = "image",
        content_type: str | None = None,
    ) -> Path:
        """Stream `url` into a new file in the output dir, capped in size.

        `chunks(url, connect_to)` streams the body; `connect_to` holds the checked addresses of a
        DNS name, which the connection must use instead of resolving the name again.
        """
        connect_to = await self.check_resolved(url) if self.check_download_url(url) else None
        limit = MAX_VIDEO_BYTES if kind == "video" else MAX_IMAGE_BYTES
        stem = safe_stem(prompt, kind)
        partial = self._target(stem, "part")
        size = 0
        head = b""
        try:
            with open(partial, "xb") as handle:
                async for chunk in chunks(url, connect_to):
                    size += len(chunk)
                    if size > limit:
                        raise MediaError(
                            f"The {kind} at {url} is larger than {limit // (1024 * 1024)} MB."
                        )
                    if len(head) < 16:
                        head += chunk[:16]
                    handle.write(chunk)
            if size == 0:
                raise MediaError(f"The {kind} at {url} is empty.")
            ext = _extension(head, content_type, "mp4" if kind == "video" else "png")
            final = self._target(stem, ext)
            os.replace(partial, final)
            return final
        finally:
            if partial.exists():
                partial.unlink()


def _write_new(path: Path, content: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(content)


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a numeric host names, in any form the resolver accepts ("127.1",
    "2130706433", "0x7f.1" are all 127.0.0.1), or None for a DNS name."""
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return (parsed.scheme, (parsed.hostname or "").lower(), port)
