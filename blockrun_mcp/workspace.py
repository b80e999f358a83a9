"""Files as context: which files a model may be sent, read by the server so the agent never
copies them into its arguments.

A file may come only from the workspace roots (the MCP client's `roots/list`, else
BLOCKRUN_WORKSPACE, else the directory the server started in). Each path is opened from the
root's directory descriptor one component at a time, never following a symlink by path
(O_NOFOLLOW at every step): a symlink inside the workspace is read and resolved again from the
root, so whatever leads outside (`..`, an absolute path elsewhere, a symlink out, a symlink loop,
a directory swapped for a symlink while the call runs) is refused, and what is checked is the
very descriptor that is read.

Inside the roots, some files are never sent:
- blockrun-mcp's own files, by identity (device and inode), not by name: the wallet's key files,
  the ledger database, the HTTP tokens file, and everything under the data dir, the media dir
  and ~/.blockrun; a hard link or bind mount of any of them under another name is the same
  file. A file whose text holds the loaded wallet's private key (hex, with or without 0x, any
  case) is refused whatever its name.
- anything under a `.git` directory (or a `.git` file), and under directories that hold
  credentials (`.ssh`, `.gnupg`, `.aws`, ...), named or matched.
- files whose name looks like a secret or a credential (`.env*`, `id_rsa*`, `*.pem`, `.netrc`,
  `.s3cfg`, `auth.json`, shell and REPL histories, ...), judged on the name normalised (NFKC,
  format characters and combining marks removed, case folded, whitespace and trailing dots
  stripped, backup suffixes such as `~`, `.bak`, `.orig`, `.old`, `.swp` stripped repeatedly).
- anything that is not a regular file (a FIFO would block, a device never ends: every file is
  opened with O_NONBLOCK after a stat, and the descriptor is checked again), and binary files.
A pattern also passes over what `.gitignore` ignores.

A named file that is refused is an error saying why; a pattern skips such files and says how
many it skipped, and why. Patterns are matched one path segment at a time (`**` spans
segments), in time linear in the path for each pattern state, with a bound on the total work,
so no pattern can hold the server. Caps bound each file, the total, and how many files a
pattern may match (more is an error naming the count, never a silent cut).

A model that browses the workspace itself (workspace_tools: list, read, search) goes through
`matching_labels`, `read_matching` and `read_named`: the same checks, but every match is
listed (none is no error), and nothing `.gitignore` ignores is reached, named or not, directly
or through a symlink: each component of the path, as named and as resolved, is checked against
the `.gitignore` files of the directories above it, read from their descriptors.

All of it is blocking work: the service runs it in a worker thread (`select_files`).
"""

from __future__ import annotations

import errno
import functools
import os
import re
import stat
import unicodedata
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from blockrun_mcp.errors import BlockrunError

if TYPE_CHECKING:
    import pathspec

MAX_FILE_BYTES = 256 * 1024  # one file: a large source file; more is rarely what was meant
MAX_TOTAL_BYTES = 2 * 1024 * 1024  # one call's files together
MAX_PATTERN_FILES = 200  # files one pattern may match
MAX_SCAN_ENTRIES = 50_000  # directory entries one pattern may look at
MAX_SPECS = 50
BINARY_SNIFF_BYTES = 8192
MAX_SYMLINKS = 40  # as Linux's own limit on one path's symlinks
MAX_DEPTH = 100  # directories a walk descends (one descriptor held open per level)
# Segment matches one pattern may make over a whole walk (weighted by the segment's length):
# a few seconds at worst, and far above any sensible pattern over MAX_SCAN_ENTRIES entries.
MAX_MATCH_WORK = 2_000_000
# Entries of the private directories indexed by identity; past it, the index is incomplete
# and any file with more than one name (a possible hard link into them) is refused.
MAX_PRIVATE_ENTRIES = 100_000

# Names that look like secrets or credentials, matched in full against each normalised form
# of a file name (see name_forms: case folded, so the patterns are lower case).
SECRET_NAMES = re.compile(
    r"""(
        \.env.*|.*\.env|
        .*\.(pem|key|p12|pfx|jks|keystore|kdbx|asc|gpg|pgp|ppk|der|crt|cer|p8|ovpn|tfstate|tfvars)|
        id_(rsa|dsa|ecdsa|ed25519|xmss).*|.+_(rsa|dsa|ecdsa|ed25519)|ssh_host_.*key.*|
        [._]netrc|\.pgpass|\.npmrc|\.pypirc|\.git-credentials|\.?htpasswd|\.s3cfg|\.boto|
        \.yarnrc(\.yml)?|auth\.json|\.dockercfg|\.vault-token|\.terraformrc|\.my\.cnf|\.authinfo|
        credentials(\..*)?|.*secrets?(\..*)?|.*\.session|wallet\.key|terraform\.tfstate(\..*)?|
        service[-_]?account.*\.json|.*[-_]sa[-_]key.*\.json|.*[-_]key\.json|
        client_secret.*\.json|.*firebase-adminsdk.*\.json|
        \.?mcp\.json|settings\.local\.json|
        .*[._-]history|\.zhistory|\.histfile|\.lesshst|\.viminfo|\.rhistory
    )""",
    re.VERBOSE,
)
# Directories whose whole content is credentials (or git's own data): nothing under them is sent.
# (.claude and .cursor: agent hosts' settings, whose `env` blocks and MCP configs hold API keys.)
SECRET_DIRS = frozenset(
    {".ssh", ".gnupg", ".aws", ".azure", ".kube", ".password-store", ".claude", ".cursor"}
)
# What editors and people append to a copy: stripped (repeatedly) before a name is judged, so
# `server.key.bak`, `.env~` and `.pgpass.old` are judged as the file they copy.
BACKUP_SUFFIX = re.compile(
    r"""(~+|\#|\s*\(\d+\)|\s+copy(\s+\d+)?|
        [._-](bak|backup|orig|old|save|sav|swp|swo|swn|tmp|temp|copy|prev|previous|rej|\d+))$""",
    re.VERBOSE,
)
# Invisible characters (zero-width, bidi controls), controls and combining marks: dropped from
# a name before it is judged, so that `.env\u200b` is `.env`.
_DROPPED_CATEGORIES = frozenset({"Cf", "Cc", "Mn", "Me", "Zl", "Zp"})
GLOB_CHARS = frozenset("*?[")

_O = {name: getattr(os, name, 0) for name in ("O_NOFOLLOW", "O_NONBLOCK", "O_NOCTTY", "O_CLOEXEC")}
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O["O_CLOEXEC"]
_STEP_DIR_FLAGS = _DIR_FLAGS | _O["O_NOFOLLOW"]
# O_NONBLOCK: a FIFO swapped in after the stat is opened at once (and refused by the fstat),
# never waited on; O_NOCTTY: a terminal never becomes ours.
_FILE_FLAGS = os.O_RDONLY | _O["O_NOFOLLOW"] | _O["O_NONBLOCK"] | _O["O_NOCTTY"] | _O["O_CLOEXEC"]
# Everything here opens relative to a directory descriptor: Linux, macOS and the BSDs, not Windows.
_DESCRIPTOR_RELATIVE = {os.open, os.stat, os.readlink} <= os.supports_dir_fd and (
    os.scandir in os.supports_fd
)
_OWN_FILES = "blockrun-mcp's own files (keys, ledger, tokens, media) are never sent"

Identity = tuple[int, int]  # (st_dev, st_ino): a file whatever its names


class FileRefused(BlockrunError):
    """A file (or pattern) that cannot be sent; the message says which and why, and `reason`
    is the short form a pattern's skip count uses."""

    def __init__(
        self, message: str, reason: str = "refused", *, subject: str = "", why: str = ""
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.subject = subject  # the path refused, and why, when the message is "{subject}
        self.why = why  # was not sent: {why}."

    @property
    def brief(self) -> str:
        """The message without "was not sent" (a model's tools send nothing anywhere)."""
        return f"{self.subject}: {self.why}." if self.subject and self.why else self.message


class _Missing(FileRefused):
    """Nothing by that name under this root (another root may have it)."""


@dataclass(frozen=True)
class SentFile:
    label: str  # the path as the model sees it: relative to its root
    text: str

    @property
    def size(self) -> int:
        return len(self.text.encode("utf-8"))

    @property
    def tokens(self) -> int:
        return (len(self.text) + 3) // 4


@dataclass
class Selection:
    """The files chosen for one call, and what patterns passed over."""

    files: list[SentFile] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    roots: list[str] = field(default_factory=list)  # the workspace the files were looked up in

    @property
    def total_bytes(self) -> int:
        return sum(file.size for file in self.files)

    def skipped_note(self) -> str | None:
        if not self.skipped:
            return None
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        return f"Patterns skipped {sum(self.skipped.values())} file(s): {reasons}."


def fenced(files: list[SentFile]) -> str:
    """The files as the model reads them: each labelled with its path and fenced so that no
    line inside can close the fence early."""
    blocks = []
    for file in files:
        # (The search only where a fence could be at stake: most files hold no ``` at all.)
        longest = (
            max((len(run) for run in re.findall(r"`{3,}", file.text)), default=0)
            if "```" in file.text
            else 0
        )
        fence = "`" * max(3, longest + 1)
        blocks.append(f"File: {file.label}\n{fence}\n{file.text.rstrip(chr(10))}\n{fence}")
    return "\n\n".join(blocks)


def workspace_roots(
    client_roots: list[str] | None, configured: list[Path], cwd: Path
) -> list[Path]:
    """The roots files may come from: the client's (file:// URIs), else the configured list,
    else the directory the server started in."""
    from urllib.parse import unquote, urlparse

    if client_roots:
        paths = []
        for uri in client_roots:
            parsed = urlparse(uri)
            if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
                paths.append(Path(unquote(parsed.path)))
        if paths:
            return paths
    return configured or [cwd]


# --- names ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)  # (directory names recur on every path below them)
def name_forms(name: str) -> tuple[str, ...]:
    """The forms a file name is judged on: normalised (compatibility forms folded, invisible
    characters and combining marks dropped, case folded, outer whitespace and trailing dots
    stripped: what a look-alike name hides), then with each backup suffix stripped in turn."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    text = unicodedata.normalize("NFKC", text).casefold()
    forms: list[str] = []
    while len(forms) < 64:  # each round strips at least one character; a bound all the same
        text = text.strip().rstrip(".").strip()  # (Windows drops trailing dots and spaces)
        if text.startswith(".#"):  # an Emacs lock file names the file it locks
            text = text[2:]
        if len(text) > 1 and text.startswith("#") and text.endswith("#"):  # Emacs auto-save
            text = text[1:-1]
        forms.append(text)
        stripped = BACKUP_SUFFIX.sub("", text)
        if stripped == text or not stripped.strip(". "):
            break
        text = stripped
    return tuple(forms)


def secret_looking(name: str) -> bool:
    return any(SECRET_NAMES.fullmatch(form) for form in name_forms(name))


def _git_name(name: str) -> bool:
    return ".git" in name_forms(name)


def _secret_dir(name: str) -> bool:
    return any(form in SECRET_DIRS for form in name_forms(name))


# --- patterns ---------------------------------------------------------------------------------


@dataclass
class Glob:
    """A shell-style glob over relative paths, matched segment by segment: `*`, `?` and
    `[...]` stay within one segment, a `**` segment spans any number of them (`src/**/*.py`
    matches `src/a.py` too; `**.py` is `**/*.py`; `src/**` is every file below src).

    Matching keeps the set of pattern positions a path prefix can reach (a directory's set is
    computed once for all its entries), so the work is at most (path segments) x (pattern
    segments) segment matches, and each segment is a regex with atomic groups that cannot
    backtrack exponentially. `work` counts it; past MAX_MATCH_WORK the pattern is refused."""

    pattern: str
    segments: list[re.Pattern[str] | None]  # None: `**`
    work: int = 0

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        segments: list[re.Pattern[str] | None] = []
        for raw in pattern.split("/"):
            if raw in ("", "."):
                continue
            if raw.startswith("**"):
                if not segments or segments[-1] is not None:  # `**/**` is `**`
                    segments.append(None)
                rest = raw.lstrip("*")
                if rest:
                    segments.append(_segment_regex("*" + rest, pattern))
            else:
                segments.append(_segment_regex(raw, pattern))
        if not segments:
            raise FileRefused(f"The pattern {pattern} names no file.")
        if segments[-1] is None:  # a final `**` means the files below, not the directory
            segments.append(re.compile(r"(?s:.+)"))
        return cls(pattern, segments)

    def start(self) -> frozenset[int]:
        return self._closure({0})

    def step(self, states: frozenset[int], name: str) -> frozenset[int]:
        """The positions reachable after one more path segment, `name`."""
        reached: set[int] = set()
        for index in states:
            if index == len(self.segments):
                continue
            segment = self.segments[index]
            if segment is None:
                reached.add(index)  # `**` takes this segment too
                continue
            self.work += 1 + len(name) * len(segment.pattern) // 256
            if self.work > MAX_MATCH_WORK:
                raise FileRefused(
                    f"The pattern {self.pattern} takes too much work to match against the "
                    "workspace; use fewer `**` and wildcards, or name a narrower directory."
                )
            if segment.fullmatch(name):
                reached.add(index + 1)
        return self._closure(reached)

    def accepts(self, states: frozenset[int]) -> bool:
        return len(self.segments) in states

    def leads_on(self, states: frozenset[int]) -> bool:
        """Whether a directory at `states` can hold a match (else the walk passes it by)."""
        return any(index < len(self.segments) for index in states)

    def _closure(self, states: set[int]) -> frozenset[int]:
        # A `**` may also take no segment at all. (Consecutive ones were merged: one pass.)
        out = set(states)
        for index in states:
            if index < len(self.segments) and self.segments[index] is None:
                out.add(index + 1)
        return frozenset(out)

    def matches(self, relative: str) -> bool:
        states = self.start()
        for name in relative.split("/"):
            states = self.step(states, name)
            if not states:
                return False
        return self.accepts(states)


def _segment_regex(segment: str, pattern: str) -> re.Pattern[str]:
    """One segment as a regex that runs in time linear in the name for each of its fixed
    parts: `A*B*C` becomes `A(?>.*?B).*C`: each part between stars is found at its earliest
    place and never reconsidered (which loses no match: what follows a star can take anything
    an earlier choice left), so `*?*?*?...#` costs a scan, not a combinatorial search."""
    parts: list[str] = [""]  # the fixed parts between runs of stars, as regex
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            while i < len(segment) and segment[i] == "*":
                i += 1
            parts.append("")
            continue
        if char == "?":
            parts[-1] += "."
        elif char == "[":
            body, end = _char_class(segment, i, pattern)
            parts[-1] += body
            i = end
        else:
            parts[-1] += re.escape(char)
        i += 1
    if len(parts) == 1:
        regex = parts[0]
    else:
        middle = "".join(f"(?>.*?{part})" for part in parts[1:-1])
        regex = f"{parts[0]}{middle}.*{parts[-1]}"
    return re.compile(f"(?s:{regex})")


def _char_class(segment: str, start: int, pattern: str) -> tuple[str, int]:
    """`[...]` at `start` as a regex class, and the index of its `]`; an unclosed `[` is
    itself. fnmatch's syntax: `[!...]` negates, a `]` first is a member, `a-z` is a range."""
    j = start + 1
    if j < len(segment) and segment[j] == "!":
        j += 1
    if j < len(segment) and segment[j] == "]":
        j += 1
    while j < len(segment) and segment[j] != "]":
        j += 1
    if j >= len(segment):
        return re.escape("["), start
    body = segment[start + 1 : j]
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    members = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            low, high = body[k], body[k + 2]
            if low > high:
                raise FileRefused(
                    f"The pattern {pattern} has the character range [{low}-{high}], which runs "
                    f"backwards; write [{high}-{low}]."
                )
            members.append(f"{re.escape(low)}-{re.escape(high)}")
            k += 3
        else:
            members.append(re.escape(body[k]))
            k += 1
    return f"[{'^' if negate else ''}{''.join(members)}]", j


# --- the workspace ----------------------------------------------------------------------------


@dataclass
class _Root:
    path: Path
    fd: int


@dataclass
class _Found:
    """A file a pattern matched, found by the walk: checked again when it is opened."""

    root: int
    parts: tuple[str, ...]
    info: os.stat_result  # lstat, from the walk
    symlink: bool


class Workspace:
    """Chooses and reads files inside `roots`, never any of the `forbidden` (files, or
    directories whose whole tree is private), by path or by identity, nor a file holding
    `private_key`."""

    def __init__(
        self, roots: list[Path], forbidden: list[Path], *, private_key: str | None = None
    ) -> None:
        if not _DESCRIPTOR_RELATIVE:
            raise FileRefused(
                "files needs opening relative to a directory descriptor (POSIX), which this "
                "system lacks; paste what the model should read into the prompt instead."
            )
        self.roots = [_real(root) for root in roots if root.is_dir()]
        if not self.roots:
            shown = ", ".join(str(root) for root in roots) or "(none)"
            raise FileRefused(
                f"No workspace root is a directory ({shown}); set BLOCKRUN_WORKSPACE or open a "
                "folder in your MCP host."
            )
        self._root_ids = [_identity(os.stat(root)) for root in self.roots]
        self.forbidden = [_real(path) for path in forbidden if path.exists()]
        self._private_ids, self._private_complete = private_identities(forbidden)
        # Kept lower case and bare, and secret: a traceback or a repr shows no key.
        body = (private_key or "").strip().lower().removeprefix("0x")
        self._key = SecretStr(body) if len(body) >= 32 else None

    # --- choosing -------------------------------------------------------------------------

    def select(self, specs: list[str]) -> Selection:
        if len(specs) > MAX_SPECS:
            raise FileRefused(f"files lists {len(specs)} entries; at most {MAX_SPECS}.")
        selection = Selection()
        seen: set[Identity] = set()
        with self._opened_roots() as roots:
            for spec in specs:
                if (
                    not isinstance(spec, str)
                    or not spec.strip()
                    or "\x00" in spec
                    or len(spec) > 1000
                ):
                    raise FileRefused("Each entry of files must be a non-empty path or pattern.")
                spec = spec.strip()
                if GLOB_CHARS & set(spec):
                    for found, label in self._matches(spec, selection, roots):
                        try:
                            sent = self._open_and_read(roots, found.root, found.parts, label)
                        except FileRefused as refused:
                            selection.skipped[refused.reason] += 1
                            continue
                        self._add(selection, seen, *sent)
                else:
                    self._add(selection, seen, *self._named(spec, roots))
                if selection.total_bytes > MAX_TOTAL_BYTES:
                    raise FileRefused(
                        f"The files come to {selection.total_bytes} bytes, over the "
                        f"{MAX_TOTAL_BYTES} a call may send; name fewer files or a narrower "
                        "pattern."
                    )
        return selection

    # --- browsing (workspace_tools) -------------------------------------------------------------

    def matching_labels(self, pattern: str, selection: Selection) -> list[str]:
        """The label of every file `pattern` matches that passes the checks a stat can make
        (content is checked when read), sorted, once each; skips are counted in `selection`.
        No cap on the count and none is no error: the caller shows what it can."""
        _check_browse_spec(pattern)
        with self._opened_roots() as roots:
            found = self._matches(pattern, selection, roots, browse=True)
        return sorted({label for _, label in found})

    def read_matching(self, pattern: str, selection: Selection) -> Iterator[SentFile]:
        """The files `pattern` matches, read one at a time in label order (each file once,
        whatever its names), as far as the caller iterates; refusals are counted in
        `selection`. The roots stay open while it runs: close it when done."""
        _check_browse_spec(pattern)
        seen: set[Identity] = set()
        with self._opened_roots() as roots:
            for found, label in self._matches(pattern, selection, roots, browse=True):
                try:
                    identity, file = self._open_and_read(
                        roots, found.root, found.parts, label, hide_ignored=True
                    )
                except FileRefused as refused:
                    selection.skipped[refused.reason] += 1
                    continue
                if identity not in seen:
                    seen.add(identity)
                    yield file

    def read_named(self, spec: str) -> SentFile:
        """One file by path, relative to a root (or its label, root name first, when there are
        several) or absolute inside one: confined as a named entry of `files`, and refused
        too when `.gitignore` ignores it. An absolute path outside the roots is refused by its
        text alone: nothing outside is looked at, so nothing about it is told."""
        _check_browse_spec(spec)
        with self._opened_roots() as roots:
            for index, parts in self._named_candidates(spec):
                try:
                    return self._open_and_read(roots, index, parts, spec, hide_ignored=True)[1]
                except _Missing:
                    continue
        raise FileRefused(f"{spec} was not found in the workspace.", "not found")

    def _named_candidates(self, spec: str) -> list[tuple[int, list[str]]]:
        """Where a browsing path may be: (root, path below it), most specific first."""
        given = Path(spec)
        if given.is_absolute():
            inside = [
                (index, list(given.relative_to(root).parts))
                for index, root in enumerate(self.roots)
                if given.is_relative_to(root)
            ]
            if not inside:
                raise _refused(spec, "it is outside the workspace; give a path relative to it")
            return inside
        parts = list(given.parts)
        everywhere = [(index, parts) for index in range(len(self.roots))]
        if len(self.roots) > 1 and len(parts) > 1:  # a label: the root's name, then the path
            labelled = [(i, parts[1:]) for i, r in enumerate(self.roots) if r.name == parts[0]]
            return labelled + everywhere
        return everywhere

    @staticmethod
    def _add(selection: Selection, seen: set[Identity], identity: Identity, file: SentFile) -> None:
        if identity not in seen:  # one file under two names (or two specs) goes once
            seen.add(identity)
            selection.files.append(file)

    @contextmanager
    def _opened_roots(self) -> Iterator[list[_Root]]:
        """A descriptor per root for the whole call: every path is opened below these."""
        opened: list[_Root] = []
        try:
            for path, identity in zip(self.roots, self._root_ids, strict=True):
                try:
                    fd = os.open(path, _DIR_FLAGS)
                except OSError as exc:
                    raise FileRefused(
                        f"The workspace root {path} cannot be opened ({exc.strerror})."
                    ) from None
                opened.append(_Root(path, fd))
                if _identity(os.fstat(fd)) != identity:
                    raise FileRefused(
                        f"The workspace root {path} was replaced while files were being chosen."
                    )
            yield opened
        finally:
            for root in opened:
                os.close(root.fd)

    def _named(self, spec: str, roots: list[_Root]) -> tuple[Identity, SentFile]:
        given = Path(spec).expanduser()
        if given.is_absolute():
            located = self._locate(str(given))
            if located is None:
                if not os.path.lexists(given):
                    raise FileRefused(f"{spec} was not found in the workspace.")
                raise _refused(spec, "it resolves outside the workspace roots")
            index, parts = located
            return self._open_and_read(roots, index, parts, spec)
        for index in range(len(roots)):
            try:
                return self._open_and_read(roots, index, list(given.parts), spec)
            except _Missing:
                continue
        raise FileRefused(
            f"{spec} was not found in the workspace ({', '.join(map(str, self.roots))})."
        )

    def _locate(self, absolute: str) -> tuple[int, list[str]] | None:
        """The root an absolute path is under, and the path below it: by its text first, else
        by where it resolves to now. (Only to choose where to start: what is read is then
        opened from that root's descriptor, one component at a time.)"""
        for candidate in (Path(absolute), Path(os.path.realpath(absolute))):
            for index, root in enumerate(self.roots):
                if candidate.is_relative_to(root):
                    return index, list(candidate.relative_to(root).parts)
        return None

    def _label(self, index: int, parts: Sequence[str]) -> str:
        relative = "/".join(parts) or self.roots[index].name
        return relative if len(self.roots) == 1 else f"{self.roots[index].name}/{relative}"

    # --- opening, one component at a time ------------------------------------------------------

    def _open(
        self,
        roots: list[_Root],
        index: int,
        parts: list[str],
        spec: str,
        *,
        hide_ignored: bool = False,
    ) -> tuple[int, int, list[str], os.stat_result]:
        """Opens `parts` below root `index` as a regular file: each directory with
        O_NOFOLLOW|O_DIRECTORY relative to the one before, so none can be swapped for a
        symlink between a check and the open; a symlink met on the way is read and its target
        walked the same way from where it points, within the roots. Returns the descriptor,
        the root it ended under, the real path below that root, and the descriptor's stat.
        With `hide_ignored`, every name stepped on (a symlink's own, then its target's) is
        refused if the `.gitignore` files of the directories above it ignore it."""
        pending = deque(part for part in parts if part not in ("", "."))
        chain: list[int] = []  # descriptors of the directories below the root, ours to close
        names: list[str] = []  # the real path below the root, as far as it was opened
        # (hide_ignored) The .gitignore rules of the root and of each directory in `chain`.
        rules = [_gitignore(roots[index].fd, "")] if hide_ignored else []
        hops = 0
        try:
            while pending:
                name = pending.popleft()
                here = chain[-1] if chain else roots[index].fd
                if name == "..":
                    if not names:
                        raise _refused(spec, "it resolves outside the workspace roots")
                    names.pop()
                    os.close(chain.pop())
                    if hide_ignored:
                        rules.pop()
                    continue
                last = not pending
                try:
                    info = os.stat(name, dir_fd=here, follow_symlinks=False)
                except (FileNotFoundError, NotADirectoryError):
                    if hops:
                        raise _refused(spec, "it is a broken or looping symlink") from None
                    raise _Missing(f"{spec} was not found.", "not found") from None
                except OSError as exc:
                    raise _refused(
                        spec, f"it cannot be read ({exc.strerror})", "unreadable"
                    ) from None
                self._check_name(name, spec, last=last)  # the link's name, and its target's
                if hide_ignored:
                    _check_ignored([*names, name], stat.S_ISDIR(info.st_mode), rules, spec)
                if stat.S_ISLNK(info.st_mode):
                    hops += 1
                    if hops > MAX_SYMLINKS:
                        raise _refused(spec, "it is a broken or looping symlink")
                    try:
                        target = os.readlink(name, dir_fd=here)
                    except OSError:
                        raise _refused(
                            spec, "it changed while it was being read", "changed"
                        ) from None
                    if os.path.isabs(target):
                        located = self._locate(target)
                        if located is None:
                            raise _refused(spec, "it resolves outside the workspace roots")
                        index, below = located
                        for fd in chain:
                            os.close(fd)
                        chain.clear()
                        names.clear()
                        if hide_ignored:  # from the top of the root it leads into
                            rules = [_gitignore(roots[index].fd, "")]
                    else:
                        below = target.split("/")
                    pending.extendleft(reversed([p for p in below if p not in ("", ".")]))
                    continue
                real = roots[index].path.joinpath(*names, name)
                if last:
                    self._check_stat(info, real, spec)  # a FIFO or a device is never opened
                    fd = self._open_step(name, here, _FILE_FLAGS, spec)
                    opened = os.fstat(fd)
                    if _identity(opened) != _identity(info):
                        os.close(fd)
                        raise _refused(spec, "it changed while it was being read", "changed")
                    try:
                        self._check_stat(opened, real, spec)
                    except FileRefused:
                        os.close(fd)
                        raise
                    return fd, index, [*names, name], opened
                if not stat.S_ISDIR(info.st_mode):
                    raise _Missing(f"{spec} was not found.", "not found")
                if len(chain) >= MAX_DEPTH:  # (one descriptor held per level)
                    raise _refused(spec, f"it is over {MAX_DEPTH} directories deep", "too deep")
                fd = self._open_step(name, here, _STEP_DIR_FLAGS, spec)
                chain.append(fd)
                names.append(name)
                self._check_private(os.fstat(fd), real, spec)
                if hide_ignored:
                    rules.append(_gitignore(fd, "/".join(names) + "/"))
            raise _refused(spec, "it is not a regular file", "not regular files")
        finally:
            for fd in chain:
                os.close(fd)

    @staticmethod
    def _open_step(name: str, here: int, flags: int, spec: str) -> int:
        try:
            return os.open(name, flags, dir_fd=here)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR, errno.ENOENT):
                # What the stat saw a moment ago is gone or now a symlink: swapped mid-call.
                raise _refused(spec, "it changed while it was being read", "changed") from None
            raise _refused(spec, f"it cannot be opened ({exc.strerror})", "unreadable") from None

    def _check_name(self, name: str, spec: str, *, last: bool) -> None:
        if _git_name(name):
            raise _refused(spec, "it is git's own data (.git)", "git internals")
        if not last and _secret_dir(name):
            raise _refused(spec, f"it is under {name}, which holds credentials", "secret-looking")
        if last and secret_looking(name):
            raise _refused(spec, "its name looks like a secret", "secret-looking")

    def _check_private(self, info: os.stat_result, real: Path, spec: str) -> None:
        if _identity(info) in self._private_ids or any(
            real == path or real.is_relative_to(path) for path in self.forbidden
        ):
            raise _refused(spec, _OWN_FILES, "private")

    def _check_stat(self, info: os.stat_result, real: Path, spec: str) -> None:
        """What a stat alone decides: made on the name's lstat before opening, and again on
        the open descriptor."""
        self._check_private(info, real, spec)
        if not stat.S_ISREG(info.st_mode):
            raise _refused(spec, "it is not a regular file", "not regular files")
        if info.st_nlink > 1 and not self._private_complete:
            raise _refused(
                spec,
                "it has several names and blockrun-mcp's own files are too many to check them all",
                "private",
            )
        if info.st_size > MAX_FILE_BYTES:
            raise _refused(
                spec, f"it is {info.st_size} bytes, over the {MAX_FILE_BYTES} per file", "too large"
            )

    # --- reading ------------------------------------------------------------------------------

    def _open_and_read(
        self,
        roots: list[_Root],
        index: int,
        parts: Sequence[str],
        spec: str,
        *,
        hide_ignored: bool = False,
    ) -> tuple[Identity, SentFile]:
        fd, index, real_parts, info = self._open(
            roots, index, list(parts), spec, hide_ignored=hide_ignored
        )
        label = self._label(index, real_parts)
        try:
            with os.fdopen(fd, "rb") as handle:  # the descriptor checked is the one read
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise _refused(label, f"it cannot be read ({exc.strerror})", "unreadable") from None
        if len(data) > MAX_FILE_BYTES:
            raise _refused(label, f"it is over the {MAX_FILE_BYTES} bytes per file", "too large")
        if self._key is not None and self._key.get_secret_value().encode() in data.lower():
            raise _refused(label, "it holds the wallet's private key", "private")
        if b"\x00" in data[:BINARY_SNIFF_BYTES]:
            raise _refused(label, "it is a binary file", "binary")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _refused(label, "it is not UTF-8 text", "binary") from None
        return _identity(info), SentFile(label, text)

    # --- patterns -----------------------------------------------------------------------------

    def _matches(
        self,
        pattern: str,
        selection: Selection,
        roots: list[_Root] | None = None,
        *,
        browse: bool = False,
    ) -> list[tuple[_Found, str]]:
        """The files `pattern` matches that pass every check a stat can make, with their
        labels, sorted. (They are opened and checked again when read.) With `browse` (a
        model's tools): no cap and no error for none, a label's root name first picks that
        root, and a symlink into what `.gitignore` ignores is skipped as ignored."""
        if roots is None:
            with self._opened_roots() as opened:
                return self._matches(pattern, selection, opened, browse=browse)
        walk_roots = list(range(len(self.roots)))
        if os.path.isabs(pattern):
            index = next(
                (i for i, r in enumerate(self.roots) if Path(pattern).is_relative_to(r)), None
            )
            if index is None:
                raise FileRefused(f"The pattern {pattern} is outside the workspace roots.")
            pattern = Path(pattern).relative_to(self.roots[index]).as_posix()
            walk_roots = [index]
        elif browse and len(self.roots) > 1:
            walk_roots, pattern = self._labelled_pattern(pattern)
        if ".." in pattern.split("/"):
            raise FileRefused(f"The pattern {pattern} climbs out of the workspace with '..'.")
        glob = Glob.compile(pattern)
        found: list[tuple[_Found, str]] = []
        for index in walk_roots:
            walked = _walk(
                self.roots[index],
                selection,
                glob,
                root_fd=roots[index].fd,
                private=self._private_ids,
            )
            for candidate in walked:
                candidate.root = index
                relative = "/".join(candidate.parts)
                try:
                    if candidate.symlink:
                        # Where it leads decides: opened (and closed) now, opened again to read.
                        fd, end, real_parts, _ = self._open(
                            roots, index, list(candidate.parts), relative, hide_ignored=browse
                        )
                        os.close(fd)
                        label = self._label(end, real_parts)
                    else:
                        self._check_name(candidate.parts[-1], relative, last=True)
                        real = self.roots[index].joinpath(*candidate.parts)
                        self._check_stat(candidate.info, real, relative)
                        label = self._label(index, candidate.parts)
                except FileRefused as refused:
                    selection.skipped[refused.reason] += 1
                    continue
                found.append((candidate, label))
        if browse:
            return sorted(found, key=lambda pair: pair[1])
        if len(found) > MAX_PATTERN_FILES:
            raise FileRefused(
                f"The pattern {pattern} matches {len(found)} files, over the "
                f"{MAX_PATTERN_FILES} one pattern may send; narrow it."
            )
        if not found:
            raise FileRefused(
                f"The pattern {pattern} matches no file that can be sent"
                + (f" ({selection.skipped_note()})" if selection.skipped else ".")
            )
        return sorted(found, key=lambda pair: pair[1])

    def _labelled_pattern(self, pattern: str) -> tuple[list[int], str]:
        """With several roots, labels start with the root's name: a pattern that does too is
        matched in that root only, below it. Otherwise every root, the pattern as given."""
        first, _, rest = pattern.partition("/")
        named = [index for index, root in enumerate(self.roots) if root.name == first]
        if named and rest:
            return named, rest
        return list(range(len(self.roots))), pattern


def _check_browse_spec(spec: str) -> None:
    """A path or pattern a model sent: text a path can hold, of a sensible length."""
    if not isinstance(spec, str) or not spec.strip() or "\x00" in spec or len(spec) > 1000:
        raise FileRefused("A path or pattern must be non-empty text of at most 1000 characters.")


def _check_ignored(
    parts: list[str],
    is_dir: bool,
    rules: list[list[tuple[str, pathspec.GitIgnoreSpec]]],
    spec: str,
) -> None:
    if _ignored("/".join(parts), is_dir, [rule for level in rules for rule in level]):
        raise _refused(spec, "git ignores it (.gitignore)", "ignored by git")


def _refused(spec: str, why: str, reason: str = "outside the workspace") -> FileRefused:
    return FileRefused(f"{spec} was not sent: {why}.", reason, subject=spec, why=why)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


def _identity(info: os.stat_result) -> Identity:
    return (info.st_dev, info.st_ino)


def private_identities(paths: list[Path]) -> tuple[frozenset[Identity], bool]:
    """The identity of every file and directory at or under `paths` (a path that is a symlink
    counts as what it points to), and whether the index is complete (MAX_PRIVATE_ENTRIES)."""
    found: set[Identity] = set()
    stack: list[Path] = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue
        if _identity(info) not in found:  # (the media dir is usually inside the data dir)
            found.add(_identity(info))
            if stat.S_ISDIR(info.st_mode):
                stack.append(path)
    entries = 0
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                for entry in listing:
                    entries += 1
                    if entries > MAX_PRIVATE_ENTRIES:
                        return frozenset(found), False
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if _identity(info) in found:
                        continue
                    found.add(_identity(info))
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(Path(entry.path))
        except OSError:
            continue  # what cannot be listed cannot be linked from by us either
    return frozenset(found), True


@dataclass
class _Level:
    """One directory of a walk: its descriptor, its path, and the subdirectories left."""

    fd: int
    parts: tuple[str, ...]
    ignores: list[tuple[str, pathspec.GitIgnoreSpec]]
    states: frozenset[int] | None  # where the pattern stands here (None: no pattern)
    subdirs: list[tuple[str, frozenset[int] | None]] = field(default_factory=list)


def _walk(
    root: Path,
    selection: Selection,
    glob: Glob | None = None,
    *,
    root_fd: int | None = None,
    private: frozenset[Identity] = frozenset(),
) -> list[_Found]:
    """The files under `root` that `glob` matches (every file without one). Passed over:
    `.git`, the credential directories and what `.gitignore` files ignore (matching files are
    counted), symlinked directories (never followed), our own directories (by identity), and
    directories the pattern cannot match anything in. Each directory is opened below its
    parent's descriptor with O_NOFOLLOW, at most MAX_DEPTH deep (one descriptor per level);
    at most MAX_SCAN_ENTRIES entries are looked at."""
    files: list[_Found] = []
    levels: list[_Level] = []
    scanned = 0
    top = os.open(root, _DIR_FLAGS) if root_fd is None else os.dup(root_fd)
    try:
        levels.append(_Level(top, (), [], glob.start() if glob else None))
        levels[0].ignores = _gitignore(top, "")
        scanned = _scan(root, levels[0], glob, selection, files, scanned)
        while levels:
            level = levels[-1]
            if not level.subdirs:
                os.close(levels.pop().fd)
                continue
            name, states = level.subdirs.pop()
            parts = (*level.parts, name)
            if len(parts) > MAX_DEPTH:
                selection.skipped["too deep"] += 1
                continue
            try:
                fd = os.open(name, _STEP_DIR_FLAGS, dir_fd=level.fd)
            except OSError as exc:
                # A directory that became a symlink (or went) since the scan is not followed.
                if exc.errno not in (errno.ELOOP, errno.EMLINK, errno.ENOENT, errno.ENOTDIR):
                    selection.skipped["unreadable"] += 1
                continue
            if _identity(os.fstat(fd)) in private:
                os.close(fd)
                selection.skipped["private"] += 1
                continue
            child = _Level(fd, parts, level.ignores, states)
            levels.append(child)
            child.ignores = level.ignores + _gitignore(fd, "/".join(parts) + "/")
            scanned = _scan(root, child, glob, selection, files, scanned)
    finally:
        for level in levels:
            os.close(level.fd)
    return files


def _scan(
    root: Path,
    level: _Level,
    glob: Glob | None,
    selection: Selection,
    files: list[_Found],
    scanned: int,
) -> int:
    """One directory of a walk: its matching files into `files`, the subdirectories worth
    entering into `level.subdirs`. Returns the entries looked at so far."""
    try:
        listing = os.scandir(level.fd)
    except OSError:
        selection.skipped["unreadable"] += 1
        return scanned
    entries = []
    with listing:
        for entry in listing:
            scanned += 1
            if scanned > MAX_SCAN_ENTRIES:
                raise FileRefused(
                    f"A pattern had to look at more than {MAX_SCAN_ENTRIES} entries under "
                    f"{root}; name a narrower directory in the pattern."
                )
            entries.append(entry)
    for entry in sorted(entries, key=lambda e: e.name):
        name = entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        states = glob.step(level.states, name) if glob and level.states is not None else None
        reached = states or frozenset()
        wanted = glob is None or (glob.leads_on(reached) if is_dir else glob.accepts(reached))
        parts = (*level.parts, name)
        if _git_name(name) or _ignored("/".join(parts), is_dir, level.ignores):
            if wanted and not is_dir:  # (an ignored directory is passed over whole, uncounted)
                selection.skipped["ignored by git"] += 1
            continue
        if not wanted:
            continue
        if is_dir:
            if _secret_dir(name):
                selection.skipped["secret-looking"] += 1
            else:
                level.subdirs.append((name, states))
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            selection.skipped["unreadable"] += 1
            continue
        files.append(_Found(-1, parts, info, stat.S_ISLNK(info.st_mode)))
    return scanned


def _gitignore(dir_fd: int, prefix: str) -> list[tuple[str, pathspec.GitIgnoreSpec]]:
    """The `.gitignore` of the directory open as `dir_fd`, if it is a regular file: checked
    with a stat first and opened non-blocking, so a FIFO put there (even after the stat)
    is never waited on."""
    try:
        info = os.stat(".gitignore", dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
            return []
        fd = os.open(".gitignore", _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return []
    try:
        with os.fdopen(fd, "rb") as handle:
            opened = os.fstat(handle.fileno())
            if not stat.S_ISREG(opened.st_mode) or opened.st_size > MAX_FILE_BYTES:
                return []
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError:
        return []
    return [(prefix, _ignore_spec(data))]


# Keyed by content, so always what the file says now: a model's tools open each file from the
# root down, reading the same .gitignore files again each time, and compiling one takes
# milliseconds (~13 ms for 300 lines) where reading it takes microseconds.
@functools.lru_cache(maxsize=64)
def _ignore_spec(data: bytes) -> pathspec.GitIgnoreSpec:
    import pathspec

    lines = data.decode("utf-8", errors="replace").splitlines()
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except (ValueError, re.error):
        # pathspec refuses a whole file for one line it cannot read (`!`, `\`, `[z-a]`), where
        # git passes over that line and applies the rest: as git does, not a failed call.
        return pathspec.GitIgnoreSpec.from_lines([line for line in lines if _ignore_line(line)])


def _ignore_line(line: str) -> bool:
    import pathspec

    try:
        pathspec.GitIgnoreSpec.from_lines([line])
    except (ValueError, re.error):
        return False
    return True


def _ignored(
    relative: str, is_dir: bool, ignores: list[tuple[str, pathspec.GitIgnoreSpec]]
) -> bool:
    for prefix, spec in ignores:
        if relative.startswith(prefix):
            inner = relative[len(prefix) :] + ("/" if is_dir else "")
            if spec.match_file(inner):
                return True
    return False
