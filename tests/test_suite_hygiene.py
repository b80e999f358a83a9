"""Every test asserts something: a test that cannot fail proves nothing.

The rule, checked on the source of every tests/test_*.py: each `test*` function must, somewhere
in its body (nested functions included),

1. hold an `assert` statement, or call `pytest.raises` or `pytest.fail`; or
2. name a test helper called `assert_*` or `check_*` that the tests themselves define (in the
   same module or in tests/support/): calling it, or handing it over, as to `anyio.run`; or
3. call a function or method of tests/support/ that itself holds an `assert` or `pytest.raises`
   (such as `Harness.ok`, `reconcile`, `error_text`), matched by name. Set-up helpers that yield
   (fixtures, `open_server`, `http_server`) do not count: their checks are about the set-up.

Our own code's `check_*` functions (transports.check_http_binding) are not test helpers: calling
one and only seeing it not raise is not an assertion (say what else must hold, or use
pytest.raises). Whether an assertion is worth making is still for review to judge.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"
CHECK_PREFIXES = ("assert_", "check_")

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(tree: ast.AST) -> list[FunctionNode]:
    return [node for node in ast.walk(tree) if isinstance(node, FunctionNode)]


def _asserts_itself(function: FunctionNode) -> bool:
    """An `assert`, or a call of pytest.raises / pytest.fail, anywhere in the body."""
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            return True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "pytest"
            and node.func.attr in ("raises", "fail")
        ):
            return True
    return False


def _yields(function: FunctionNode) -> bool:
    return any(isinstance(node, ast.Yield | ast.YieldFrom) for node in ast.walk(function))


def _names_used(function: FunctionNode) -> set[str]:
    """Every name the body reads, and every attribute it takes (`h.ok` gives "ok")."""
    names = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    return names


def _names_called(function: FunctionNode) -> set[str]:
    called = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                called.add(node.func.id)
            elif isinstance(node.func, ast.Attribute):
                called.add(node.func.attr)
    return called


def _support_functions() -> list[FunctionNode]:
    return [
        function
        for path in sorted(SUPPORT.glob("*.py"))
        for function in _functions(ast.parse(path.read_text(encoding="utf-8")))
    ]


def _support_asserting() -> set[str]:
    """Names of the tests/support/ functions and methods that assert and are not set-up."""
    return {f.name for f in _support_functions() if _asserts_itself(f) and not _yields(f)}


def unasserted_in(tree: ast.AST) -> list[FunctionNode]:
    """The test functions of one module's tree that the rule above does not accept."""
    support_checks = {f.name for f in _support_functions() if f.name.startswith(CHECK_PREFIXES)}
    support_asserting = _support_asserting()
    functions = _functions(tree)
    helpers = support_checks | {f.name for f in functions if f.name.startswith(CHECK_PREFIXES)}
    return [
        function
        for function in functions
        if function.name.startswith("test")
        and not _asserts_itself(function)
        and not _names_used(function) & helpers
        and not _names_called(function) & support_asserting
    ]


def test_every_test_asserts_something():
    unasserted = [
        f"{path.name}:{function.lineno} {function.name}"
        for path in sorted(TESTS.glob("test_*.py"))
        for function in unasserted_in(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not unasserted, (
        "tests that assert nothing (this module's docstring says what counts):\n"
        + ("\n".join(unasserted))
    )


def test_the_hygiene_check_tells_a_test_that_asserts_from_one_that_does_not():
    """The rule itself, on made-up test functions."""
    source = """
import pytest
from blockrun_mcp.transports import check_http_binding

def assert_fine(x):
    assert x

def test_plain():
    assert 1 + 1 == 2

def test_raises():
    with pytest.raises(ValueError):
        int("x")

def test_own_helper():
    assert_fine(3)

def test_handed_over():
    anyio.run(assert_fine, 3)

async def test_harness(h):
    await h.ok("wallet")

def test_nothing():
    x = 1 + 1

def test_production_check_only():
    check_http_binding("127.0.0.1", None)

async def test_only_set_up(tmp_path):
    async with open_server(tmp_path, None):
        pass
"""
    unasserted = {function.name for function in unasserted_in(ast.parse(source))}
    assert unasserted == {"test_nothing", "test_production_check_only", "test_only_set_up"}
    support_asserting = _support_asserting()
    assert {"ok", "fail", "reconcile", "error_text"} <= support_asserting
    assert "open_server" not in support_asserting and "http_server" not in support_asserting
