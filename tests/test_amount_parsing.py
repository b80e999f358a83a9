"""Dollar amounts people write (budgets, limits) mean exactly what they show, or are refused.

An amount is ASCII digits with at most one decimal point, surrounding whitespace ignored: "5",
"0.50", " 1.00 ", and also "5." and ".5" (each can only be read one way). Python's float() takes
much more, and some of it reads as another amount than it shows: "0_5" is 5.0, "５" (fullwidth)
and "٥" (Arabic-Indic) are 5.0, "-0" is a limit of zero written with a sign, "1e3" is 1000, and
"inf" or "nan" are no limit at all. Each is refused where it is read: the environment
(config.py), the tokens file (identities.py) and the command line (cli.py), with an error naming
the setting, the text given and what to write instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from blockrun_mcp import money
from blockrun_mcp.cli import build_parser
from blockrun_mcp.config import ConfigError, load_config
from blockrun_mcp.identities import IdentitiesError, read_file

# text -> a word the refusal must contain (why it is refused)
BAD = {
    "0_5": "underscore",
    "1_000": "underscore",
    "５": "ASCII",  # fullwidth five
    "٥": "ASCII",  # Arabic-Indic five
    "۵٫۰": "ASCII",  # Extended Arabic-Indic, with the Arabic decimal separator
    "-0": "sign",
    "-0.0": "sign",
    "+1": "sign",
    "-1": "sign",
    "1e3": "exponent",
    "5E-1": "exponent",
    "inf": "infinity",
    "Infinity": "infinity",
    "nan": "NaN",
    "1 000": "space",
    "1\u00a0000": "space",  # a no-break space inside
    "1,5": "comma",
    "1.2.3": "decimal point",
    ".": "digit",
    "0x10": "digits 0-9",
    "2²": "ASCII",  # superscript two
    "": "empty",
    "   ": "empty",
}
# text -> the amount it means
GOOD = {
    "0.5": 0.5,
    "5": 5.0,
    "5.": 5.0,
    ".5": 0.5,
    " 1.00 ": 1.0,
    "\t0.25\n": 0.25,
    "0": 0.0,
    "000.10": 0.1,
    "1000000": 1_000_000.0,
}
# An empty variable means its default (tested below), so the blank forms are not among these.
ENV_BAD = {text: why for text, why in BAD.items() if text.strip()}
ENV_AMOUNTS = (
    "BLOCKRUN_SESSION_BUDGET_USD",
    "BLOCKRUN_MAX_PER_CALL_USD",
    "BLOCKRUN_DAILY_BUDGET_USD",
    "BLOCKRUN_CONFIRM_ABOVE_USD",
)
CONFIG_FIELDS = {
    "BLOCKRUN_SESSION_BUDGET_USD": "session_budget_usd",
    "BLOCKRUN_MAX_PER_CALL_USD": "max_per_call_usd",
    "BLOCKRUN_DAILY_BUDGET_USD": "daily_budget_usd",
    "BLOCKRUN_CONFIRM_ABOVE_USD": "confirm_above_usd",
}
# The advice every refusal ends with: what to write instead.
ADVICE = "digits 0-9 with at most one decimal point"


# --- the parser itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "why"), BAD.items())
def test_the_parser_refuses_each_bad_form_and_says_why_and_what_to_write(
    text: str, why: str
) -> None:
    with pytest.raises(ValueError) as refused:
        money.parse_usd_text(text)
    message = str(refused.value)
    assert repr(text.strip()) in message, "the error shows what was given"
    assert why.lower() in message.lower(), message
    assert ADVICE in message and "e.g. 1.00" in message, message


@pytest.mark.parametrize(("text", "usd"), GOOD.items())
def test_the_parser_reads_plain_amounts(text: str, usd: float) -> None:
    assert money.parse_usd_text(text) == usd


def test_an_amount_too_large_for_a_float_is_refused_not_infinite() -> None:
    with pytest.raises(ValueError, match="too large"):
        money.parse_usd_text("9" * 400)


# --- environment variables (config.py) -----------------------------------------------------------


@pytest.mark.parametrize("name", ENV_AMOUNTS)
@pytest.mark.parametrize(("text", "why"), ENV_BAD.items())
def test_every_usd_variable_refuses_each_bad_form(
    tmp_path: Path, name: str, text: str, why: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({"HOME": str(tmp_path), name: text})
    message = str(refused.value)
    assert message.startswith(f"{name}: {text.strip()!r} "), message
    assert why.lower() in message.lower() and ADVICE in message, message


@pytest.mark.parametrize("name", ENV_AMOUNTS)
@pytest.mark.parametrize(("text", "usd"), GOOD.items())
def test_every_usd_variable_reads_plain_amounts(
    tmp_path: Path, name: str, text: str, usd: float
) -> None:
    config = load_config({"HOME": str(tmp_path), name: text})
    assert getattr(config, CONFIG_FIELDS[name]) == usd


def test_an_empty_variable_is_its_default_and_a_dollar_sign_is_only_a_unit(tmp_path: Path) -> None:
    config = load_config(
        {
            "HOME": str(tmp_path),
            "BLOCKRUN_SESSION_BUDGET_USD": "  ",
            "BLOCKRUN_MAX_PER_CALL_USD": "$0.10",
        }
    )
    assert (config.session_budget_usd, config.max_per_call_usd) == (1.0, 0.1)
    for text in ("$-0", "$0_5", "$ 1", "$$1", "1$"):
        with pytest.raises(ConfigError, match=ADVICE):
            load_config({"HOME": str(tmp_path), "BLOCKRUN_MAX_PER_CALL_USD": text})


def test_a_variable_over_a_million_dollars_is_still_refused_as_implausible(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"BLOCKRUN_DAILY_BUDGET_USD.*implausibly large"):
        load_config({"HOME": str(tmp_path), "BLOCKRUN_DAILY_BUDGET_USD": "1000000.01"})


# --- the tokens file (identities.py) -------------------------------------------------------------

HASH = "ab" * 32


def _tokens_file(tmp_path: Path, amount: str, key: str = "daily_budget_usd") -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(
        f'[[identity]]\nname = "alice"\ntoken_sha256 = "{HASH}"\n{key} = {amount}  # dollars\n',
        encoding="utf-8",
    )
    return path


# Numbers TOML itself accepts (the rest of BAD is not TOML at all, and tomllib refuses it).
TOML_BAD = {
    "1_000": "underscore",
    "5_0.5": "underscore",
    "-0": "sign",
    "-0.0": "sign",
    "+1": "sign",
    "+1.5": "sign",
    "1e3": "exponent",
    "5E-1": "exponent",
    "inf": "infinity",
    "nan": "NaN",
    "0x10": "digits 0-9",
    "0o17": "digits 0-9",
    "0b11": "digits 0-9",
}


@pytest.mark.parametrize("key", ["daily_budget_usd", "max_per_call_usd"])
@pytest.mark.parametrize(("amount", "why"), TOML_BAD.items())
def test_the_tokens_file_refuses_amounts_toml_reads_otherwise_than_they_show(
    tmp_path: Path, key: str, amount: str, why: str
) -> None:
    with pytest.raises(IdentitiesError) as refused:
        read_file(_tokens_file(tmp_path, amount, key))
    message = str(refused.value)
    assert str(tmp_path / "tokens.toml") in message and key in message, message
    assert repr(amount) in message and why.lower() in message.lower(), message
    assert ADVICE in message, message


def test_the_tokens_file_refuses_them_in_an_inline_table_too(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(
        f'identity = [{{name = "alice", token_sha256 = "{HASH}", daily_budget_usd = 5e-1}}]\n',
        encoding="utf-8",
    )
    with pytest.raises(IdentitiesError, match="exponent"):
        read_file(path)


@pytest.mark.parametrize(("amount", "usd"), [("2", 2.0), ("2.000000", 2.0), ("0.05", 0.05)])
def test_the_tokens_file_reads_plain_amounts(tmp_path: Path, amount: str, usd: float) -> None:
    (alice,) = read_file(_tokens_file(tmp_path, amount))
    assert alice.daily_budget_usd == usd


# --- the command line (cli.py) -------------------------------------------------------------------

CLI_AMOUNTS = [
    ["token", "add", "alice", "--daily-budget"],
    ["token", "add", "alice", "--max-per-call"],
    ["models", "--max-price"],
]


@pytest.mark.parametrize("words", CLI_AMOUNTS, ids=lambda words: words[-1])
@pytest.mark.parametrize("text", ["0_5", "５", "-0", "1e3", "inf", "nan"])
def test_the_cli_refuses_each_bad_form_naming_the_option(
    words: list[str], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*words, text])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {words[-1]}" in error and repr(text) in error and ADVICE in error, error


@pytest.mark.parametrize("words", CLI_AMOUNTS, ids=lambda words: words[-1])
@pytest.mark.parametrize(("text", "usd"), [("0.5", 0.5), ("5", 5.0), ("5.", 5.0), (".5", 0.5)])
def test_the_cli_reads_plain_amounts(words: list[str], text: str, usd: float) -> None:
    args = build_parser().parse_args([*words, text])
    option = words[-1].removeprefix("--").replace("-", "_")
    assert getattr(args, option) == usd
