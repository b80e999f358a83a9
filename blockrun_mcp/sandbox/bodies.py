"""Request bodies of the paid endpoints, validated before any 402 is issued (as the gateway does).

Each `parse_*` returns a typed request carrying its catalog entry and its price, or raises
`BadRequest` with a sentence naming the field at fault.

Function calling is checked as OpenAI checks it: tool definitions (type function, a name of
^[a-zA-Z0-9_-]{1,64}$), tool_choice, assistant tool calls (string arguments) and tool messages,
which must answer the calls of the assistant message right before their run, every call
answered. The Responses API's function_call / function_call_output items become the same chat
messages, so one pricing rule (quotes.py) and one scripted model (scripted.py) serve both.
"""

from __future__ import annotations

import difflib
import re
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from blockrun_mcp.sandbox import quotes
from blockrun_mcp.sandbox.catalog import (
    ADAPTIVE_THINKING_MODELS,
    CATALOG,
    DEFAULT_IMAGE_SIZE,
    Kind,
    ModelEntry,
    find_model,
)
from blockrun_mcp.sandbox.replies import REASONING_EFFORTS
from blockrun_mcp.sandbox.scripted import ToolChoice

MAX_IMAGES = 4
SAMPLING_PARAMETERS = ("temperature", "top_p", "top_k")
_B = TypeVar("_B", bound=BaseModel)
_SIZE = re.compile(r"^\d{2,5}x\d{2,5}$")
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # OpenAI's rule for function names, whole name
TOOL_CHOICES = ("auto", "none", "required")
NAMED_CHOICE_NESTED = '{"type": "function", "function": {"name": ...}}'  # chat's shape
NAMED_CHOICE_FLAT = '{"type": "function", "name": ...}'  # the Responses API's


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Body(BaseModel):
    # Gateways forward fields they do not know, so unknown keys are allowed, not rejected.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Any] | None = None


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False
    tools: list[Any] | None = None  # checked by _chat_tools
    tool_choice: Any = None  # checked by _tool_choice


class ReasoningConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    effort: str | None = None  # checked against REASONING_EFFORTS before validation
    summary: str | None = None


class ResponsesBody(_Body):
    input: str | list[Any]
    instructions: str | None = None
    max_output_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: StrictBool = False
    store: StrictBool | None = None  # only false (or absent): see STATELESS_REFUSALS
    background: StrictBool | None = None
    reasoning: ReasoningConfig | None = None
    include: list[str] | None = None
    tools: list[Any] | None = None  # checked by _responses_tools
    tool_choice: Any = None  # checked by _tool_choice

    @property
    def effort(self) -> str | None:
        return self.reasoning.effort if self.reasoning else None


class ImageBody(_Body):
    prompt: str = Field(min_length=1)
    size: str = DEFAULT_IMAGE_SIZE
    n: StrictInt = Field(default=1, ge=1, le=MAX_IMAGES)
    quality: str | None = None


class Image2ImageBody(ImageBody):
    image: str | None = None
    image_url: str | None = None


class VideoBody(_Body):
    prompt: str = Field(min_length=1)
    duration_seconds: float = Field(default=quotes.DEFAULT_VIDEO_SECONDS, gt=0)
    image_url: str | None = None
    resolution: str | None = None
    aspect_ratio: str | None = None
    generate_audio: bool | None = None


class PricedRequest(BaseModel):
    """A validated request: what was asked, of which model, for how much."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    entry: ModelEntry
    body: Any
    messages: list[dict[str, Any]] = Field(default_factory=list)
    max_tokens: int = quotes.DEFAULT_MAX_TOKENS
    price_usd: Decimal
    # Function definitions, flat {name, description, parameters}, and what may call them.
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: ToolChoice = Field(default_factory=ToolChoice)

    @property
    def amount_atomic(self) -> int:
        return quotes.to_atomic(self.price_usd) if self.price_usd > 0 else 0

    @property
    def is_free(self) -> bool:
        return self.amount_atomic == 0


def _validate(model: type[_B], raw: Any) -> _B:
    if not isinstance(raw, dict):
        raise BadRequest("the request body must be a JSON object")
    if not raw.get("model"):
        raise BadRequest("the request body has no 'model'")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadRequest(f"invalid '{where}': {first['msg']}") from None


def _model(model_id: str, kind: Kind) -> ModelEntry:
    entry = find_model(model_id)
    if entry is None:
        same_kind = [m for m, e in CATALOG.items() if e.kind == kind]
        close = difflib.get_close_matches(model_id, same_kind, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BadRequest(f"unknown model '{model_id}'.{hint} GET /v1/models lists them all.")
    if entry.kind != kind:
        raise BadRequest(f"model '{model_id}' is a {entry.kind} model, not a {kind} model")
    if not entry.available:
        raise BadRequest(f"model '{model_id}' is not available right now")
    return entry


def _max_tokens(entry: ModelEntry, requested: int | None, field: str = "max_tokens") -> int:
    max_tokens = requested if requested is not None else quotes.DEFAULT_MAX_TOKENS
    if max_tokens > entry.max_output:
        raise BadRequest(
            f"{field} {max_tokens} exceeds {entry.id}'s maximum output of {entry.max_output}"
        )
    return max_tokens


def without_dropped_sampling(raw: Any) -> Any:
    """The body as the gateway forwards it: Opus 4.7/4.8 reject sampling parameters upstream, so
    the gateway strips them (before any check of their values) and the call succeeds."""
    if isinstance(raw, dict) and raw.get("model") in ADAPTIVE_THINKING_MODELS:
        return {key: value for key, value in raw.items() if key not in SAMPLING_PARAMETERS}
    return raw


def _type_name(value: Any) -> str:
    """The JSON name of a value's type, for OpenAI-style "got an object" messages."""
    names = {dict: "an object", list: "an array", bool: "a boolean", str: "a string"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def _check_function(where: str, function: Any) -> dict[str, Any]:
    """A function definition checked as OpenAI does; returned flat {name, description,
    parameters} (what quotes.tools_text prices)."""
    if not isinstance(function, dict) or "name" not in function:
        raise BadRequest(f"invalid '{where}': a function definition is an object with a 'name'")
    name = function["name"]
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise BadRequest(
            f"invalid '{where}.name' {name!r}: a function name matches ^[a-zA-Z0-9_-]{{1,64}}$"
        )
    description, parameters = function.get("description"), function.get("parameters")
    if description is not None and not isinstance(description, str):
        raise BadRequest(f"invalid '{where}.description': expected a string")
    if parameters is not None and not isinstance(parameters, dict):
        raise BadRequest(f"invalid '{where}.parameters': expected a JSON Schema object")
    return {"name": name, "description": description, "parameters": parameters}


def _function_tool(where: str, tool: Any) -> dict[str, Any]:
    # The sandbox's model can only call functions; other tool types are refused, not ignored.
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise BadRequest(f"invalid '{where}.type': only tools of type 'function' are supported")
    return tool


def _chat_tools(raw: list[Any] | None) -> list[dict[str, Any]]:
    """Chat tools: {"type": "function", "function": {name, description?, parameters?}}."""
    tools = []
    for index, tool in enumerate(raw or []):
        where = f"tools.{index}"
        function = _function_tool(where, tool).get("function")
        tools.append(_check_function(f"{where}.function", function))
    return tools


def _responses_tools(raw: list[Any] | None) -> list[dict[str, Any]]:
    """Responses tools, flat: {"type": "function", name, description?, parameters?}. OpenAI's
    own tools (web_search, local_shell, custom, ...) pass, as the gateway forwards them: the
    sandbox's model never calls them, so clients such as Codex that send them still work."""
    tools = []
    for index, tool in enumerate(raw or []):
        where = f"tools.{index}"
        if (
            isinstance(tool, dict)
            and isinstance(tool.get("type"), str)
            and tool["type"] != "function"
        ):
            continue
        tools.append(_check_function(where, _function_tool(where, tool)))
    return tools


def _forced_name(raw: Any, *, nested: bool) -> str | None:
    """The function a tool_choice object forces: chat nests it ({"type": "function",
    "function": {"name"}}), the Responses API does not ({"type": "function", "name"})."""
    if not isinstance(raw, dict) or raw.get("type") != "function":
        return None
    holder = raw.get("function") if nested else raw
    name = holder.get("name") if isinstance(holder, dict) else None
    return name if isinstance(name, str) else None


def _tool_choice(raw: Any, tools: list[dict[str, Any]], *, nested: bool) -> ToolChoice:
    """tool_choice checked against the tools; absent, it is "auto" with tools, else "none"."""
    if raw is None:
        return ToolChoice(mode="auto" if tools else "none")
    if not tools:
        raise BadRequest("invalid 'tool_choice': it is only allowed when 'tools' are specified")
    if isinstance(raw, str) and raw in TOOL_CHOICES:
        return ToolChoice.model_validate({"mode": raw})
    name = _forced_name(raw, nested=nested)
    if name is None:
        named = NAMED_CHOICE_NESTED if nested else NAMED_CHOICE_FLAT
        raise BadRequest(f"invalid 'tool_choice': use auto, none, required or {named}")
    if name not in {tool["name"] for tool in tools}:
        raise BadRequest(f"invalid 'tool_choice': no function named {name!r} in 'tools'")
    return ToolChoice(mode="function", name=name)


def _check_tool_calls(where: str, calls: Any) -> None:
    """An assistant message's tool_calls: [{id, type: "function", function: {name,
    arguments}}], the arguments a string (JSON text, never an object)."""
    if not isinstance(calls, list) or not calls:
        raise BadRequest(f"invalid '{where}': expected a non-empty array of tool calls")
    for index, call in enumerate(calls):
        at = f"{where}.{index}"
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not call["id"]:
            raise BadRequest(f"invalid '{at}.id': each tool call has a string id")
        if call.get("type") != "function":
            raise BadRequest(f"invalid '{at}.type': expected 'function'")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest(f"invalid '{at}.function.name': expected a string")
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            raise BadRequest(
                f"invalid '{at}.function.arguments': expected a string, "
                f"but got {_type_name(arguments)} instead"
            )


def _is_text_parts(content: Any) -> bool:
    return isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    )


def _check_tool_message(where: str, message: dict[str, Any]) -> None:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequest(
            f"invalid '{where}.tool_call_id': a tool message names the call it answers"
        )
    content = message.get("content")
    if not isinstance(content, str) and not _is_text_parts(content):
        raise BadRequest(
            f"invalid '{where}.content': a tool message's content is a string or text parts"
        )


def _require_answers(head: int, expected: list[str], answered: set[str]) -> None:
    missing = [call_id for call_id in expected if call_id not in answered]
    if missing:
        raise BadRequest(
            f"invalid 'messages.{head}': an assistant message with 'tool_calls' must be followed "
            f"by tool messages responding to each 'tool_call_id'; none for {', '.join(missing)}"
        )


def _check_tool_sequence(messages: list[dict[str, Any]]) -> None:
    """OpenAI's order: each run of tool messages answers the calls of the assistant message
    right before it, and every one of those calls is answered before the next message."""
    head = 0  # the message whose calls the current run of tool messages answers
    expected: list[str] = []
    answered: set[str] = set()
    for index, message in enumerate(messages):
        if message["role"] == "tool":
            call_id = message["tool_call_id"]
            if call_id not in expected:
                raise BadRequest(
                    f"invalid 'messages.{index}': a 'tool' message must respond to a tool call of "
                    f"the assistant message right before its run; none has id {call_id!r}"
                )
            answered.add(call_id)
            continue
        _require_answers(head, expected, answered)
        calls = message.get("tool_calls") if message["role"] == "assistant" else None
        head, expected, answered = index, [call["id"] for call in calls or []], set()
    _require_answers(head, expected, answered)


def _check_chat_tool_messages(messages: list[dict[str, Any]]) -> None:
    for index, message in enumerate(messages):
        if message["role"] == "assistant" and message.get("tool_calls") is not None:
            _check_tool_calls(f"messages.{index}.tool_calls", message["tool_calls"])
        elif message["role"] == "tool":
            _check_tool_message(f"messages.{index}", message)
    _check_tool_sequence(messages)


def parse_chat(raw: Any) -> PricedRequest:
    body = _validate(ChatBody, without_dropped_sampling(raw))
    entry = _model(body.model, "chat")
    max_tokens = _max_tokens(entry, body.max_tokens)
    messages = [m.model_dump() for m in body.messages]
    _check_chat_tool_messages(messages)
    tools = _chat_tools(body.tools)
    choice = _tool_choice(body.tool_choice, tools, nested=True)
    price = quotes.chat_quote_usd(entry, messages, max_tokens, tools)
    return PricedRequest(
        entry=entry,
        body=body,
        messages=messages,
        max_tokens=max_tokens,
        price_usd=price,
        tools=tools,
        tool_choice=choice,
    )


# BlockRun's Responses page: upstream calls share one org key, so server-side state is off and
# these are refused with a 400 before any quote, each with the page's reason. The flags are
# refused when true (store: false is fine), the others when present with any value but null.
STATELESS_REFUSALS: dict[str, str] = {
    "store": "store: true is not supported: responses are never retained upstream "
    "(store: false is enforced on every request)",
    "previous_response_id": "previous_response_id is not supported: there are no stored "
    "responses to reference; resend the full context in 'input'",
    "conversation": "conversation is not supported: there is no server-side conversation "
    "state; resend the full context in 'input'",
    "prompt": "prompt is not supported: there are no stored prompt templates",
    "background": "background: true is not supported: background jobs complete after the "
    "HTTP exchange, so there is nothing to bill against",
}
REFUSED_WHEN_TRUE = ("store", "background")
MESSAGE_ROLES = ("user", "assistant", "system", "developer")


def _refuse_stateful(raw: dict[str, Any]) -> None:
    """The stateless gateway's refusals (STATELESS_REFUSALS), in the page's order."""
    for name, why in STATELESS_REFUSALS.items():
        value = raw.get(name)
        refused = (value is True) if name in REFUSED_WHEN_TRUE else (value is not None)
        if refused:
            raise BadRequest(why)


def _check_effort(raw: dict[str, Any]) -> None:
    reasoning = raw.get("reasoning")
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise BadRequest('invalid \'reasoning\': send an object such as {"effort": "high"}')
    effort = reasoning.get("effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        allowed = ", ".join(REASONING_EFFORTS)
        raise BadRequest(f"invalid 'reasoning.effort' {effort!r}: use one of {allowed}")


def _string_field(where: str, item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise BadRequest(
            f"invalid '{where}.{name}': expected a string, but got {_type_name(value)} instead"
        )
    return value


def _function_call_item(where: str, item: dict[str, Any]) -> dict[str, Any]:
    """A function_call input item as the assistant message that made the call."""
    call_id = _string_field(where, item, "call_id")
    function = {
        "name": _string_field(where, item, "name"),
        "arguments": _string_field(where, item, "arguments"),
    }
    call = {"id": call_id, "type": "function", "function": function}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _function_call_output_item(where: str, item: dict[str, Any]) -> dict[str, Any]:
    """A function_call_output input item as the tool message answering its call."""
    call_id = _string_field(where, item, "call_id")
    output = item.get("output")
    if not isinstance(output, str | list):
        raise BadRequest(f"invalid '{where}.output': a string or a list of content parts")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _input_item(index: int, item: Any) -> dict[str, Any] | None:
    """One Responses input item as a chat message (None: an item carrying no text to quote)."""
    where = f"input.{index}"
    if isinstance(item, str):
        return {"role": "user", "content": item}
    if not isinstance(item, dict):
        raise BadRequest(f"invalid '{where}': an input item is a string or an object")
    kind = item.get("type", "message")
    if kind == "function_call":
        return _function_call_item(where, item)
    if kind == "function_call_output":
        return _function_call_output_item(where, item)
    if kind != "message":
        return None  # reasoning replays, ...: accepted, not quoted
    role, content = item.get("role"), item.get("content")
    if role not in MESSAGE_ROLES:
        raise BadRequest(f"invalid '{where}.role' {role!r}: use one of {', '.join(MESSAGE_ROLES)}")
    if not isinstance(content, str | list):
        raise BadRequest(f"invalid '{where}.content': a string or a list of content parts")
    if isinstance(content, list):
        for number, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise BadRequest(
                    f"invalid '{where}.content.{number}': a part is an object with a 'type' "
                    "(input_text, input_image, input_file, output_text)"
                )
    return {"role": role, "content": content}


def responses_messages(body: ResponsesBody) -> list[dict[str, Any]]:
    """The Responses API input as chat messages, so it is quoted by the same formula."""
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        messages.append({"role": "user", "content": body.input})
    else:
        for index, item in enumerate(body.input):
            message = _input_item(index, item)
            if message is not None:
                messages.append(message)
    if not messages:
        raise BadRequest("invalid 'input': it holds no messages")
    return messages


def _check_call_outputs(messages: list[dict[str, Any]]) -> None:
    """The Responses API's pairing, looser than chat's order: each function_call_output answers
    an earlier function_call, and every function_call is answered."""
    called: list[str] = []
    answered: set[str] = set()
    for message in messages:
        if message["role"] == "tool":
            if message["tool_call_id"] not in called:
                raise BadRequest(
                    "invalid 'input': no function_call found for the function_call_output "
                    f"with call_id {message['tool_call_id']!r}"
                )
            answered.add(message["tool_call_id"])
        called += [call["id"] for call in message.get("tool_calls") or []]
    missing = [call_id for call_id in called if call_id not in answered]
    if missing:
        raise BadRequest(
            "invalid 'input': no function_call_output found for the function_call with "
            f"call_id {missing[0]!r}"
        )


def _responses_model(model_id: str) -> ModelEntry:
    """The page: "the openai/ prefix is optional"; other providers go to Chat Completions."""
    if find_model(model_id) is None and "/" not in model_id:
        model_id = f"openai/{model_id}"
    entry = _model(model_id, "chat")
    if entry.provider != "openai":
        raise BadRequest(
            f"/v1/responses serves OpenAI models only; use /v1/chat/completions for {entry.id}"
        )
    return entry


def parse_responses(raw: Any) -> PricedRequest:
    if isinstance(raw, dict):
        _refuse_stateful(raw)
        _check_effort(raw)
    body = _validate(ResponsesBody, raw)
    entry = _responses_model(body.model)
    max_tokens = _max_tokens(entry, body.max_output_tokens, "max_output_tokens")
    messages = responses_messages(body)
    _check_call_outputs(messages)
    tools = _responses_tools(body.tools)
    choice = _tool_choice(body.tool_choice, tools, nested=False)
    # The documented quote, whatever the reasoning effort: effort changes what is used, not
    # what is signed (the quote already prices a tenth of max_output_tokens as output).
    price = quotes.chat_quote_usd(entry, messages, max_tokens, tools)
    return PricedRequest(
        entry=entry,
        body=body,
        messages=messages,
        max_tokens=max_tokens,
        price_usd=price,
        tools=tools,
        tool_choice=choice,
    )


def _image(raw: Any, model: type[ImageBody], *, edit: bool) -> PricedRequest:
    body = _validate(model, raw)
    entry = _model(body.model, "image")
    if not _SIZE.match(body.size):
        raise BadRequest(f"invalid 'size' {body.size!r}: use WIDTHxHEIGHT such as 1024x1024")
    if edit:
        assert isinstance(body, Image2ImageBody)
        if not entry.edits:
            raise BadRequest(f"model '{entry.id}' does not edit images")
        if not (body.image or body.image_url):
            raise BadRequest("the request body has no 'image' to edit")
    price = quotes.image_quote_usd(entry, body.size, body.n)
    return PricedRequest(entry=entry, body=body, price_usd=price)


def parse_image(raw: Any) -> PricedRequest:
    return _image(raw, ImageBody, edit=False)


def parse_image_edit(raw: Any) -> PricedRequest:
    return _image(raw, Image2ImageBody, edit=True)


def parse_video(raw: Any) -> PricedRequest:
    body = _validate(VideoBody, raw)
    entry = _model(body.model, "video")
    limit = entry.max_duration_seconds or 0
    if body.duration_seconds > limit:
        raise BadRequest(
            f"duration_seconds {body.duration_seconds:g} exceeds {entry.id}'s limit of {limit}"
        )
    price = quotes.video_quote_usd(
        entry, body.duration_seconds, image_input=body.image_url is not None
    )
    return PricedRequest(entry=entry, body=body, price_usd=price)
