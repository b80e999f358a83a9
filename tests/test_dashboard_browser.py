"""`blockrun-mcp dashboard` in a real browser: headless Chromium opens the URL the command
printed (token in the query, moved into a cookie by a redirect), runs the page's script, which
fetches the JSON and renders it; the figures in the DOM then equal `blockrun-mcp spend --json`
for a ledger filled by paying the sandbox.

Skipped where Chromium is missing, except in CI (BLOCKRUN_CI=1, set by .ci/run, which installs
it): there a missing browser is a failure.
"""

from __future__ import annotations

import json

import anyio
import pytest

from blockrun_mcp.ledger import Ledger
from tests.support.cli import cli_env, run_cli
from tests.support.dashboard import (
    assert_page_matches_spend,
    backdate,
    browse,
    chromium,
    dashboard_process,
    fill_ledger,
    read_figures,
)

pytestmark = pytest.mark.usefixtures("within_one_utc_day")


def test_the_page_in_chromium_shows_what_spend_json_says(sandbox, tmp_path):
    chromium()  # skipped (or failed, in CI) before paying for anything
    config = anyio.run(fill_ledger, tmp_path, sandbox)
    ledger = Ledger(config.data_dir / "ledger.sqlite3", read_only=True)
    try:
        oldest = min(row.id for row in ledger.payments() if row.status == "settled")
    finally:
        ledger.close()
    backdate(config, oldest, days=3)  # the chart has two days to draw
    env = cli_env(tmp_path, BLOCKRUN_DAILY_BUDGET_USD="5.00")
    done = run_cli(env, "spend", "--json")
    assert done.returncode == 0, done.stderr
    spend = json.loads(done.stdout)
    with dashboard_process(env) as board:
        dom = browse(board.url, tmp_path)
    figures = read_figures(dom)
    assert_page_matches_spend(figures, spend)
    assert figures.scope == "everyone"
    assert sum(float(day["data-total"]) > 0 for day in figures.days.values()) == 2
    assert len(figures.days) == 30
    # Every receipt's transaction links to Base's explorer, and only there.
    assert figures.links == {
        r["tx_hash"]: f"https://basescan.org/tx/{r['tx_hash']}" for r in spend["receipts"]
    }
    # Today's daily budget: the figures of today's row of `spend`, and what is left.
    today = max(row["day"] for row in spend["by_day"])
    (row,) = [r for r in spend["by_day"] if r["day"] == today]
    daily = figures.limits["daily"]
    assert float(daily["data-limit-usd"]) == 5.0
    assert float(daily["data-spent"]) == row["spent_usd"]
    assert float(daily["data-pending"]) == row["pending_usd"]
    assert float(daily["data-left"]) == round(5.0 - row["total_usd"], 6)
    # The video still rendering: pending, and resumable by its job id.
    (pending,) = spend["pending"]
    assert list(figures.jobs) == [pending["job_id"]]
    assert f"generate_video(job_id='{pending['job_id']}')" in figures.text
    assert any("may still settle until" in text for text in figures.text)
