"""Helpers for the dashboard tests (tests/test_dashboard*.py): a ledger filled by paying the
sandbox, the `dashboard` command as a subprocess, Chromium, and the figures a page shows.

The page puts every figure it renders into data-* attributes (dashboard.js): the browser tests
read those from the DOM Chromium dumps after the page's script ran, and compare them with
`blockrun-mcp spend --json`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from blockrun_mcp.config import Config
from blockrun_mcp.sandbox import SandboxServer
from tests.support.server import (
    CHEAP_MODEL,
    URL_IMAGE_MODEL,
    VIDEO_MODEL,
    open_server,
)

# CI sets this (.ci/run): there a missing Chromium fails the browser tests instead of skipping.
IN_CI = os.environ.get("BLOCKRUN_CI") == "1"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


async def fill_ledger(tmp_path: Path, sandbox: SandboxServer, **env: str) -> Config:
    """Real paid calls through a real MCP session on the sandbox: three settled answers and an
    image, and a video still rendering (signed, so pending, with a job to resume). The
    ledger stays in tmp_path/data for the commands to read."""
    sandbox.state.set_faults(video_polls_before_done=10_000)
    async with open_server(tmp_path, sandbox, env=env, video_wait_seconds=0.2) as h:
        for prompt in ("one", "two"):
            await h.ok("ask_model", {"prompt": prompt, "model": CHEAP_MODEL})
        await h.ok("ask_model", {"prompt": "three", "model": "anthropic/claude-sonnet-4.6"})
        await h.ok("generate_image", {"prompt": "a lighthouse", "model": URL_IMAGE_MODEL})
        video = await h.ok(
            "generate_video", {"prompt": "waves", "model": VIDEO_MODEL, "duration_seconds": 1}
        )
        assert video["status"] == "running", video
        return h.config


def backdate(config: Config, payment_id: int, days: int) -> None:
    """Move one payment `days` UTC days back, so the chart has more than today. The ledger
    writes only today's date, so this edits the file itself (its on-disk schema)."""
    then = time.time() - days * 86_400
    day = time.strftime("%Y-%m-%d", time.gmtime(then))
    path = config.data_dir / "ledger.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE payments SET day=?, created_at=? WHERE id=?", (day, then, payment_id))


@dataclass
class Dashboard:
    """`blockrun-mcp dashboard` running in a subprocess, and the URL it printed."""

    process: subprocess.Popen[str]
    url: str

    @property
    def base(self) -> str:
        return self.url.split("?", 1)[0].rstrip("/")

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    @property
    def token(self) -> str:
        return self.url.split("token=", 1)[1]


@contextmanager
def dashboard_process(env: dict[str, str], *args: str) -> Iterator[Dashboard]:
    """Start `blockrun-mcp dashboard --no-open --port 0 *args` under exactly `env`; stopped
    (SIGINT, as Ctrl-C) at the end if it still runs."""
    process = subprocess.Popen(
        [sys.executable, "-m", "blockrun_mcp", "dashboard", "--no-open", "--port", "0", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("blockrun-mcp dashboard: http://127.0.0.1:"), line + (
            process.stderr.read() if process.poll() is not None and process.stderr else ""
        )
        yield Dashboard(process=process, url=line.split(": ", 1)[1].strip())
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def chromium() -> str:
    """The Chromium to drive: skipped without one, except in CI, where that is a failure."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if IN_CI:
        pytest.fail(
            "Chromium is not installed, and BLOCKRUN_CI=1 says this is CI, where .ci/run "
            "installs it (apt-get install -y chromium)"
        )
    pytest.skip("Chromium is not installed (apt-get install -y chromium; CI installs it)")


def browse(url: str, tmp_path: Path, *, screenshot: Path | None = None) -> str:
    """The DOM of `url` once its scripts ran (5 s of virtual time: the page's first fetch
    completes within it), from headless Chromium with a profile of its own."""
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # CI runs as root, where Chromium's own sandbox cannot start
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--window-size=1280,900",
    ]
    command.append(f"--screenshot={screenshot}" if screenshot else "--dump-dom")
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@dataclass
class Figures:
    """What a rendered page shows, read back from its data-* attributes."""

    state: str = ""
    scope: str = ""
    totals: dict[str, str] = field(default_factory=dict)
    groups: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    limits: dict[str, dict[str, str]] = field(default_factory=dict)
    days: dict[str, dict[str, str]] = field(default_factory=dict)
    pending: dict[int, dict[str, str]] = field(default_factory=dict)
    receipts: dict[int, dict[str, str]] = field(default_factory=dict)
    jobs: dict[str, dict[str, str]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # tx hash -> href
    text: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figures = Figures()
        self._receipt_tx: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        f = self.figures
        if a.get("id") == "app":
            f.state, f.scope = a.get("data-state", ""), a.get("data-scope", "")
        if "data-figure" in a:
            f.totals[a["data-figure"]] = a.get("data-value", "")
        if "data-group" in a:
            f.groups[a["data-group"], a["data-name"]] = a
        if "data-limit" in a:
            f.limits[a["data-limit"]] = a
        if "data-day" in a:
            f.days[a["data-day"]] = a
        if "data-receipt-id" in a:
            f.receipts[int(a["data-receipt-id"])] = a
            self._receipt_tx = a.get("data-tx") or None
        elif "data-payment-id" in a and "data-job-id" not in a:
            f.pending[int(a["data-payment-id"])] = a
        if "data-job-id" in a:
            f.jobs[a["data-job-id"]] = a
        if tag == "a" and self._receipt_tx and "href" in a:
            f.links[self._receipt_tx] = a["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._receipt_tx = None

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.figures.text.append(data.strip())


def read_figures(html: str) -> Figures:
    reader = _Reader()
    reader.feed(html)
    return reader.figures


def as_number(text: str) -> float:
    """A figure as the page wrote it (JavaScript's shortest form of the JSON number)."""
    return float(text)


def assert_page_matches_spend(figures: Figures, spend: dict[str, Any]) -> None:
    """Every figure the page rendered equals `blockrun-mcp spend --json`'s."""
    assert figures.state == "ready", figures.text[:20]
    totals = spend["totals"]
    for key in ("spent_usd", "pending_usd", "total_usd", "payments", "released"):
        assert as_number(figures.totals[key]) == totals[key], key
    for kind in ("model", "tool", "identity"):
        for row in spend[f"by_{kind}"]:
            if kind == "identity" and [r["identity"] for r in spend["by_identity"]] == ["default"]:
                continue  # one person alone: the page leaves the table out, like `spend`
            shown = figures.groups[kind, row[kind]]
            assert int(shown["data-payments"]) == row["payments"]
            for column in ("spent", "pending", "total"):
                assert as_number(shown[f"data-{column}"]) == row[f"{column}_usd"], (kind, column)
    shown_kinds = {kind for kind, _ in figures.groups}
    assert {"model", "tool"} <= shown_kinds
    for row in spend["by_day"]:
        if row["day"] in figures.days:  # the chart's 30 days
            day = figures.days[row["day"]]
            assert as_number(day["data-total"]) == row["total_usd"]
            assert as_number(day["data-spent"]) == row["spent_usd"]
            assert as_number(day["data-pending"]) == row["pending_usd"]
    charted = sum(as_number(d["data-total"]) for d in figures.days.values())
    in_window = sum(r["total_usd"] for r in spend["by_day"] if r["day"] in figures.days)
    assert round(charted, 6) == round(in_window, 6)  # no day drawn that spend does not know
    assert sorted(figures.pending) == sorted(p["id"] for p in spend["pending"])
    for pending in spend["pending"]:
        assert as_number(figures.pending[pending["id"]]["data-amount"]) == pending["amount_usd"]
    expected = {r["id"]: r for r in spend["receipts"][:50]}
    assert sorted(figures.receipts) == sorted(expected)
    for receipt_id, receipt in expected.items():
        shown = figures.receipts[receipt_id]
        assert as_number(shown["data-amount"]) == receipt["amount_usd"]
        assert shown["data-tx"] == (receipt["tx_hash"] or "")
