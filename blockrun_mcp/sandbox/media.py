"""Generated media: real (tiny) PNG and MP4 bytes, delivered as data URIs or sandbox URLs.

The bytes are valid files, so a client that saves and inspects them is exercised for real; the
colour is derived from the prompt, so the same prompt always gives the same image.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from typing import Any

from blockrun_mcp.sandbox.bodies import Image2ImageBody, ImageBody, PricedRequest
from blockrun_mcp.sandbox.state import SandboxState

IMAGE_PIXELS = 16
DATA_URI_MODELS = frozenset({"openai/gpt-image-1", "openai/gpt-image-2"})
REVISED_PROMPT_MODELS = frozenset({"openai/dall-e-3"})


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(seed: str, pixels: int = IMAGE_PIXELS) -> bytes:
    """A solid-colour RGB PNG whose colour is a hash of `seed`."""
    red, green, blue = hashlib.sha256(seed.encode()).digest()[:3]
    row = b"\x00" + bytes((red, green, blue)) * pixels  # filter byte 0, then RGB triples
    header = struct.pack(">IIBBBBB", pixels, pixels, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * pixels))
        + _png_chunk(b"IEND", b"")
    )


def mp4_bytes(seed: str) -> bytes:
    """A minimal ISO-BMFF file: an `ftyp` box and a `free` box carrying the seed's digest."""
    ftyp_body = b"isom" + struct.pack(">I", 512) + b"isomiso2mp41"
    ftyp = struct.pack(">I", 8 + len(ftyp_body)) + b"ftyp" + ftyp_body
    free_body = hashlib.sha256(seed.encode()).digest()
    free = struct.pack(">I", 8 + len(free_body)) + b"free" + free_body
    return ftyp + free


def media_url(base_url: str, name: str) -> str:
    return f"{base_url}/api/media/{name}"


def image_results(
    state: SandboxState, priced: PricedRequest, base_url: str, *, count: int | None = None
) -> list[dict[str, Any]]:
    """One `data[]` entry per image: data URIs for gpt-image-*, sandbox URLs for the rest.

    `count` (the image_count fault) overrides the `n` asked for; those entries are all distinct
    sandbox URLs, whatever the model, so each is a separate download.
    """
    body = priced.body
    assert isinstance(body, ImageBody)
    source = (body.image or body.image_url or "") if isinstance(body, Image2ImageBody) else ""
    model = priced.entry.id
    results: list[dict[str, Any]] = []
    for index in range(body.n if count is None else count):
        seed = f"{model}|{body.size}|{body.prompt}|{source}|{index}"
        png = png_bytes(seed)
        entry: dict[str, Any]
        if model in DATA_URI_MODELS and count is None:
            entry = {"url": "data:image/png;base64," + base64.b64encode(png).decode()}
        else:
            name = f"img-{hashlib.sha256(seed.encode()).hexdigest()[:20]}.png"
            state.store_media(name, png, "image/png")
            entry = {"url": media_url(base_url, name)}
        if model in REVISED_PROMPT_MODELS:
            entry["revised_prompt"] = f"A detailed rendering of: {body.prompt}"
        results.append(entry)
    return results


def store_video(state: SandboxState, job_id: str, seed: str, base_url: str) -> str:
    name = f"{job_id}.mp4"
    state.store_media(name, mp4_bytes(seed), "video/mp4")
    return media_url(base_url, name)
