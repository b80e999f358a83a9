"""The seven tools through a real MCP client, against the sandbox: results, schemas, validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.support.payer import assert_every_payment_valid
from tests.support.server import (
    CHEAP_MODEL,
    DATA_URI_IMAGE_MODEL,
    FREE_MODEL,
    OPUS,
    TOOLS,
    URL_IMAGE_MODEL,
    VIDEO_MODEL,
    assert_ledger_matches_sandbox,
    nonces_seen,
    open_server,
    paid_posts,
    quote_usd,
)

pytestmark = pytest.mark.anyio

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def settlement_by_tx(state, tx_hash):
    matches = [s for s in state.settlements if s.tx_hash == tx_hash]
    assert len(matches) == 1, f"no single settlement with tx {tx_hash}"
    return matches[0]


async def test_every_tool_has_an_output_schema(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        assert set(h.tools) == TOOLS
        for tool in h.tools.values():
            assert tool.output_schema and tool.output_schema.get("type") == "object", tool.name
            assert tool.description, tool.name
        schema = h.tools["ask_model"].output_schema
        for name in (
            "model",
            "content",
            "finish_reason",
            "usage",
            "cost_usd",
            "budget_remaining_usd",
        ):
            assert name in schema["properties"]
        ask_input = h.tools["ask_model"].input_schema
        assert ask_input["required"] == ["prompt"]
        assert {"model", "system", "max_tokens", "temperature"} <= set(ask_input["properties"])
        video_input = h.tools["generate_video"].input_schema
        assert {"prompt", "model", "duration_seconds", "image_url", "job_id"} <= set(
            video_input["properties"]
        )
        assert set(h.tools["estimate_cost"].input_schema["required"]) == {"model"}
        # Self-contained: each nested model used once sits where it is used.
        for tool in h.tools.values():
            assert "$ref" not in json.dumps(tool.output_schema), tool.name
        # Nested results say only their type (the tool list is sent on every turn).
        assert schema["properties"]["usage"] == {"type": "object"}


async def test_ask_model_returns_every_contract_field(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        answer = await h.ok(
            "ask_model", {"prompt": "What is 2+2?", "model": CHEAP_MODEL, "max_tokens": 200}
        )
        state = sandbox.state
        assert answer["model"] == CHEAP_MODEL
        assert "What is 2+2?" in answer["content"]
        assert answer["finish_reason"] == "stop" and answer["refused"] is False
        usage = answer["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        settlement = settlement_by_tx(state, answer["transaction"])
        assert answer["cost_usd"] == pytest.approx(settlement.amount_atomic / 1e6)
        assert answer["cost_usd"] == pytest.approx(quote_usd(state))
        assert answer["budget_remaining_usd"] == pytest.approx(1.0 - answer["cost_usd"])
        assert settlement.payer == h.address
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


async def test_ask_model_sends_exactly_what_was_given_streamed(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        await h.ok("ask_model", {"prompt": "plain", "model": CHEAP_MODEL})
        await h.ok(
            "ask_model",
            {
                "prompt": "with system",
                "system": "Be terse.",
                "model": CHEAP_MODEL,
                "temperature": 0.3,
            },
        )
        bodies = [
            body for path, body in sandbox.state.bodies_seen if path.endswith("/chat/completions")
        ]
        # Each paid chat is sent twice (unpaid, then with the payment), identical both times.
        assert len(bodies) == 4 and bodies[0] == bodies[1] and bodies[2] == bodies[3]
        plain, with_system = bodies[0], bodies[2]
        assert plain["stream"] is True and with_system["stream"] is True
        assert plain["messages"] == [{"role": "user", "content": "plain"}]
        assert plain["max_tokens"] == 1024  # the gateway's own default
        assert "temperature" not in plain
        assert with_system["messages"] == [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "with system"},
        ]
        assert with_system["temperature"] == 0.3
        # The sandbox saw each streamed request paid exactly once.
        assert [r[2] for r in paid_posts(sandbox.state)] == [False, True, False, True]
        assert len(sandbox.state.settlements) == 2
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


async def test_ask_model_without_a_model_uses_a_cheap_default(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        models = {m["id"]: m for m in (await h.ok("list_models", {"category": "chat"}))["models"]}
        answer = await h.ok("ask_model", {"prompt": "hello"})
        chosen = models[answer["model"]]
        assert chosen["available"]
        paid_chat = [m for m in models.values() if m["input_price"] or m["output_price"]]
        median_output = sorted(m["output_price"] for m in paid_chat)[len(paid_chat) // 2]
        assert chosen["output_price"] <= median_output and chosen["input_price"] <= 1.0
        assert answer["cost_usd"] > 0
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


async def test_unknown_model_lists_the_closest_ids_and_costs_nothing(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        text = await h.fail("ask_model", {"prompt": "hi", "model": "gpt-5-mnii"})
        assert "gpt-5-mnii" in text and CHEAP_MODEL in text and "list_models" in text
        text = await h.fail("ask_model", {"prompt": "hi", "model": DATA_URI_IMAGE_MODEL})
        assert "Unknown chat model" in text
        text = await h.fail("estimate_cost", {"model": "anthropic/claude-opus-4.77"})
        assert OPUS in text
        assert not paid_posts(sandbox.state) and not sandbox.state.payments_seen


@pytest.mark.parametrize(
    "arguments, says",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"max_tokens": 128_001}, "maximum output"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": "lots"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": [100]}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"prompt": "x" * 2_000_000}, "context window"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
    ],
)
async def test_bad_ask_arguments_request_and_sign_nothing(sandbox, tmp_path, arguments, says):
    async with open_server(tmp_path, sandbox) as h:
        await h.ok("list_models")  # the catalog is fetched (and cached) once, for free
        state = sandbox.state
        requests_before = list(state.requests_seen)
        text = await h.fail("ask_model", {"prompt": "hi", "model": CHEAP_MODEL, **arguments})
        assert says in text
        assert state.requests_seen == requests_before
        assert not state.payments_seen and not state.issued_terms and not state.settlements
        assert h.ledger.payments() == []


async def test_refusal_is_reported_as_refused(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        answer = await h.ok(
            "ask_model", {"prompt": "Please [[refuse]] this", "model": OPUS, "max_tokens": 256}
        )
        assert answer["refused"] is True
        assert answer["finish_reason"] == "content_filter"
        assert answer["content"] == ""
        assert "refused" in answer["note"]
        # The refusal was still a paid call, reported as such.
        assert answer["cost_usd"] > 0
        settlement_by_tx(sandbox.state, answer["transaction"])
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


async def test_free_model_costs_nothing_and_signs_nothing(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_SESSION_BUDGET_USD": "0.5"}) as h:
        answer = await h.ok("ask_model", {"prompt": "free please", "model": FREE_MODEL})
        assert "free please" in answer["content"]
        assert answer["cost_usd"] == 0 and answer["transaction"] is None
        assert answer["budget_remaining_usd"] == pytest.approx(0.5)
        state = sandbox.state
        assert not state.payments_seen and not state.issued_terms and not state.settlements
        assert [r[2] for r in paid_posts(state)] == [False]
        assert h.ledger.payments() == []
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == 0 and budget["recent"] == []


async def test_list_models_fields_filters_and_order(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        everything = (await h.ok("list_models"))["models"]
        ids = [m["id"] for m in everything]
        assert len(ids) == len(set(ids)) >= 20
        for model in everything:
            assert {
                "id",
                "name",
                "provider",
                "input_price",
                "output_price",
                "context_window",
                "categories",
                "available",
            } <= set(model)
        mini = next(m for m in everything if m["id"] == CHEAP_MODEL)
        # Catalog prices per million tokens, before the platform fee.
        assert (mini["input_price"], mini["output_price"]) == (0.25, 2.0)
        assert mini["context_window"] == 200_000 and mini["provider"] == "openai"
        assert "chat" in mini["categories"] and mini["available"] is True
        # Chat models come first, then the media models.
        kinds = [
            "chat" if "image" not in m["categories"] and "video" not in m["categories"] else "media"
            for m in everything
        ]
        assert kinds == sorted(kinds)

        anthropic = (await h.ok("list_models", {"provider": "anthropic"}))["models"]
        assert anthropic and {m["provider"] for m in anthropic} == {"anthropic"}
        assert [m["id"] for m in anthropic] == sorted(m["id"] for m in anthropic)
        assert OPUS in [m["id"] for m in anthropic]

        images = (await h.ok("list_models", {"category": "image"}))["models"]
        assert {m["id"] for m in images} >= {DATA_URI_IMAGE_MODEL, URL_IMAGE_MODEL}
        assert all("image" in m["categories"] and m["image_price"] > 0 for m in images)
        assert [m["id"] for m in images] == sorted(m["id"] for m in images)

        videos = (await h.ok("list_models", {"category": "video"}))["models"]
        assert VIDEO_MODEL in [m["id"] for m in videos]
        assert all(m["price_per_second"] > 0 for m in videos)

        reasoning = (await h.ok("list_models", {"category": "reasoning", "provider": "openai"}))[
            "models"
        ]
        assert reasoning and all(
            "reasoning" in m["categories"] and m["provider"] == "openai" for m in reasoning
        )
        assert "openai/gpt-5.4-nano" not in [m["id"] for m in reasoning]  # chat only

        none = await h.ok("list_models", {"provider": "no-such-provider"})
        assert none["models"] == [] and none["note"]
        assert not sandbox.state.payments_seen


async def test_estimate_cost_for_chat_image_and_video(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        chat = await h.ok(
            "estimate_cost", {"model": OPUS, "prompt": "x" * 4000, "max_tokens": 2000}
        )
        expected = ((1000 + 4) * 5.0 + 200 * 25.0) / 1e6 * 1.05
        assert chat["model"] == OPUS and chat["estimated_usd"] == pytest.approx(expected, rel=1e-3)
        image = await h.ok("estimate_cost", {"model": "openai/gpt-image-2", "size": "1536x1024"})
        assert image["estimated_usd"] == pytest.approx(0.126)
        video = await h.ok("estimate_cost", {"model": VIDEO_MODEL, "duration_seconds": 4})
        assert video["estimated_usd"] == pytest.approx(0.20)
        free = await h.ok("estimate_cost", {"model": FREE_MODEL, "prompt": "hi"})
        assert free["estimated_usd"] == 0
        text = await h.fail("estimate_cost", {"model": VIDEO_MODEL, "duration_seconds": 600})
        assert "duration_seconds" in text
        text = await h.fail("estimate_cost", {"model": "openai/gpt-image-2", "size": "big"})
        assert "size" in text
        assert not paid_posts(sandbox.state) and not sandbox.state.payments_seen


def _is_inside(path: Path, folder: Path) -> bool:
    return path.resolve().parent == folder.resolve()


async def test_generate_image_saves_data_uri_and_url_images(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        out = tmp_path / "out"
        assert h.config.output_dir == out.resolve()
        inline = await h.ok(
            "generate_image", {"prompt": "a red fox", "model": DATA_URI_IMAGE_MODEL}
        )
        assert inline["model"] == DATA_URI_IMAGE_MODEL and len(inline["images"]) == 1
        first = inline["images"][0]
        assert first["url"] is None  # delivered as a data URI: only the decoded file
        path = Path(first["path"])
        assert path.is_file() and _is_inside(path, out) and path.suffix == ".png"
        assert path.read_bytes().startswith(PNG_MAGIC)
        assert inline["cost_usd"] == pytest.approx(0.021)

        linked = await h.ok(
            "generate_image",
            {"prompt": "a blue owl", "model": URL_IMAGE_MODEL, "size": "1792x1024"},
        )
        second = linked["images"][0]
        assert second["url"] and second["url"].startswith(sandbox.base_url)
        path = Path(second["path"])
        assert path.is_file() and _is_inside(path, out)
        assert path.read_bytes().startswith(PNG_MAGIC)
        assert linked["cost_usd"] == pytest.approx(0.084)
        assert linked["budget_remaining_usd"] == pytest.approx(1.0 - 0.021 - 0.084)

        default = await h.ok("generate_image", {"prompt": "default model"})
        assert Path(default["images"][0]["path"]).is_file()
        state = sandbox.state
        for result in (inline, linked, default):
            settlement_by_tx(state, result["transaction"])
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


async def test_generate_video_reports_progress_and_saves_the_file(sandbox, tmp_path):
    sandbox.state.set_faults(video_polls_before_done=3)
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    async with open_server(tmp_path, sandbox) as h:
        video = await h.ok(
            "generate_video",
            {"prompt": "waves on a beach", "model": VIDEO_MODEL, "duration_seconds": 3},
            progress_callback=on_progress,
        )
        assert video["status"] == "completed" and video["job_id"]
        path = Path(video["path"])
        assert path.is_file() and _is_inside(path, tmp_path / "out")
        assert path.read_bytes()[4:8] == b"ftyp"
        assert video["url"] and video["url"].endswith(".mp4")
        assert video["cost_usd"] == pytest.approx(0.15)
        assert len(updates) >= 3  # queued, in progress..., completed
        assert all(message and video["job_id"] in message for _, _, message in updates)
        assert [p for p, _, _ in updates] == sorted(p for p, _, _ in updates)
        assert "completed" in updates[-1][2]
        state = sandbox.state
        assert state.jobs[video["job_id"]].status == "completed"
        settlement = settlement_by_tx(state, video["transaction"])
        assert len(set(nonces_seen(state))) == 1 and settlement.nonce == nonces_seen(state)[0]
        assert_every_payment_valid(state)
        assert_ledger_matches_sandbox(h.ledger, state)


async def test_budget_reports_limits_spend_and_receipts(sandbox, tmp_path):
    env = {
        "BLOCKRUN_SESSION_BUDGET_USD": "0.80",
        "BLOCKRUN_MAX_PER_CALL_USD": "0.25",
        "BLOCKRUN_DAILY_BUDGET_USD": "3",
    }
    async with open_server(tmp_path, sandbox, env=env) as h:
        fresh = await h.ok("budget")
        assert fresh == {
            "session_limit_usd": 0.8,
            "session_spent_usd": 0.0,
            "budget_remaining_usd": 0.8,
            "per_call_cap_usd": 0.25,
            "daily_limit_usd": 3.0,
            "daily_spent_usd": 0.0,
            "recent": [],
        }
        answer = await h.ok("ask_model", {"prompt": "hi", "model": OPUS, "max_tokens": 500})
        image = await h.ok("generate_image", {"prompt": "a cat", "model": DATA_URI_IMAGE_MODEL})
        spent = answer["cost_usd"] + image["cost_usd"]
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == pytest.approx(spent)
        assert budget["daily_spent_usd"] == pytest.approx(spent)
        assert budget["budget_remaining_usd"] == pytest.approx(0.8 - spent)
        assert image["budget_remaining_usd"] == pytest.approx(budget["budget_remaining_usd"])
        recent = budget["recent"]
        assert [(r["tool"], r["model"]) for r in recent] == [
            ("generate_image", DATA_URI_IMAGE_MODEL),
            ("ask_model", OPUS),
        ]
        assert all(r["status"] == "settled" for r in recent)
        assert [r["transaction"] for r in recent] == [image["transaction"], answer["transaction"]]
        assert recent[1]["cost_usd"] == pytest.approx(answer["cost_usd"])
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


async def test_budget_without_a_daily_limit_reports_none(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        budget = await h.ok("budget")
        assert budget["daily_limit_usd"] is None and budget["daily_spent_usd"] is None
        assert budget["session_limit_usd"] == 1.0 and budget["per_call_cap_usd"] == 0.5


@pytest.mark.parametrize("network", ["base", "base-sepolia"])
async def test_wallet_shows_address_and_network_never_the_key(tmp_path, network):
    from blockrun_mcp.sandbox import SandboxServer, SandboxState

    with SandboxServer(SandboxState(network=network)) as sandbox:
        async with open_server(tmp_path, sandbox, env={"BLOCKRUN_NETWORK": network}) as h:
            wallet = await h.ok("wallet")
            assert wallet["address"] == h.address
            assert wallet["network"] == network
            assert h.address in wallet["funding"]
            assert h.key[2:] not in str(wallet).lower()
            # A paid call on that network, so the key really is the one that pays.
            answer = await h.ok("ask_model", {"prompt": "hi", "model": CHEAP_MODEL})
            assert settlement_by_tx(sandbox.state, answer["transaction"]).payer == h.address
            assert_every_payment_valid(sandbox.state)
            assert_ledger_matches_sandbox(h.ledger, sandbox.state)
            assert {row.network for row in h.ledger.payments()} == {network}
            # No answer of any tool ever carried the key.
            assert all(h.key[2:] not in text.lower() for text in h.seen_texts)


async def test_results_keep_budget_remaining_consistent(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox) as h:
        remaining = 1.0
        for prompt in ("one", "two", "three"):
            answer = await h.ok("ask_model", {"prompt": prompt, "model": OPUS, "max_tokens": 100})
            remaining -= answer["cost_usd"]
            assert math.isclose(answer["budget_remaining_usd"], remaining, abs_tol=2e-6)
        assert_every_payment_valid(sandbox.state)
        assert_ledger_matches_sandbox(h.ledger, sandbox.state)


async def test_without_a_wallet_free_models_work_and_paid_calls_say_how(sandbox, tmp_path):
    async with open_server(tmp_path, sandbox, with_wallet=False) as h:
        free = await h.ok("ask_model", {"prompt": "no wallet", "model": FREE_MODEL})
        assert free["cost_usd"] == 0 and "no wallet" in free["content"]
        text = await h.fail("ask_model", {"prompt": "paid", "model": CHEAP_MODEL})
        assert "wallet create" in text and "BLOCKRUN_WALLET_KEY" in text
        text = await h.fail("wallet")
        assert "wallet create" in text
        state = sandbox.state
        assert not state.payments_seen and not state.settlements
        # The refused call left nothing counted against the budget.
        budget = await h.ok("budget")
        assert budget["session_spent_usd"] == 0 and budget["budget_remaining_usd"] == 1.0
        assert [row.status for row in h.ledger.payments()] == ["released"]
