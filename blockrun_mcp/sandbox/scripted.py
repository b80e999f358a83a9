"""The sandbox's function-calling model: a deterministic script over the request's tools.

A request with non-empty `tools` and a tool_choice other than "none" is answered here (`reply`
decides); every other request gets replies.answer. The script is read from the task, the text
of the FIRST user message, so a test writes the whole conversation it wants into its prompt.

Directives (anywhere in the task):

    [[call NAME ARGS]]   call NAME with the arguments string ARGS, verbatim (any text, even
                         invalid JSON; it ends at the first "]]", so it cannot contain "]]")
    [[call NAME]]        the same with ARGS "{}"
    [[loop NAME ARGS]]   like call, but its line repeats at every later step: never answers

NAME is any run of characters other than whitespace and "]" (so undeclared or invalid names can
be asked for, e.g. `[[call no_such_tool {}]]`); one space separates the parts. Every line holding
directives is one step, and the directives on one line are that step's parallel calls, in
order. The step to take is the number of steps already taken: runs of consecutive assistant
messages carrying tool calls (a chat assistant message; consecutive Responses function_call
items form one). Past the last line the model answers, unless a loop line was reached.

Without directives the default script runs, so a plain task works:
  step 0: list_files {"pattern":"**/*"}
  step 1: search {"query":KEYWORD,"pattern":"**/*"}; a word is a run of letters, digits, _
          and -; KEYWORD is the word right after the first "the " (case-insensitive, "the" a
          whole word) that is followed by one, else the task's longest word (the first of
          equals), else ""
  step 2: read_file {"path":P}, P the text before the first ":" of the first `path:LINE:` line
          of the latest tool message answering a `search` call; no such line: answer instead
  then:   answer
Generated arguments are compact JSON (separators "," and ":"), non-ASCII kept.

The answer (finish_reason "stop"): "[sandbox MODEL] Done after N tool calls." (N = the calls
in the conversation) then, per tool message in order, "- NAME(ARGUMENTS): OUTPUT" with OUTPUT the
first 100 characters of its content, newlines as spaces. It is cut short at max_tokens like any
answer ("length"). Tool-call answers are never cut: their completion tokens are
ceil(len(names + arguments) / 4), plus any reasoning.

tool_choice: "required" turns an answer into list_files {"pattern":"**/*"}; a named function
keeps the step's calls to that function, or, when the step has none (or would answer), calls it
with arguments "{}". Either way the model never answers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from blockrun_mcp.sandbox import replies
from blockrun_mcp.sandbox.quotes import estimate_input_tokens, message_text
from blockrun_mcp.sandbox.replies import Answer

# ARGS stops at the end of its line: each line is a step of its own.
DIRECTIVE = re.compile(r"\[\[(call|loop) ([^\s\]]+)(?: ([^\n]*?))?\]\]")
DEFAULT_ARGUMENTS = "{}"
LIST_ALL = {"pattern": "**/*"}
SEARCH_HIT = re.compile(r"^([^:\n]+):\d+:", re.MULTILINE)  # search results: "path:line: text"
KEYWORD_AFTER_THE = re.compile(r"\bthe ([A-Za-z0-9_-]+)", re.IGNORECASE)
WORD = re.compile(r"[A-Za-z0-9_-]+")
SHOWN_OUTPUT_CHARS = 100
CALL_ID_HEX = 24


class ToolChoice(BaseModel):
    """A validated tool_choice: a mode, and the function's name when one is forced."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None


class Call(NamedTuple):
    name: str
    arguments: str


class Step(NamedTuple):
    calls: tuple[Call, ...]
    loops: bool  # a loop line: once reached, every later step repeats it


def _compact(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def script_of(task: str) -> list[Step]:
    """The directive lines of `task`, one step each; [] when it holds none."""
    steps = []
    for line in task.splitlines():
        found = list(DIRECTIVE.finditer(line))
        if found:
            calls = tuple(
                Call(m.group(2), DEFAULT_ARGUMENTS if m.group(3) is None else m.group(3))
                for m in found
            )
            steps.append(Step(calls, any(m.group(1) == "loop" for m in found)))
    return steps


def task_text(messages: list[dict[str, Any]]) -> str:
    """The task: the text of the first user message ("" without one)."""
    for message in messages:
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def _calls_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    if message.get("role") != "assistant":
        return []
    return list(message.get("tool_calls") or [])


def steps_taken(messages: list[dict[str, Any]]) -> int:
    """Runs of consecutive assistant messages with tool calls: the steps already taken."""
    runs, previous = 0, False
    for message in messages:
        calling = bool(_calls_of(message))
        if calling and not previous:
            runs += 1
        previous = calling
    return runs


def _calls_by_id(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each tool call's function ({name, arguments}) by its id; a reused id means its latest."""
    return {call["id"]: call["function"] for message in messages for call in _calls_of(message)}


def keyword(task: str) -> str:
    """What the default script searches for: the word after the first "the ", else the
    longest word."""
    after_the = KEYWORD_AFTER_THE.search(task)
    if after_the:
        return after_the.group(1)
    return max(WORD.findall(task), key=len, default="")


def searched_path(messages: list[dict[str, Any]]) -> str | None:
    """The first path in the latest result of a `search` call, None without one."""
    functions = _calls_by_id(messages)
    for message in reversed(messages):
        if message.get("role") != "tool":
            continue
        if functions.get(message.get("tool_call_id") or "", {}).get("name") == "search":
            hit = SEARCH_HIT.search(message_text(message.get("content")))
            return hit.group(1) if hit else None
    return None


def default_calls(step: int, task: str, messages: list[dict[str, Any]]) -> list[Call]:
    """The default script's calls at `step`; [] means answer."""
    if step == 0:
        return [Call("list_files", _compact(LIST_ALL))]
    if step == 1:
        return [Call("search", _compact({"query": keyword(task), **LIST_ALL}))]
    if step == 2:
        path = searched_path(messages)
        if path is not None:
            return [Call("read_file", _compact({"path": path}))]
    return []


def scripted_calls(messages: list[dict[str, Any]]) -> list[Call]:
    """The calls the script makes next in this conversation; [] means answer."""
    task = task_text(messages)
    steps = script_of(task)
    step = steps_taken(messages)
    if not steps:
        return default_calls(step, task, messages)
    loop_at = next((index for index, s in enumerate(steps) if s.loops), None)
    if loop_at is not None and step >= loop_at:
        return list(steps[loop_at].calls)
    return list(steps[step].calls) if step < len(steps) else []


def apply_choice(calls: list[Call], choice: ToolChoice) -> list[Call]:
    """The calls as tool_choice bends them (see the module docstring)."""
    if choice.mode == "required" and not calls:
        return [Call("list_files", _compact(LIST_ALL))]
    if choice.mode == "function" and choice.name is not None:
        named = [call for call in calls if call.name == choice.name]
        return named or [Call(choice.name, DEFAULT_ARGUMENTS)]
    return calls


def call_ids(model: str, messages: list[dict[str, Any]], count: int) -> list[str]:
    """`count` ids "call_" + 24 hex digits of sha256(model, conversation, index), skipping any
    the conversation already holds, so each is unique within it."""
    taken = set(_calls_by_id(messages))
    conversation = json.dumps(messages, sort_keys=True, default=str)
    ids: list[str] = []
    indexes = itertools.count()
    while len(ids) < count:
        seed = f"{model}\n{conversation}\n{next(indexes)}".encode()
        candidate = "call_" + hashlib.sha256(seed).hexdigest()[:CALL_ID_HEX]
        if candidate not in taken:
            taken.add(candidate)
            ids.append(candidate)
    return ids


def _shown(content: Any) -> str:
    text = message_text(content)[:SHOWN_OUTPUT_CHARS]
    return text.replace("\r", " ").replace("\n", " ")


def final_text(model: str, messages: list[dict[str, Any]]) -> str:
    """The answer: how many calls were made, then what each tool message said."""
    functions = _calls_by_id(messages)
    made = sum(len(_calls_of(message)) for message in messages)
    lines = [f"[sandbox {model}] Done after {made} tool calls."]
    for message in messages:
        if message.get("role") == "tool":
            function = functions.get(message.get("tool_call_id") or "", {})
            name, arguments = function.get("name", ""), function.get("arguments", "")
            lines.append(f"- {name}({arguments}): {_shown(message.get('content'))}")
    return "\n".join(lines)


def _tool_call(call_id: str, call: Call) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call_id, "type": "function", "function": function}


def answer(
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    *,
    tools: list[dict[str, Any]],
    choice: ToolChoice,
    reasoning: int = 0,
) -> Answer:
    """The scripted model's turn: the next step's tool calls, or the final answer."""
    prompt_tokens = estimate_input_tokens(messages, tools)
    calls = apply_choice(scripted_calls(messages), choice)
    if not calls:
        content = final_text(model, messages)
        return replies.cut_to_budget(model, content, max_tokens, reasoning, prompt_tokens)
    reasoning = min(reasoning, max_tokens)
    ids = call_ids(model, messages, len(calls))
    said = "".join(call.name + call.arguments for call in calls)
    return Answer(
        model=model,
        content="",
        finish_reason="tool_calls",
        prompt_tokens=prompt_tokens,
        completion_tokens=reasoning + math.ceil(len(said) / 4),
        reasoning_tokens=reasoning,
        tool_calls=[_tool_call(call_id, call) for call_id, call in zip(ids, calls, strict=True)],
    )


def engaged(tools: list[dict[str, Any]], choice: ToolChoice) -> bool:
    """Whether the scripted model answers: tools to call, and leave to call them."""
    return bool(tools) and choice.mode != "none"


def reply(
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    *,
    tools: list[dict[str, Any]],
    choice: ToolChoice,
    reasoning: int = 0,
) -> Answer:
    """The answer to any chat or Responses request: scripted when `engaged`, otherwise (and for
    a documented refusal) the plain sandbox reply, its prompt_tokens counting the tools."""
    if engaged(tools, choice) and not replies.refuses(model, messages):
        return answer(model, messages, max_tokens, tools=tools, choice=choice, reasoning=reasoning)
    return replies.answer(model, messages, max_tokens, reasoning=reasoning, tools=tools)
