"""The gateway client against the sandbox: both catalog shapes, free models, errors."""

from __future__ import annotations

import pytest

from blockrun_mcp.gateway import GatewayClient, GatewayUnreachable, new_http_client
from blockrun_mcp.gateway_models import CatalogEntry

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("shape", ["models", "data"])
async def test_catalog_in_both_shapes(sandbox, shape):
    sandbox.state.catalog_shape = shape
    gateway = GatewayClient(sandbox.base_url, None, new_http_client())
    try:
        entries = {e.id: e for e in await gateway.list_models()}
    finally:
        await gateway.aclose()
    mini = entries["openai/gpt-5-mini"]
    assert mini.provider == "openai" and mini.input_price > 0 and mini.output_price > 0
    assert mini.context_window and mini.max_output and "chat" in mini.categories
    assert entries["nvidia/gpt-oss-120b"].is_free
    assert entries["openai/gpt-image-1"].flat_price == pytest.approx(0.021)
    assert entries["xai/grok-imagine-video"].price_per_second == pytest.approx(0.05)
    assert not sandbox.state.payments_seen


def test_catalog_entries_tolerate_odd_fields():
    entry = CatalogEntry.from_wire(
        {"id": "x/y", "inputPrice": "abc", "pricing": {"output": "2.5"}, "categories": "chat"}
    )
    assert entry.provider == "x" and entry.input_price == 0.0 and entry.output_price == 2.5
    assert entry.categories == []


async def test_unreachable_gateway_is_a_clear_error():
    gateway = GatewayClient("http://127.0.0.1:9/api", None, new_http_client())
    with pytest.raises(GatewayUnreachable) as info:
        await gateway.list_models()
    await gateway.aclose()
    assert "could not be reached" in str(info.value) and "BLOCKRUN_API_URL" in str(info.value)
