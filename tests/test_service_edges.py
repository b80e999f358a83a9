"""Edges users met with other people's software: an empty `model`, a call cancelled after it
paid, a running video job that only a progress message named."""

from __future__ import annotations

import json

import anyio
import pytest

from blockrun_mcp.cli import main
from blockrun_mcp.reports import ledger_path
from tests.support.security import wait_until
from tests.support.server import CHEAP_MODEL, VIDEO_MODEL, open_server

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("model", ["", "   "])
async def test_an_empty_model_means_the_default(sandbox, tmp_path, model):
    async with open_server(tmp_path, sandbox) as h:
        answer = await h.ok("ask_model", {"prompt": "which model?", "model": model})
        assert answer["model"] == CHEAP_MODEL
        image = await h.ok("generate_image", {"prompt": "a default image", "model": model})
        assert image["model"] == "openai/gpt-image-1"
        estimate = await h.fail("estimate_cost", {"model": model})
        assert "model id" in estimate  # estimating needs to know which model
        assert len(sandbox.state.settlements) == 2


async def test_a_call_cancelled_after_paying_says_so_in_the_ledger(sandbox, tmp_path):
    state = sandbox.state
    state.set_faults(model_latency_seconds=30)  # the answer stalls after the paid 200
    async with open_server(tmp_path, sandbox) as h:
        with anyio.move_on_after(20) as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(h.call, "ask_model", {"prompt": "slow", "model": CHEAP_MODEL})
                await wait_until(lambda: len(state.settlements) == 1, timeout=15)
                group.cancel_scope.cancel()
        assert not scope.cancelled_caught
        await wait_until(lambda: "cancelled" in h.ledger.payments()[0].note, timeout=10)
        (row,) = h.ledger.payments()
        # The 200 arrived before the cut: settled, and the ledger says why no answer followed.
        assert row.status == "settled" or row.status == "signed"
        assert "cancelled" in row.note
        assert row.counted_atomic == row.amount_atomic


async def test_a_running_video_is_named_by_budget_and_spend(sandbox, tmp_path, monkeypatch, capsys):
    sandbox.state.set_faults(video_polls_before_done=10_000)
    async with open_server(tmp_path, sandbox, video_wait_seconds=0.2) as h:
        video = await h.ok(
            "generate_video", {"prompt": "a long one", "model": VIDEO_MODEL, "duration_seconds": 1}
        )
        assert video["status"] == "running"
        (receipt,) = (await h.ok("budget"))["recent"]
        assert receipt["job_id"] == video["job_id"] and receipt["status"] == "pending"
        path = ledger_path(h.config.data_dir)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("BLOCKRUN_DATA_DIR", str(path.parent))
    with pytest.raises(SystemExit) as exited:
        main(["spend", "--json"])
        raise SystemExit(0)
    assert exited.value.code in (0, None)
    report = json.loads(capsys.readouterr().out)
    (pending,) = report["pending"]
    assert pending["job_id"] == video["job_id"]
    with pytest.raises(SystemExit):
        main(["spend"])
        raise SystemExit(0)
    text = capsys.readouterr().out
    assert f"generate_video(job_id={video['job_id']!r})" in text
