"""`spend --reconcile` and `spend`'s pending reasons (who doctor says was paid: test_doctor.py).

The chain is the sandbox's stand-in chain, which answers `authorizationState` from what the
sandbox really settled; the ledger rows are what a server would have left behind.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import anyio

from blockrun_mcp.cli import main
from blockrun_mcp.ledger import Ledger
from blockrun_mcp.payments import FINALITY_MARGIN_SECONDS
from tests.support.cli import signed_row
from tests.support.payer import chat_request, make_gateway

OTHER_PAYEE = "0x" + "12" * 20


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(tmp_path),
        "BLOCKRUN_DATA_DIR": str(tmp_path / "data"),
        "BLOCKRUN_API_URL": "http://127.0.0.1:9/api",  # no gateway is needed here
        **extra,
    }


def _run(monkeypatch, capsys, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    for name in list(os.environ):
        if name.startswith(("BLOCKRUN_", "BASE_CHAIN_")):
            monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


async def _settled_nonce(sandbox, account) -> str:
    """A payment the sandbox really settled (its answer then 'lost' by the ledger below)."""
    gateway = make_gateway(sandbox.base_url, account)
    try:
        _answer, paid = await gateway.chat(chat_request("settled for real"))
    finally:
        await gateway.aclose()
    assert paid.payment is not None and len(sandbox.state.settlements) == 1
    return paid.payment.nonce


def test_spend_reconcile_books_what_the_chain_says(
    sandbox, funded_account, tmp_path, monkeypatch, capsys
):
    used = anyio.run(_settled_nonce, sandbox, funded_account)
    expired = int(time.time()) - FINALITY_MARGIN_SECONDS - 60
    payee = sandbox.state.treasury
    path = tmp_path / "data" / "ledger.sqlite3"
    ledger = Ledger(path)
    rows = {
        "used": signed_row(
            ledger, payer=funded_account.address, nonce=used, valid_before=expired, pay_to=payee
        ),
        "unused": signed_row(
            ledger,
            payer=funded_account.address,
            nonce="0x" + secrets.token_hex(32),
            valid_before=expired,
            pay_to=payee,
        ),
        "valid": signed_row(
            ledger,
            payer=funded_account.address,
            nonce="0x" + secrets.token_hex(32),
            valid_before=int(time.time()) + 300,
            pay_to=payee,
        ),
        "old": signed_row(ledger, payer=None, nonce="0x01", valid_before=None, pay_to=payee),
    }
    ledger.close()
    env = _env(tmp_path, BLOCKRUN_RPC_URL=sandbox.rpc_url)

    code, out, err = _run(monkeypatch, capsys, env, "spend", "--json")
    assert code == 0, err
    pending = {p["id"]: p for p in json.loads(out)["pending"]}
    assert "--reconcile" in pending[rows["unused"]]["why"]
    assert "may still settle" in pending[rows["valid"]]["why"]
    assert "older version" in pending[rows["old"]]["why"]
    assert len(pending) == 4  # plain `spend` changes nothing

    code, out, err = _run(monkeypatch, capsys, env, "spend", "--reconcile")
    assert code == 0, err
    assert "1 settled, 1 released (expired unused), 2 still counted" in out
    ledger = Ledger(path)
    status = {row.id: row for row in ledger.payments()}
    ledger.close()
    assert status[rows["used"]].status == "settled"
    assert status[rows["used"]].settled_atomic == 10_000
    assert status[rows["unused"]].status == "released"
    assert "expired unused" in status[rows["unused"]].note
    assert status[rows["valid"]].status == "signed"
    assert status[rows["old"]].status == "signed"


def test_spend_reconcile_with_no_chain_releases_nothing(tmp_path, monkeypatch, capsys):
    path = tmp_path / "data" / "ledger.sqlite3"
    ledger = Ledger(path)
    payment = signed_row(
        ledger,
        payer="0x" + "ab" * 20,
        nonce="0x" + "22" * 32,
        valid_before=int(time.time()) - 3600,
        pay_to=OTHER_PAYEE,
    )
    ledger.close()
    env = _env(tmp_path, BLOCKRUN_RPC_URL="http://127.0.0.1:9/rpc")
    code, out, err = _run(monkeypatch, capsys, env, "spend", "--reconcile", "--json")
    assert code == 0
    assert "could not be read" in err and "127.0.0.1:9" in err
    assert json.loads(out)["pending"][0]["id"] == payment
    code, _, err = _run(monkeypatch, capsys, env, "spend", "--reconcile", "--sandbox")
    assert code == 2 and "sandbox" in err
