"""A media download connects to the address its DNS check approved (no second lookup to rebind).

The resolver is the one thing faked here (there is no DNS on these machines); the HTTP download is
real, over loopback, to a server that records the Host header it was sent.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from blockrun_mcp.gateway import GatewayClient, new_http_client
from blockrun_mcp.media import MediaError, MediaStore
from blockrun_mcp.sandbox.media import png_bytes

pytestmark = pytest.mark.anyio

PNG = png_bytes("pinned")
GATEWAY = "http://127.0.0.1:1/api"


@dataclass
class MediaServer:
    """A loopback server answering every GET with a PNG, and what each request asked for."""

    port: int
    hosts: list[str] = field(default_factory=list)  # Host headers
    targets: list[str] = field(default_factory=list)  # request targets (a proxy gets the URL)


@pytest.fixture
def media_server() -> Iterator[MediaServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    seen = MediaServer(server.server_address[1])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.hosts.append(self.headers.get("Host", ""))
            seen.targets.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


async def test_the_download_goes_to_the_pinned_address_with_the_urls_host(media_server):
    port, hosts = media_server.port, media_server.hosts
    # .invalid never resolves (RFC 2606): only the pinned address can have been connected to.
    url = f"http://media.invalid:{port}/cat.png"
    gateway = GatewayClient(GATEWAY, payer=None)
    try:
        body = b"".join([chunk async for chunk in gateway.stream_bytes(url, ("127.0.0.1",))])
        assert body == PNG
        assert hosts == [f"media.invalid:{port}"]
        # An address that refuses (nothing listens on 127.0.0.2) gives way to the next one, as a
        # dual-stack name without an IPv6 route needs; when none connects, the error surfaces.
        pinned = ("127.0.0.2", "127.0.0.1")
        assert b"".join([chunk async for chunk in gateway.stream_bytes(url, pinned)]) == PNG
        assert len(hosts) == 2
        with pytest.raises(httpx2.ConnectError):
            async for _ in gateway.stream_bytes(url, ("127.0.0.2", "127.0.0.3")):
                pass
        with pytest.raises(httpx2.ConnectError):  # unpinned, the name is looked up (and fails)
            async for _ in gateway.stream_bytes(url):
                pass
    finally:
        await gateway.aclose()


def _resolver(answers: dict[str, list[str]]) -> Any:
    async def getaddrinfo(host: str, port: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    return getaddrinfo


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...] | None]] = []

    async def chunks(self, url: str, connect_to: tuple[str, ...] | None) -> AsyncIterator[bytes]:
        self.calls.append((url, connect_to))
        yield PNG


async def test_save_download_hands_the_checked_address_to_the_connection(tmp_path, monkeypatch):
    monkeypatch.setattr(
        anyio,
        "getaddrinfo",
        _resolver(
            {
                "cdn.example": ["93.184.216.34", "2606:2800:220:1::1"],
                "evil.example": ["93.184.216.34", "10.0.0.7"],
            }
        ),
    )
    store = MediaStore(tmp_path / "out", GATEWAY)
    recorder = Recorder()
    path = await store.save_download("https://cdn.example/a.png", "a cat", recorder.chunks)
    assert path.read_bytes() == PNG
    assert recorder.calls == [
        ("https://cdn.example/a.png", ("93.184.216.34", "2606:2800:220:1::1"))
    ]

    # A literal public address and the gateway's own origin need no lookup, so nothing is pinned.
    recorder.calls.clear()
    await store.save_download("https://93.184.216.34/b.png", "a dog", recorder.chunks)
    await store.save_download("http://127.0.0.1:1/api/media/c.png", "a cow", recorder.chunks)
    assert [connect_to for _, connect_to in recorder.calls] == [None, None]

    # One private address among the answers refuses the name before any connection.
    recorder.calls.clear()
    with pytest.raises(MediaError, match="resolves to a private or loopback address"):
        await store.save_download("https://evil.example/d.png", "x", recorder.chunks)
    with pytest.raises(MediaError, match="does not resolve"):
        await store.save_download("https://nowhere.example/e.png", "x", recorder.chunks)
    assert recorder.calls == []
    assert sorted(p.suffix for p in Path(tmp_path / "out").iterdir()) == [".png", ".png", ".png"]


async def test_over_https_the_certificate_is_checked_against_the_urls_name(tmp_path):
    """Pinned to 127.0.0.1, TLS still sends and verifies the URL's name (SNI + hostname check)."""
    import ssl

    import trustme

    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("media.invalid", "straße.invalid").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: names.append(name)

    async def serve(stream: Any) -> None:
        """Keeps the connection open for more requests, as a CDN would."""
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n"
        # The client that refuses the certificate hangs up mid-handshake.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.EndOfStream, OSError):
            async with stream:
                buffer = b""
                while True:
                    while b"\r\n\r\n" not in buffer:
                        buffer += await stream.receive()
                    _, buffer = buffer.split(b"\r\n\r\n", 1)
                    await stream.send(head % len(PNG) + PNG)

    def refused_certificate(error: BaseException) -> bool:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
            cause = cause.__cause__ or cause.__context__
        return cause is not None

    async def download(url: str, connect_to: tuple[str, ...] | None = ("127.0.0.1",)) -> bytes:
        return b"".join([chunk async for chunk in gateway.stream_bytes(url, connect_to)])

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    from anyio.streams.tls import TLSListener

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(TLSListener(listener, server_context).serve, serve)
        media_http = new_http_client(keepalive=False, verify=client_context)
        gateway = GatewayClient(GATEWAY, payer=None, media_http=media_http)
        try:
            assert await download(f"https://media.invalid:{port}/cat.png") == PNG
            assert names == ["media.invalid"]
            # A name the certificate does not cover, pinned to the same address, is refused: the
            # connection verified for media.invalid was not kept to serve it.
            with pytest.raises(httpx2.ConnectError) as refused:
                await download(f"https://other.invalid:{port}/cat.png")
            assert refused_certificate(refused.value)
            # The same server under its address alone fails too: the name is what was verified.
            with pytest.raises(httpx2.ConnectError) as refused:
                await download(f"https://127.0.0.1:{port}/cat.png", None)
            assert refused_certificate(refused.value)
            # A non-ASCII name goes out in its IDNA 2008 form, as in the Host header (Python's
            # ssl, given the Unicode form, would send and check "strasse.invalid").
            assert await download(f"https://straße.invalid:{port}/cat.png") == PNG
            assert names[-1] == "xn--strae-oqa.invalid"
        finally:
            await gateway.aclose()
            tasks.cancel_scope.cancel()


async def test_through_a_proxy_the_url_goes_as_it_is(media_server, monkeypatch):
    """The proxy resolves the name, and NO_PROXY rules name hosts: pinning stays out of its way."""
    port, hosts = media_server.port, media_server.hosts
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")  # the media server plays it
    gateway = GatewayClient(GATEWAY, payer=None)
    try:
        url = "http://media.example/cat.png"
        body = b"".join([chunk async for chunk in gateway.stream_bytes(url, ("93.184.216.34",))])
        assert body == PNG and hosts == ["media.example"]
        assert media_server.targets == [url]  # the name, for the proxy to resolve; not the address
    finally:
        await gateway.aclose()
