"""Three read-only tools through which a model explores the workspace itself: list_files,
read_file and search, run by the server in a loop (`delegate`).

The model is taken to be hostile: its tool calls may come from a hostile gateway. So every
argument is checked here (JSON, types, names, lengths) and any mistake comes back as a refusal
that says what to send instead; nothing the model sends raises. What it reaches is exactly
what `Workspace` would send as `files` (the same confinement, secrets, identities and caps),
less anything `.gitignore` ignores, even named or reached through a symlink. A refusal names
the path and why, never the refused file's content. Each result is capped in bytes: a file is
cut at a line boundary with where to go on, a listing and a search say what they left out.

Regexes are run by RE2 (`google-re2`), whose time is linear in the text: a pattern written to
backtrack forever (`(a+)+$`) cannot hold the worker thread, which Python's `re` could. RE2's
fallback for very complex patterns still costs (text x pattern size), so the text one regex
search may scan shrinks as the pattern grows.

Blocking work: the caller runs `WorkspaceTools.run` in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import re2

from blockrun_mcp import safe_json
from blockrun_mcp.workspace import FileRefused, Selection, SentFile, Workspace

MAX_RESULT_BYTES = 24 * 1024  # one tool result, as UTF-8: a few thousand tokens
MIN_RESULT_BYTES = 1024  # room for a header, a note and at least part of a line
MAX_ARGUMENTS_CHARS = 4096  # the JSON of one call: every field at its longest fits well within
MAX_PATH_CHARS = 1000  # a path or pattern (as `files` entries)
MAX_QUERY_CHARS = 500
MAX_LISTED = 300  # names one list_files shows; the count of the rest is told
MAX_MATCHES = 100  # lines one search shows
MAX_LINE_CHARS = 200  # of each matching line, around the match
MAX_SEARCH_FILES = 2000  # files one search reads
MAX_SEARCH_BYTES = 16 * 1024 * 1024  # text one search scans
# A regex's program size times the bytes it scans: RE2's worst case (its DFA giving way to
# the NFA) is about 1.5 ns per unit here, so this is ~1.5 s at worst; a simple regex still
# scans MAX_SEARCH_BYTES, the most complex allowed at least one whole file.
MAX_REGEX_WORK = 1_000_000_000
MAX_REGEX_PROGRAM = 2000  # RE2 instructions; past it a regex is refused as too complex
REGEX_MEMORY = 8 * 1024 * 1024  # RE2's budget for one regex's program and DFA cache
DEFAULT_SEARCH_PATTERN = "**/*"
REFUSED = "refused: "
_CUT = b"\n(cut for length.)"
_LINE_MODE = "(?m)"  # before a model's regex: `^` and `$` match at each line's ends


@dataclass(frozen=True)
class ToolOutcome:
    text: str  # the tool message sent back to the model; starts with "refused: " when refused
    refused: bool
    tool: str  # the tool name as called (cut to 100 characters)
    target: str | None  # the path or pattern it was about; None if the arguments were unusable
    files_read: tuple[str, ...]  # labels of files whose content (or matching lines) is in text
    bytes_returned: int  # len(text.encode("utf-8"))


@dataclass(frozen=True)
class _Param:
    name: str
    kind: type[str] | type[int] | type[bool]
    description: str
    required: bool = False
    max_chars: int = MAX_PATH_CHARS  # (text only)


# The one description of each tool's arguments: its schema for the model and its checks here.
_TOOLS: dict[str, tuple[str, tuple[_Param, ...]]] = {
    "list_files": (
        "List the workspace files a glob matches, one path per line, sorted. `**` spans "
        "directories; `*`, `?`, `[...]` stay within one. Secret, private and git-ignored "
        "files are left out and counted.",
        (_Param("pattern", str, "Glob relative to the workspace, e.g. `src/**/*.py`.", True),),
    ),
    "read_file": (
        "Read a workspace file as numbered lines (1-based, inclusive range; default: all). "
        "A long result is cut at a line boundary and says where to go on.",
        (
            _Param("path", str, "Path relative to the workspace, as list_files shows it.", True),
            _Param("start_line", int, "First line (default 1)."),
            _Param("end_line", int, "Last line (default: the file's last)."),
        ),
    ),
    "search": (
        "Find lines in workspace files: `path:line: text`, at most "
        f"{MAX_MATCHES}. query is plain text, case-insensitive; with regex=true an RE2 "
        "regex, case-sensitive (prefix `(?i)` for not), `^`/`$` at line ends.",
        (
            _Param("query", str, "Text (or regex) to find.", True, MAX_QUERY_CHARS),
            _Param(
                "pattern", str, f"Glob of files to search (default `{DEFAULT_SEARCH_PATTERN}`)."
            ),
            _Param("regex", bool, "true: query is an RE2 regex (default false)."),
        ),
    ),
}
_JSON_TYPES = {str: "string", int: "integer", bool: "boolean"}
_KIND_WORDS = {str: "text", int: "a whole number", bool: "true or false"}

TOOL_DEFINITIONS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {
                    p.name: {"type": _JSON_TYPES[p.kind], "description": p.description}
                    | ({"minimum": 1} if p.kind is int else {})
                    for p in params
                },
                "required": [p.name for p in params if p.required],
                "additionalProperties": False,
            },
        },
    }
    for name, (description, params) in _TOOLS.items()
]


class _Refusal(Exception):
    """A call refused with `message`; `target` is None when its arguments were unusable."""

    def __init__(self, message: str, target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target


@dataclass(frozen=True)
class _Result:
    text: str
    files_read: tuple[str, ...] = ()


class WorkspaceTools:
    """The three tools over one `Workspace` (built by the service for the caller's roots)."""

    def __init__(self, workspace: Workspace, *, max_result_bytes: int = MAX_RESULT_BYTES) -> None:
        if max_result_bytes < MIN_RESULT_BYTES:
            raise ValueError(f"max_result_bytes must be at least {MIN_RESULT_BYTES}")
        self.workspace = workspace
        self.max_result_bytes = max_result_bytes
        self._handlers: dict[str, Callable[[dict[str, Any]], _Result]] = {
            "list_files": self._list_files,
            "read_file": self._read_file,
            "search": self._search,
        }

    def run(self, name: str, arguments: str) -> ToolOutcome:
        """Blocking (the caller runs it in a worker thread). Parses `arguments` (a JSON string
        from the model), dispatches, and never raises for anything the model can send: unknown
        tool, invalid JSON, wrong types, missing fields, extra fields, huge strings -> a refused
        ToolOutcome whose text says what was wrong and what to send instead."""
        tool = name[:100] if isinstance(name, str) else repr(name)[:100]
        target: str | None = None
        try:
            handler = self._handlers.get(name) if isinstance(name, str) else None
            if handler is None:
                raise _Refusal(
                    f"there is no tool {_quoted(tool)}; the tools are list_files, read_file "
                    "and search."
                )
            values = _arguments(name, arguments)
            target = values.get("path") or values.get("pattern")
            if name == "search":  # what was looked for, and where
                target = f"{values.get('query')} in {target or DEFAULT_SEARCH_PATTERN}"
            result = handler(values)
        except _Refusal as refusal:
            return self._outcome(tool, refusal.target or target, REFUSED + refusal.message, ())
        except FileRefused as refused:
            return self._outcome(tool, target, REFUSED + self._scrub(refused.brief), ())
        except OSError as exc:  # (what the workspace did not foresee: a disk error, say)
            why = f"it could not be read ({exc.strerror or type(exc).__name__})."
            return self._outcome(tool, target, f"{REFUSED}{target}: {why}", ())
        return self._outcome(tool, target, result.text, result.files_read, refused=False)

    # --- the tools ----------------------------------------------------------------------------

    def _list_files(self, values: dict[str, Any]) -> _Result:
        pattern: str = values["pattern"]
        selection = Selection()
        labels = self.workspace.matching_labels(pattern, selection)
        skipped = _skipped(selection)
        if not labels:
            return _Result(f"No file matches {pattern}.{skipped}")
        shown = labels[:MAX_LISTED]
        more = len(labels) - len(shown)
        head = f"{len(labels)} file(s) match {pattern}:"
        tail = f"... and {more} more: narrow the pattern to see them." if more else ""
        lines, fitted = self._fit(head, shown, "\n".join(filter(None, [tail, skipped.strip()])))
        if fitted < len(shown) and not more:
            lines += f"\n(cut at {fitted} names for length: narrow the pattern to see the rest.)"
        return _Result(lines)

    def _read_file(self, values: dict[str, Any]) -> _Result:
        path: str = values["path"]
        file = self.workspace.read_named(path)
        lines = _lines(file.text)
        total = len(lines)
        start = values.get("start_line") or 1
        end = values.get("end_line") or total
        if not total:
            return _Result(f"{file.label} is empty (0 lines).", (file.label,))
        if start > total or end < start:
            raise _Refusal(
                f"{file.label} has {total} line(s); ask for a range within 1-{total}, with "
                "start_line <= end_line.",
                path,
            )
        end = min(end, total)
        return _Result(self._numbered(file, lines, start, end), (file.label,))

    def _search(self, values: dict[str, Any]) -> _Result:
        query: str = values["query"]
        pattern: str = values.get("pattern") or DEFAULT_SEARCH_PATTERN
        is_regex = bool(values.get("regex"))
        program = _compile(query, is_regex)
        # A literal's automaton stays small whatever its length; a regex's may not, and then
        # RE2 costs (text x program size): the text it may scan shrinks as the program grows.
        work = MAX_REGEX_WORK // max(1, program.programsize) if is_regex else MAX_SEARCH_BYTES
        try:
            return self._search_files(query, pattern, program, min(work, MAX_SEARCH_BYTES))
        finally:
            re2.purge()  # (its module cache would keep up to 128 of a model's regexes alive)

    # --- searching ----------------------------------------------------------------------------

    def _search_files(self, query: str, pattern: str, program: Any, budget: int) -> _Result:
        """Up to MAX_MATCHES matching lines of the files `pattern` matches, scanning at most
        `budget` bytes and MAX_SEARCH_FILES files."""
        selection = Selection()
        found: list[tuple[str, str]] = []  # (label, "label:line: text")
        searched = scanned = 0
        stopped = ""
        with closing(self.workspace.read_matching(pattern, selection)) as files:
            for file in files:
                data = file.text.encode("utf-8")
                if searched >= MAX_SEARCH_FILES or scanned + len(data) > budget:
                    stopped = (
                        f"Stopped after searching {searched} file(s) ({scanned} bytes), the "
                        "most one search may: narrow the pattern"
                        + (" or simplify the regex." if budget < MAX_SEARCH_BYTES else ".")
                    )
                    break
                searched += 1
                scanned += len(data)
                for line in _matching_lines(program, data, MAX_MATCHES - len(found)):
                    found.append((file.label, f"{file.label}:{line}"))
                if len(found) >= MAX_MATCHES:
                    stopped = f"Stopped at {MAX_MATCHES} matches: narrow the query or the pattern."
                    break
        notes = "\n".join(filter(None, [stopped, _skipped(selection).strip()]))
        shown = f"{_quoted(query)} in {searched} file(s) matching {pattern}"
        if not found:
            return _Result(f"No match for {shown}." + (f"\n{notes}" if notes else ""))
        text, fitted = self._fit(
            f"{len(found)} match(es) for {shown}:", [f[1] for f in found], notes
        )
        if fitted < len(found):
            text += f"\n(cut at {fitted} matches for length: narrow the query or the pattern.)"
        files = tuple(dict.fromkeys(label for label, _ in found[:fitted]))
        return _Result(text, files)

    # --- shaping results ----------------------------------------------------------------------

    def _numbered(self, file: SentFile, lines: list[str], start: int, end: int) -> str:
        """Lines start..end as `N: text` under a header, as many whole lines as fit; a note
        says where to go on. A first line longer than the cap alone is shown cut."""
        # (Room for the header, which names the file, and the note.)
        budget = max(0, self.max_result_bytes - _size(file.label) - 160)
        body: list[str] = []
        used = 0
        for number in range(start, end + 1):
            line = f"{number}: {lines[number - 1]}"
            size = len(line.encode("utf-8")) + 1
            if used + size > budget:
                break
            body.append(line)
            used += size
        last = start + len(body) - 1
        if not body:  # one line longer than a whole result: its start, and say so
            cut = _cut_utf8(f"{start}: {lines[start - 1]}", budget)
            head = (
                f"{file.label} (line {start} of {len(lines)}, cut: it is too long to show whole):"
            )
            go_on = f"\n(line {start} is cut; ask for start_line={start + 1} for the next.)"
            return f"{head}\n{cut}" + (go_on if start < len(lines) else "")
        head = f"{file.label} (lines {start}-{last} of {len(lines)}):"
        text = head + "\n" + "\n".join(body)
        if last < end:
            text += f"\n(cut at line {last} of {len(lines)}; ask for start_line={last + 1}.)"
        return text

    def _fit(self, head: str, lines: list[str], tail: str) -> tuple[str, int]:
        """`head`, as many of `lines` as fit in the cap (with `tail`), and `tail`; and how
        many lines fitted."""
        budget = self.max_result_bytes - _size(head) - _size(tail) - 120
        kept: list[str] = []
        for line in lines:
            budget -= _size(line) + 1
            if budget < 0:
                break
            kept.append(line)
        return "\n".join([head, *kept, *([tail] if tail else [])]), len(kept)

    def _scrub(self, message: str) -> str:
        """A refusal without the roots' absolute paths: the model gets the workspace's
        layout, not where it lies on this machine."""
        for root in sorted(self.workspace.roots, key=lambda r: len(str(r)), reverse=True):
            message = message.replace(str(root), root.name)
        return message

    def _outcome(
        self,
        tool: str,
        target: str | None,
        text: str,
        files_read: tuple[str, ...],
        *,
        refused: bool = True,
    ) -> ToolOutcome:
        # A file name that is not UTF-8 reaches Python as lone surrogates, which UTF-8 cannot
        # carry: they are sent as "?" rather than fail the call.
        data = text.encode("utf-8", "replace")
        if len(data) > self.max_result_bytes:  # (only a header of long names gets here)
            data = data[: self.max_result_bytes - len(_CUT)].decode("utf-8", "ignore").encode()
            data += _CUT
        text = data.decode("utf-8")
        return ToolOutcome(text, refused, tool, target, files_read, len(data))


# --- arguments --------------------------------------------------------------------------------


def _arguments(tool: str, arguments: str) -> dict[str, Any]:
    """The call's arguments, checked against the tool's parameters; _Refusal saying what to
    send instead when they are not usable. Optional ones given as null are left out."""
    params = _TOOLS[tool][1]
    example = _example(params)
    if not isinstance(arguments, str):
        raise _Refusal(f"arguments must be a JSON object, like {example}.")
    if len(arguments) > MAX_ARGUMENTS_CHARS:
        raise _Refusal(
            f"arguments are {len(arguments)} characters, over {MAX_ARGUMENTS_CHARS}; send "
            f"a JSON object like {example}."
        )
    try:
        # (Nesting is measured before Python's parser recurses: see safe_json.)
        values = safe_json.loads((arguments.strip() or "{}").encode("utf-8"), max_depth=2)
    except (ValueError, UnicodeError) as exc:
        raise _Refusal(f"arguments are not valid JSON ({exc}); send {example}.") from None
    if not isinstance(values, dict):
        raise _Refusal(f"arguments must be a JSON object, like {example}.")
    known = {p.name for p in params}
    extra = [key for key in values if key not in known]
    if extra:
        shown = ", ".join(_quoted(key[:40]) for key in extra[:3])
        raise _Refusal(
            f"{tool} takes {', '.join(p.name for p in params)}; it has no {shown}. Send {example}."
        )
    checked: dict[str, Any] = {}
    for param in params:
        value = values.get(param.name)
        if value is None:
            if param.required:
                raise _Refusal(f"{tool} needs {param.name}; send {example}.")
            continue
        checked[param.name] = _check_value(param, value, example)
    return checked


def _check_value(param: _Param, value: Any, example: str) -> Any:
    wrong = f"{param.name} must be {_KIND_WORDS[param.kind]}; send {example}."
    if param.kind is str:
        if not isinstance(value, str):
            raise _Refusal(wrong)
        if not value.strip() or len(value) > param.max_chars:
            raise _Refusal(
                f"{param.name} must be non-empty text of at most {param.max_chars} characters."
            )
        if "\x00" in value or not _utf8(value):
            raise _Refusal(f"{param.name} must be text without NUL or unpaired surrogates.")
        return value
    if param.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Refusal(wrong)
        if not 1 <= value <= 10**9:
            raise _Refusal(f"{param.name} must be a line number, 1 or more.")
        return value
    if not isinstance(value, bool):
        raise _Refusal(wrong)
    return value


def _example(params: tuple[_Param, ...]) -> str:
    samples = {"pattern": "src/**/*.py", "path": "src/main.py", "query": "def main"}
    shown = {p.name: samples.get(p.name, "") for p in params if p.required}
    return json.dumps(shown)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


# --- text -------------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """A file's lines as editors and grep number them: split at "\\n" only (not at the other
    characters str.splitlines takes for line ends), a final newline ending the last line."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _size(text: str) -> int:
    return len(text.encode("utf-8", "replace"))


def _cut_utf8(text: str, limit: int) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _skipped(selection: Selection) -> str:
    note = selection.skipped_note()
    return f"\n{note.replace('Patterns skipped', 'Skipped')}" if note else ""


def _compile(query: str, regex: bool) -> Any:
    """The query as an RE2 program: a literal matched case-insensitively, or a regex (with
    `^`/`$` at line ends). A match never spans lines. _Refusal with RE2's reason if the
    regex is invalid, and when it is too complex to run over the workspace."""
    options = re2.Options()
    options.log_errors = False  # (it would write every bad pattern to our stderr)
    options.never_nl = True
    options.never_capture = True  # (only where a match is, never its groups)
    options.max_mem = REGEX_MEMORY
    if not regex:
        options.literal = True
        options.case_sensitive = False
    try:
        program = re2.compile(query if not regex else _LINE_MODE + query, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        reason = reason.replace(_LINE_MODE, "", 1)  # (ours, not the model's)
        raise _Refusal(
            f"the regex is not valid RE2 syntax ({reason}); fix it, or send plain text with regex=false."
        ) from None
    if program.programsize > MAX_REGEX_PROGRAM:
        raise _Refusal(
            f"the regex is too complex ({program.programsize} RE2 instructions, over "
            f"{MAX_REGEX_PROGRAM}); simplify it."
        )
    return program


def _matching_lines(regex: Any, data: bytes, limit: int) -> Iterator[str]:
    """`line: text` for each line of UTF-8 `data` the regex matches, at most `limit`; each
    search starts at the next line, so a line is told once."""
    position, line_number, counted = 0, 1, 0
    for _ in range(limit):
        match = regex.search(data, position)
        if match is None:
            return
        start = match.start()
        line_number += data.count(b"\n", counted, start)
        counted = start
        line_start = data.rfind(b"\n", 0, start) + 1
        line_end = data.find(b"\n", start)
        line_end = len(data) if line_end < 0 else line_end
        column = len(data[line_start:start].decode("utf-8", "replace"))
        line = data[line_start:line_end].decode("utf-8", "replace").removesuffix("\r")
        yield f"{line_number}: {_around(line, column)}"
        position = line_end + 1
        if position > len(data):
            return


def _around(line: str, column: int) -> str:
    """At most MAX_LINE_CHARS of `line`, from a little before `column` (where the match is)."""
    if len(line) <= MAX_LINE_CHARS:
        return line
    begin = max(0, min(column - 40, len(line) - MAX_LINE_CHARS))
    shown = line[begin : begin + MAX_LINE_CHARS]
    return ("…" if begin else "") + shown + ("…" if begin + MAX_LINE_CHARS < len(line) else "")
