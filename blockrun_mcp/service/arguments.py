"""Checks of tool arguments, made before anything is requested or signed: bad ones cost nothing."""

from __future__ import annotations

import math
import re

from blockrun_mcp import pricing
from blockrun_mcp.gateway_models import EFFORTS, CatalogEntry
from blockrun_mcp.service.failures import ToolFailure

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
IMAGE_SIZE = re.compile(r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$")
IMAGE_URL = re.compile(r"^(https?://|data:image/)")
MAX_PROMPT_CHARS = 4_000_000
MAX_MODEL_ID_CHARS = 200
DEFAULT_MAX_VIDEO_SECONDS = 60.0


def require_text(value: str | None, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ToolFailure(f"{name} must be a non-empty string.")
    if len(value) > MAX_PROMPT_CHARS:
        raise ToolFailure(f"{name} is {len(value)} characters, over the {MAX_PROMPT_CHARS} limit.")
    require_unicode(value, name)
    return value


def require_unicode(value: str | None, name: str) -> None:
    # JSON can carry a lone surrogate ("\ud800"); it has no UTF-8 form, so no gateway can take it.
    if value is not None and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ToolFailure(
                f"{name} contains a lone surrogate (invalid Unicode); remove it and try again."
            ) from None


def optional_text(value: str | None, name: str) -> str | None:
    if value is not None and len(value) > MAX_PROMPT_CHARS:
        raise ToolFailure(f"{name} is too long.")
    require_unicode(value, name)
    return value


def model_id(model: str | None) -> str | None:
    """The model asked for, or None for the default. An empty or blank `model` means the default:
    hosts with forms send "" for an optional field left alone, and the result names the model
    that answered."""
    if model is None or not model.strip():
        return None
    if len(model) > MAX_MODEL_ID_CHARS:
        raise ToolFailure("model is not a model id (too long). Call list_models for the ids.")
    return model.strip()


def max_tokens_for(max_tokens: int | None, entry: CatalogEntry) -> int:
    if max_tokens is None:
        tokens = pricing.DEFAULT_MAX_TOKENS
        return min(tokens, entry.max_output) if entry.max_output else tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ToolFailure(f"max_tokens must be a positive integer, got {max_tokens!r}.")
    if entry.max_output and max_tokens > entry.max_output:
        raise ToolFailure(
            f"max_tokens {max_tokens} is above {entry.id}'s maximum output of {entry.max_output}."
        )
    return max_tokens


def effort(value: str | None) -> str | None:
    if value is not None and value not in EFFORTS:
        raise ToolFailure(f"effort must be one of {', '.join(EFFORTS)}, got {value!r}.")
    return value


def max_cost_usd(value: float | None) -> float | None:
    """A ceiling on a whole call that makes several payments (ask_models, delegate)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ToolFailure("max_cost_usd must be a number of dollars, 0 or more.")
    return value


def temperature(value: float | None) -> float | None:
    if value is not None and not (0 <= value <= 2):
        raise ToolFailure(f"temperature must be between 0 and 2, got {value}.")
    return value


def image_size(size: str | None) -> str | None:
    if size is not None and not IMAGE_SIZE.match(size):
        raise ToolFailure(f"size must look like 1024x1024, got {size[:40]!r}.")
    return size


def image_url(url: str | None) -> str | None:
    if url is not None and not IMAGE_URL.match(url):
        raise ToolFailure("image_url must be an http(s) URL or a data:image URI.")
    require_unicode(url, "image_url")
    return url


def duration_for(duration: float | None, entry: CatalogEntry) -> float:
    if duration is None:
        return pricing.DEFAULT_VIDEO_SECONDS
    limit = entry.max_duration_seconds or DEFAULT_MAX_VIDEO_SECONDS
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not math.isfinite(duration)
    ):
        raise ToolFailure("duration_seconds must be a number of seconds.")
    if not 0 < duration <= limit:
        raise ToolFailure(
            f"duration_seconds must be more than 0 and at most {limit:g} for {entry.id}."
        )
    return float(duration)


def job_id(value: str) -> str:
    if not JOB_ID.match(value):
        raise ToolFailure("job_id is malformed; use the job_id an earlier generate_video returned.")
    return value
