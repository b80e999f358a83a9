"""The sandbox's scripted function-calling model, over real HTTP and paid through our X402Payer.

What the `delegate` tool's loop needs from the sandbox: OpenAI function calling on
/v1/chat/completions (streamed and not) and on /v1/responses, driven by directives in the task
(or a default script), each step quoted by the written pricing rule, and OpenAI's refusals of
malformed tool conversations as 400s before any quote. The tools' results come from a small
in-memory workspace here, so nothing outside the repository is read.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import time
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from blockrun_mcp.money import usd_to_atomic
from blockrun_mcp.sandbox import SandboxServer, quotes
from blockrun_mcp.x402.networks import BASE
from blockrun_mcp.x402.payer import PaidResponse, X402Payer
from blockrun_mcp.x402.policy import SigningPolicy
from tests.support.payer import assert_every_payment_valid

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MODEL = "openai/gpt-5.2"  # $1.75 in, $14 out per million: the quote moves with every token
INPUT_PRICE, OUTPUT_PRICE = Decimal("1.75"), Decimal("14")
DEFAULT_MAX_TOKENS = 1024
LIST_ALL = '{"pattern":"**/*"}'
TASK = "have deepseek find where we parse the config and list what each option does"

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "list_files",
            "description": "List workspace files matching a glob.",
            "parameters": {
                "type": "object",
                "properties": {"pattern": {"type": "string"}},
                "required": ["pattern"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read lines of a workspace file.",
            "parameters": {
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "start_line": {"type": "integer"},
                    "end_line": {"type": "integer"},
                },
                "required": ["path"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the workspace; results are path:line: text.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "pattern": {"type": "string"},
                    "regex": {"type": "boolean"},
                },
                "required": ["query"],
            },
        },
    },
]
# The same tools in the Responses API's flat shape.
FLAT_TOOLS = [{"type": "function", **tool["function"]} for tool in TOOLS]

WORKSPACE = {
    "README.md": "# Demo\nRun it with --verbose.\n",
    "src/app/config.py": "def parse_config(path):\n    # options: timeout, retries\n    return {}\n",
    "src/app/main.py": "from app.config import parse_config\n",
}


# the client's side: the tools' results and the pricing rule, written independently


def run_tool(name: str, arguments: str) -> str:
    """What the delegate loop would answer a call with, from the in-memory WORKSPACE."""
    try:
        args = json.loads(arguments)
    except ValueError:
        return f"error: the arguments are not JSON: {arguments}"
    if name == "list_files":
        return "\n".join(sorted(WORKSPACE))
    if name == "search":
        return "\n".join(
            f"{path}:{number}: {line}"
            for path, text in sorted(WORKSPACE.items())
            for number, line in enumerate(text.splitlines(), 1)
            if args.get("query", "") in line
        )
    if name == "read_file":
        return WORKSPACE.get(args.get("path", ""), "error: no such file")
    return f"error: unknown tool {name}"


def rule_texts(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[str]:
    """The pricing rule as quotes.py's docstring writes it, implemented here from scratch."""
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            text = content
        else:
            text = "".join(part.get("text", "") for part in content or [])
        if message["role"] == "assistant":
            for call in message.get("tool_calls") or []:
                text += call["function"]["name"] + call["function"]["arguments"]
        texts.append(text)
    if tools:
        functions = [tool.get("function", tool) for tool in tools]
        texts.append(
            "".join(
                f["name"]
                + (f.get("description") or "")
                + json.dumps(f.get("parameters") or {}, sort_keys=True, separators=(",", ":"))
                for f in functions
            )
        )
    return texts


def rule_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
    return sum(math.ceil(len(text) / 4) + 4 for text in rule_texts(messages, tools))


def rule_atomic(tokens: int, max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    usd = (tokens * INPUT_PRICE + Decimal("0.1") * max_tokens * OUTPUT_PRICE) / 10**6
    return max(math.ceil(usd * Decimal("1.05") * 10**6), 1000)


def responses_as_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A Responses body's input as the rule prices it: one message per item."""
    messages = (
        [{"role": "system", "content": body["instructions"]}] if "instructions" in body else []
    )
    for item in body["input"]:
        if item.get("type") == "function_call":
            function = {"name": item["name"], "arguments": item["arguments"]}
            messages.append({"role": "assistant", "tool_calls": [{"function": function}]})
        elif item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": item["output"]})
        else:
            messages.append(item)
    return messages


# paying and reading answers


def make_payer(account: Any) -> X402Payer:
    policy = SigningPolicy(network=BASE, max_atomic=usd_to_atomic(0.50))
    return X402Payer(lambda: account, policy, retry_delay_seconds=0.05)


async def pay(
    sandbox: SandboxServer, account: Any, body: dict[str, Any], path: str = CHAT
) -> PaidResponse:
    """POST `body`, paying the 402 with our payer; the answer is read in full."""
    async with httpx2.AsyncClient(timeout=15.0, follow_redirects=False) as client:
        request = client.build_request("POST", sandbox.base_url + path, json=body)
        return await make_payer(account).send(client, request)


def chunks_of(text: str) -> list[dict[str, Any]]:
    """The chat.completion.chunk events of a stream, which must end with [DONE]."""
    data = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


def assemble(chunks: list[dict[str, Any]]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(assistant message, finish_reason, usage) rebuilt from stream chunks, as clients do:
    tool calls gathered by index, their arguments concatenated."""
    content: str | None = None
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks[:-1]:
        delta = chunk["choices"][0]["delta"]
        if delta.get("content"):
            content = (content or "") + delta["content"]
        for piece in delta.get("tool_calls", []):
            call = calls.setdefault(
                piece["index"], {"type": "function", "function": {"name": "", "arguments": ""}}
            )
            call.update({key: piece[key] for key in ("id", "type") if key in piece})
            function = piece.get("function", {})
            call["function"]["name"] += function.get("name", "")
            call["function"]["arguments"] += function.get("arguments", "")
    last = chunks[-1]
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return message, last["choices"][0]["finish_reason"], last["usage"]


def refusal(paid: PaidResponse) -> str:
    """The message of a 400 in the sandbox's error shape, refused before anything was signed."""
    response = paid.response
    assert response.status_code == 400, response.text
    assert paid.payment is None
    body = response.json()
    assert body["code"] == body["error"]["code"] == "INVALID_REQUEST"
    assert body["message"] == body["error"]["message"]
    return body["message"]


def assert_nothing_quoted_or_paid(sandbox: SandboxServer) -> None:
    state = sandbox.state
    assert state.issued_terms == [] and state.payments_seen == [] and state.settlements == []


class Turn:
    """One paid chat turn: the body sent, what it cost and the assistant message it got."""

    def __init__(self, body: dict[str, Any], paid: PaidResponse, stream: bool) -> None:
        assert paid.response.status_code == 200, paid.response.text
        self.body = body
        self.paid = paid
        if stream:
            assert paid.response.headers["content-type"].startswith("text/event-stream")
            self.chunks = chunks_of(paid.response.text)
            self.message, self.finish_reason, self.usage = assemble(self.chunks)
        else:
            choice = paid.response.json()["choices"][0]
            self.message, self.finish_reason = choice["message"], choice["finish_reason"]
            self.usage = paid.response.json()["usage"]

    @property
    def calls(self) -> list[dict[str, Any]]:
        return self.message.get("tool_calls") or []


async def converse(
    sandbox: SandboxServer,
    account: Any,
    task: str,
    *,
    stream: bool = False,
    max_steps: int = 8,
    **extra: Any,
) -> list[Turn]:
    """The delegate loop: send the conversation, run the calls it answers with, until an
    answer without calls (or `max_steps`)."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You explore a workspace with tools."},
        {"role": "user", "content": task},
    ]
    turns: list[Turn] = []
    for _ in range(max_steps):
        body = {"model": MODEL, "messages": list(messages), "tools": TOOLS, **extra}
        if stream:
            body["stream"] = True
        turn = Turn(body, await pay(sandbox, account, body), stream)
        turns.append(turn)
        if not turn.calls:
            break
        messages.append(turn.message)
        for call in turn.calls:
            output = run_tool(call["function"]["name"], call["function"]["arguments"])
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
    return turns


def called(turn: Turn) -> list[tuple[str, str]]:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in turn.calls]


# a whole conversation


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_default_script_explores_the_workspace_and_reports_what_it_saw(
    sandbox: SandboxServer, funded_account: Any, stream: bool
) -> None:
    turns = await converse(sandbox, funded_account, TASK, stream=stream)
    assert [called(turn) for turn in turns] == [
        [("list_files", LIST_ALL)],
        [("search", '{"query":"config","pattern":"**/*"}')],
        [("read_file", '{"path":"src/app/config.py"}')],
        [],
    ]
    assert [turn.finish_reason for turn in turns] == ["tool_calls"] * 3 + ["stop"]
    answer = turns[-1].message["content"]
    assert answer == "\n".join(
        [
            f"[sandbox {MODEL}] Done after 3 tool calls.",
            f"- list_files({LIST_ALL}): README.md src/app/config.py src/app/main.py",
            '- search({"query":"config","pattern":"**/*"}): '
            "src/app/config.py:1: def parse_config(path): "
            "src/app/main.py:1: from app.config import parse_config",
            '- read_file({"path":"src/app/config.py"}): '
            "def parse_config(path):     # options: timeout, retries     return {} ",
        ]
    )

    # Every step was paid once, at exactly the rule's quote, and usage agrees with it.
    state = sandbox.state
    assert len(state.settlements) == len(turns) == 4
    for turn, settlement in zip(turns, state.settlements, strict=True):
        tokens = rule_tokens(turn.body["messages"], TOOLS)
        assert turn.paid.cost_atomic == settlement.amount_atomic == rule_atomic(tokens)
        assert turn.usage["prompt_tokens"] == tokens
        assert turn.usage["total_tokens"] == tokens + turn.usage["completion_tokens"]
        said = "".join(name + arguments for name, arguments in called(turn))
        if turn.calls:
            assert turn.usage["completion_tokens"] == math.ceil(len(said) / 4)
            assert turn.message["content"] is None
            assert all(
                call["id"].startswith("call_") and len(call["id"]) == 29 for call in turn.calls
            )
        else:
            assert turn.usage["completion_tokens"] == math.ceil(len(answer) / 4)
    assert_every_payment_valid(state)


async def test_streamed_and_unstreamed_turns_are_the_same_turns(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    plain = await converse(sandbox, funded_account, TASK)
    streamed = await converse(sandbox, funded_account, TASK, stream=True)
    # Ids derive from the model and the conversation, so the two runs call with the same ids.
    assert [turn.message for turn in streamed] == [turn.message for turn in plain]
    assert [turn.usage for turn in streamed] == [turn.usage for turn in plain]


async def test_tool_calls_stream_as_openai_streams_them(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    task = 'Two at once.\n[[call list_files {"pattern": "src/**"}]] [[call search {"query": "x"}]]'
    [turn] = await converse(sandbox, funded_account, task, stream=True, max_steps=1)
    deltas = [chunk["choices"][0]["delta"] for chunk in turn.chunks]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in turn.chunks)
    # Per call: one delta naming it with empty arguments, then its arguments in pieces.
    for index, (name, arguments) in enumerate(called(turn)):
        pieces = [
            delta["tool_calls"][0]
            for delta in deltas[1:-1]
            if delta["tool_calls"][0]["index"] == index
        ]
        opening, rest = pieces[0], pieces[1:]
        assert opening == {
            "index": index,
            "id": turn.calls[index]["id"],
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        assert len(rest) >= 2 and all(set(piece) == {"index", "function"} for piece in rest)
        assert "".join(piece["function"]["arguments"] for piece in rest) == arguments
    assert called(turn) == [("list_files", '{"pattern": "src/**"}'), ("search", '{"query": "x"}')]
    assert turn.chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert len({call["id"] for call in turn.calls}) == 2


# directives


async def test_directive_lines_are_steps_and_arguments_go_verbatim(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    task = "\n".join(
        [
            "Check the code.",
            '[[call list_files {"pattern": "*.md"}]] [[call search {"query": "parse"}]]',
            "then read something broken: [[call read_file {not json]]",
            "[[call no_such_tool]]",
        ]
    )
    turns = await converse(sandbox, funded_account, task)
    assert [called(turn) for turn in turns] == [
        [("list_files", '{"pattern": "*.md"}'), ("search", '{"query": "parse"}')],
        [("read_file", "{not json")],
        [("no_such_tool", "{}")],
        [],
    ]
    assert turns[-1].message["content"].splitlines() == [
        f"[sandbox {MODEL}] Done after 4 tool calls.",
        '- list_files({"pattern": "*.md"}): README.md src/app/config.py src/app/main.py',
        '- search({"query": "parse"}): src/app/config.py:1: def parse_config(path): '
        "src/app/main.py:1: from app.config import parse_config",
        "- read_file({not json): error: the arguments are not JSON: {not json",
        "- no_such_tool({}): error: unknown tool no_such_tool",
    ]


async def test_a_loop_directive_never_answers(sandbox: SandboxServer, funded_account: Any) -> None:
    task = 'Keep going.\n[[call list_files]]\n[[loop search {"query": "again"}]]'
    turns = await converse(sandbox, funded_account, task, max_steps=6)
    assert len(turns) == 6
    assert called(turns[0]) == [("list_files", "{}")]
    assert all(called(turn) == [("search", '{"query": "again"}')] for turn in turns[1:])
    ids = [call["id"] for turn in turns for call in turn.calls]
    assert len(set(ids)) == len(ids)  # unique within the conversation
    # The conversation grows, so every step costs more than the one before.
    costs = [turn.paid.cost_atomic for turn in turns]
    assert all(cheaper < dearer for cheaper, dearer in itertools.pairwise(costs))


async def test_the_final_answer_honours_max_tokens(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    turns = await converse(sandbox, funded_account, "[[call list_files]]", max_tokens=5)
    last = turns[-1]
    assert last.finish_reason == "length"
    assert last.message["content"] == f"[sandbox {MODEL}] Done after 1 tool calls."[:20]
    assert last.usage["completion_tokens"] == 5
    assert last.paid.cost_atomic == rule_atomic(rule_tokens(last.body["messages"], TOOLS), 5)


# tool_choice


async def test_tool_choice_required_none_and_named(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    # "required" once the script is done: list_files again, never an answer.
    turns = await converse(
        sandbox, funded_account, "[[call search {}]]", max_steps=3, tool_choice="required"
    )
    assert [called(turn) for turn in turns] == [
        [("search", "{}")],
        [("list_files", LIST_ALL)],
        [("list_files", LIST_ALL)],
    ]
    # A named function: the step's calls to it, else it with "{}".
    named = {"type": "function", "function": {"name": "read_file"}}
    turns = await converse(sandbox, funded_account, TASK, max_steps=2, tool_choice=named)
    assert [called(turn) for turn in turns] == [[("read_file", "{}")], [("read_file", "{}")]]
    # "none": the plain sandbox reply, its prompt still priced with the tools.
    [turn] = await converse(sandbox, funded_account, TASK, tool_choice="none")
    assert turn.finish_reason == "stop" and '"have deepseek find' in turn.message["content"]
    assert turn.usage["prompt_tokens"] == rule_tokens(turn.body["messages"], TOOLS)


# pricing


def quoted_atomic(response: httpx2.Response) -> int:
    assert response.status_code == 402, response.text
    terms = json.loads(base64.b64decode(response.headers["PAYMENT-REQUIRED"]))
    return int(terms["accepts"][0]["amount"])


async def test_the_quote_is_the_pricing_rule_exactly(sandbox: SandboxServer) -> None:
    tools = [
        TOOLS[0],
        {"type": "function", "function": {"name": "ping"}},  # no description, no parameters
        {"type": "function", "function": {"name": "noop", "description": None, "parameters": None}},
    ]
    messages = [
        {"role": "system", "content": "Be exact."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Find "}, {"type": "text", "text": "it"}],
        },
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "list_files", "arguments": "{}"},
                },
                {"id": "b", "type": "function", "function": {"name": "ping", "arguments": "x"}},
            ],
        },
        {"role": "tool", "tool_call_id": "b", "content": "pong"},
        {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "a.py\nb.py"}]},
    ]
    schema = json.dumps(TOOLS[0]["function"]["parameters"], sort_keys=True, separators=(",", ":"))
    expected_texts = [
        "Be exact.",
        "Find it",
        "Looking.list_files{}pingx",
        "pong",
        "a.py\nb.py",
        "list_filesList workspace files matching a glob." + schema + "ping{}noop{}",
    ]
    assert rule_texts(messages, tools) == expected_texts
    assert quotes.priced_texts(messages, tools) == expected_texts  # the helper a client can use
    tokens = rule_tokens(messages, tools)
    assert quotes.estimate_input_tokens(messages, tools) == tokens

    async with httpx2.AsyncClient(timeout=15.0) as client:
        for max_tokens in (1024, 3000):
            body = {"model": MODEL, "messages": messages, "tools": tools, "max_tokens": max_tokens}
            response = await client.post(sandbox.base_url + CHAT, json=body)
            assert quoted_atomic(response) == rule_atomic(tokens, max_tokens)
        # No tools, or an empty list: no tools text, the quote any plain chat always had.
        hello = [{"role": "user", "content": "Hello"}]
        for extra in ({}, {"tools": []}, {"tools": None}):
            body = {"model": MODEL, "messages": hello, **extra}
            response = await client.post(sandbox.base_url + CHAT, json=body)
            assert quoted_atomic(response) == 1517 == rule_atomic(rule_tokens(hello, None))


# what OpenAI refuses, refused before any quote

ASK = {"role": "user", "content": "Find it"}


def calling(*ids: str, arguments: Any = "{}") -> dict[str, Any]:
    calls = [
        {"id": i, "type": "function", "function": {"name": "list_files", "arguments": arguments}}
        for i in ids
    ]
    return {"role": "assistant", "content": None, "tool_calls": calls}


def answering(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "a.py"}


def tool_named(name: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


REFUSED_CHATS: list[tuple[str, dict[str, Any], str]] = [
    (
        "tool message answering a call the assistant did not make",
        {"messages": [ASK, calling("a"), answering("a"), answering("zzz")]},
        "messages.3",
    ),
    (
        "tool message with no assistant before it",
        {"messages": [ASK, answering("a")]},
        "messages.1",
    ),
    (
        "tool message answering a call from an earlier run",
        {"messages": [ASK, calling("a"), answering("a"), calling("b"), answering("a")]},
        "messages.4",
    ),
    (
        "a call left unanswered before the next message",
        {"messages": [ASK, calling("a", "b"), answering("a"), ASK]},
        "none for b",
    ),
    (
        "a call left unanswered at the end",
        {"messages": [ASK, calling("a")]},
        "none for a",
    ),
    (
        "tool calls with object arguments",
        {"messages": [ASK, calling("a", arguments={"pattern": "*"}), answering("a")]},
        "messages.1.tool_calls.0.function.arguments",
    ),
    (
        "tool calls with no arguments",
        {"messages": [ASK, calling("a", arguments=None), answering("a")]},
        "got null",
    ),
    (
        "an empty tool_calls list",
        {"messages": [ASK, {"role": "assistant", "content": None, "tool_calls": []}]},
        "messages.1.tool_calls",
    ),
    (
        "a tool message without tool_call_id",
        {"messages": [ASK, calling("a"), {"role": "tool", "content": "x"}]},
        "messages.2.tool_call_id",
    ),
    (
        "a tool message without content",
        {"messages": [ASK, calling("a"), {"role": "tool", "tool_call_id": "a"}]},
        "messages.2.content",
    ),
    ("a tool not of type function", {"tools": [{"type": "web_search"}]}, "tools.0.type"),
    (
        "a tool without a name",
        {"tools": [{"type": "function", "function": {"description": "x"}}]},
        "tools.0.function",
    ),
    ("a tool name with a space", {"tools": [tool_named("list files")]}, "tools.0.function.name"),
    ("a tool name with a dot", {"tools": [tool_named("fs.read")]}, "tools.0.function.name"),
    ("a tool name of 65 characters", {"tools": [tool_named("a" * 65)]}, "tools.0.function.name"),
    ("a tool name ending in a newline", {"tools": [tool_named("read\n")]}, "function.name"),
    ("a tool name that is not a string", {"tools": [tool_named(7)]}, "function.name"),
    ("tools that are not a list", {"tools": {"type": "function"}}, "tools"),
    ("tool_choice without tools", {"tools": None, "tool_choice": "auto"}, "only allowed when"),
    ("an unknown tool_choice", {"tools": TOOLS, "tool_choice": "any"}, "tool_choice"),
    (
        "a tool_choice naming no tool",
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "rm"}}},
        "no function named 'rm'",
    ),
]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [(change, fragment) for _, change, fragment in REFUSED_CHATS],
    ids=[why for why, _, _ in REFUSED_CHATS],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_malformed_tool_conversations_are_refused_before_any_quote(
    sandbox: SandboxServer, funded_account: Any, change: dict[str, Any], fragment: str, stream: bool
) -> None:
    body = {"model": MODEL, "messages": [ASK], "tools": TOOLS, "stream": stream, **change}
    message = refusal(await pay(sandbox, funded_account, body))
    assert fragment in message, message
    assert_nothing_quoted_or_paid(sandbox)


async def test_a_well_formed_tool_conversation_is_served(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    # The counterpart of the refusals: parallel calls answered in any order, text parts,
    # a tool name of exactly 64 characters, assistant content beside its calls.
    messages = [
        ASK,
        {**calling("a", "b"), "content": "Looking."},
        answering("b"),
        {"role": "tool", "tool_call_id": "a", "content": [{"type": "text", "text": "b.py"}]},
        {"role": "user", "content": "And now?"},
    ]
    tools = [*TOOLS, tool_named("x" * 64)]
    paid = await pay(
        sandbox, funded_account, {"model": MODEL, "messages": messages, "tools": tools}
    )
    assert paid.response.status_code == 200, paid.response.text
    assert paid.cost_atomic == rule_atomic(rule_tokens(messages, tools))


# the fault switches chat streams honour


async def test_a_cut_tool_call_stream_was_still_paid(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    sandbox.state.set_faults(stream_cut_after_chunks=2, times=1)
    body = {"model": MODEL, "messages": [{"role": "user", "content": TASK}], "tools": TOOLS}
    received = ""
    async with httpx2.AsyncClient(timeout=15.0) as client:
        request = client.build_request(
            "POST", sandbox.base_url + CHAT, json={**body, "stream": True}
        )
        paid = await make_payer(funded_account).send(client, request, stream=True)
        assert paid.response.status_code == 200
        with pytest.raises(httpx2.TransportError):
            try:
                async for text in paid.response.aiter_text():
                    received += text
            finally:
                await paid.response.aclose()
    assert len(sandbox.state.settlements) == 1
    events = [line for line in received.splitlines() if line.startswith("data: ")]
    assert len(events) == 2 and '"tool_calls"' in events[1]
    # `times=1` is used up: the next stream is whole.
    turn = Turn(body, await pay(sandbox, funded_account, {**body, "stream": True}), stream=True)
    assert called(turn) == [("list_files", LIST_ALL)]


async def test_model_latency_delays_tool_calls_after_the_role_chunk(
    sandbox: SandboxServer, funded_account: Any
) -> None:
    latency = 0.4
    sandbox.state.set_faults(model_latency_seconds=latency)
    body = {"model": MODEL, "messages": [{"role": "user", "content": TASK}], "tools": TOOLS}
    arrivals: list[tuple[str, float]] = []
    async with httpx2.AsyncClient(timeout=15.0) as client:
        request = client.build_request(
            "POST", sandbox.base_url + CHAT, json={**body, "stream": True}
        )
        paid = await make_payer(funded_account).send(client, request, stream=True)
        try:
            async for line in paid.response.aiter_lines():
                if line.startswith("data: "):
                    arrivals.append((line, time.monotonic()))
        finally:
            await paid.response.aclose()
    assert '"role":"assistant"' in arrivals[0][0] and '"tool_calls"' in arrivals[1][0]
    assert arrivals[1][1] - arrivals[0][1] >= latency * 0.9


# the Responses API


def function_calls(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in result["output"] if item["type"] == "function_call"]


def responses_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(fields["data"])
        assert data["type"] == fields["event"]
        events.append((fields["event"], data))
    return events


async def respond(
    sandbox: SandboxServer, account: Any, body: dict[str, Any], stream: bool
) -> tuple[PaidResponse, dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """One paid Responses turn: (paid, the response object, its stream events or [])."""
    paid = await pay(sandbox, account, {**body, "stream": stream}, RESPONSES)
    assert paid.response.status_code == 200, paid.response.text
    if not stream:
        return paid, paid.response.json(), []
    events = responses_events(paid.response.text)
    assert events[-1][0] == "response.completed"
    return paid, events[-1][1]["response"], events


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_responses_function_calling_conversation(
    sandbox: SandboxServer, funded_account: Any, stream: bool
) -> None:
    task = (
        '[[call list_files {"pattern":"*"}]] [[call search {"query":"config"}]]\n[[call read_file]]'
    )
    items: list[dict[str, Any]] = [{"role": "user", "content": task}]
    base = {"model": MODEL, "instructions": "Use the tools.", "tools": FLAT_TOOLS}
    seen: list[list[tuple[str, str]]] = []
    for _ in range(4):
        body = {**base, "input": list(items)}
        paid, result, events = await respond(sandbox, funded_account, body, stream)
        tokens = rule_tokens(responses_as_messages(body), FLAT_TOOLS)
        assert paid.cost_atomic == rule_atomic(tokens) and result["usage"]["input_tokens"] == tokens
        calls = function_calls(result)
        seen.append([(call["name"], call["arguments"]) for call in calls])
        if stream and calls:
            assert_function_call_events(events, calls)
        if not calls:
            break
        assert result["status"] == "completed" and result["output_text"] == ""
        said = "".join(call["name"] + call["arguments"] for call in calls)
        assert result["usage"]["output_tokens"] == math.ceil(len(said) / 4)
        for call in calls:
            assert call["id"].startswith("fc_") and call["call_id"].startswith("call_")
            assert call["status"] == "completed"
        items += calls  # replayed verbatim, as Codex-style clients do
        items += [
            {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": run_tool(call["name"], call["arguments"]),
            }
            for call in calls
        ]
    # The two parallel calls were one step, so read_file came second, then the answer.
    assert seen == [
        [("list_files", '{"pattern":"*"}'), ("search", '{"query":"config"}')],
        [("read_file", "{}")],
        [],
    ]
    lines = result["output_text"].splitlines()
    assert lines[0] == f"[sandbox {MODEL}] Done after 3 tool calls."
    assert lines[3] == "- read_file({}): error: no such file"
    assert result["output"][-1]["type"] == "message"
    assert len(sandbox.state.settlements) == 3
    assert_every_payment_valid(sandbox.state)


def assert_function_call_events(
    events: list[tuple[str, dict[str, Any]]], calls: list[dict[str, Any]]
) -> None:
    """Per call: item added without arguments, argument deltas, arguments done, item done."""
    names = [name for name, _ in events]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    position = 2
    for index, call in enumerate(calls):
        name, added = events[position]
        assert name == "response.output_item.added" and added["output_index"] == index
        assert added["item"] == {**call, "arguments": "", "status": "in_progress"}
        position += 1
        deltas = []
        while events[position][0] == "response.function_call_arguments.delta":
            deltas.append(events[position][1])
            position += 1
        assert len(deltas) >= 2 and "".join(d["delta"] for d in deltas) == call["arguments"]
        assert all(d["item_id"] == call["id"] and d["output_index"] == index for d in deltas)
        name, done = events[position]
        assert name == "response.function_call_arguments.done"
        assert done["arguments"] == call["arguments"] and done["item_id"] == call["id"]
        assert events[position + 1] == (
            "response.output_item.done",
            {**events[position + 1][1], "item": call},
        )
        position += 2
    assert position == len(events) - 1


async def test_responses_tools_with_reasoning(sandbox: SandboxServer, funded_account: Any) -> None:
    body = {
        "model": MODEL,
        "input": TASK,
        "tools": FLAT_TOOLS,
        "reasoning": {"effort": "low"},
        "max_output_tokens": 2000,
    }
    _, result, _ = await respond(sandbox, funded_account, body, stream=False)
    reasoning, call = result["output"]
    assert reasoning["type"] == "reasoning"
    assert (call["name"], call["arguments"]) == ("list_files", LIST_ALL)
    usage = result["usage"]
    spent = usage["output_tokens_details"]["reasoning_tokens"]
    assert spent > 0
    assert usage["output_tokens"] == spent + math.ceil(len("list_files" + LIST_ALL) / 4)


REFUSED_RESPONSES: list[tuple[str, dict[str, Any], str]] = [
    (
        "an output answering no call",
        {
            "input": [
                ASK,
                {"type": "function_call_output", "call_id": "nope", "output": "x"},
            ]
        },
        "call_id 'nope'",
    ),
    (
        "a call never answered",
        {
            "input": [
                ASK,
                {"type": "function_call", "call_id": "c1", "name": "search", "arguments": "{}"},
            ]
        },
        "call_id 'c1'",
    ),
    (
        "call arguments that are not a string",
        {
            "input": [
                ASK,
                {"type": "function_call", "call_id": "c1", "name": "search", "arguments": {}},
                {"type": "function_call_output", "call_id": "c1", "output": "x"},
            ]
        },
        "input.1.arguments",
    ),
    ("a tool in chat's nested shape", {"tools": TOOLS}, "tools.0"),
    ("a tool that is not an object", {"tools": ["web_search"]}, "tools.0.type"),
    (
        "a tool name with a space",
        {"tools": [{"type": "function", "name": "read file"}]},
        "tools.0.name",
    ),
    (
        "a tool_choice naming no tool",
        {"tools": FLAT_TOOLS, "tool_choice": {"type": "function", "name": "rm"}},
        "no function named 'rm'",
    ),
]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [(change, fragment) for _, change, fragment in REFUSED_RESPONSES],
    ids=[why for why, _, _ in REFUSED_RESPONSES],
)
async def test_malformed_responses_tool_requests_are_refused_before_any_quote(
    sandbox: SandboxServer, funded_account: Any, change: dict[str, Any], fragment: str
) -> None:
    body = {"model": MODEL, "input": [ASK], "tools": FLAT_TOOLS, **change}
    message = refusal(await pay(sandbox, funded_account, body, RESPONSES))
    assert fragment in message, message
    assert_nothing_quoted_or_paid(sandbox)


async def test_openais_own_tools_pass_on_the_responses_endpoint(sandbox, funded_account):
    """The gateway forwards the Responses API's built-in tools (web_search, local_shell, ...)
    to OpenAI; the sandbox's model never calls them, but a client sending them (Codex) works."""
    body = {"model": "openai/gpt-5.2", "input": "Find it", "tools": [{"type": "web_search"}]}
    paid = await pay(sandbox, funded_account, body, path=RESPONSES)
    assert paid.response.status_code == 200, paid.response.text
