"""Files as context: which files a model may be sent, read by the server so the agent never
copies them into its arguments.

A file may come only from the workspace roots (the MCP client's `roots/list`, else
BLOCKRUN_WORKSPACE, else the directory the server started in). Whatever resolves outside them
(`..`, an absolute path elsewhere, a symlink out, a symlink loop) is refused. Inside them, some
files are never sent: the wallet's key files and the data dir, anything that is not a regular
file (a FIFO would block, a device never ends), files that look like secrets, and binary
files; a pattern also passes over `.git/` and what `.gitignore` ignores. Every check that can be
made from a name or a stat is made before a file is opened.

A named file that is refused is an error saying why; a pattern skips such files and says how
many it skipped, and why. Caps bound each file, the total, and how many files a pattern may
match (more is an error naming the count, never a silent cut).
"""

from __future__ import annotations

import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from blockrun_mcp.errors import BlockrunError

if TYPE_CHECKING:
    import pathspec

MAX_FILE_BYTES = 256 * 1024  # one file: a large source file; more is rarely what was meant
MAX_TOTAL_BYTES = 2 * 1024 * 1024  # one call's files together
MAX_PATTERN_FILES = 200  # files one pattern may match
MAX_SCAN_ENTRIES = 50_000  # directory entries one pattern may look at
MAX_SPECS = 50
BINARY_SNIFF_BYTES = 8192

# Names that look like secrets (matched against the file name, case-insensitively).
SECRET_NAMES = re.compile(
    r"""^(
        \.env(\..*)?|.*\.env|\.envrc|
        .*\.(pem|key|p12|pfx|jks|keystore|kdbx|asc|gpg|ppk|der|crt|cer|p8)|
        id_(rsa|dsa|ecdsa|ed25519)(\..*)?|.*_rsa|.*_ed25519|
        \.netrc|\.pgpass|\.npmrc|\.pypirc|\.git-credentials|\.htpasswd|
        credentials(\..*)?|.*secrets?(\..*)?|.*\.session|wallet\.key|
        terraform\.tfstate(\..*)?|.*\.tfvars|service[-_]account.*\.json
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
GLOB_CHARS = frozenset("*?[")


class FileRefused(BlockrunError):
    """A file (or pattern) that cannot be sent; the message says which and why, and `reason`
    is the short form a pattern's skip count uses."""

    def __init__(self, message: str, reason: str = "refused") -> None:
        super().__init__(message)
        self.reason = reason


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


class Workspace:
    """Chooses and reads files inside `roots`, never from `forbidden` paths."""

    def __init__(self, roots: list[Path], forbidden: list[Path]) -> None:
        self.roots = [_real(root) for root in roots if root.is_dir()]
        if not self.roots:
            shown = ", ".join(str(root) for root in roots) or "(none)"
            raise FileRefused(
                f"No workspace root is a directory ({shown}); set BLOCKRUN_WORKSPACE or open a "
                "folder in your MCP host."
            )
        self.forbidden = [_real(path) for path in forbidden if path.exists()]

    # --- choosing -------------------------------------------------------------------------

    def select(self, specs: list[str]) -> Selection:
        if len(specs) > MAX_SPECS:
            raise FileRefused(f"files lists {len(specs)} entries; at most {MAX_SPECS}.")
        selection = Selection()
        seen: set[Path] = set()
        for spec in specs:
            if not isinstance(spec, str) or not spec.strip() or "\x00" in spec or len(spec) > 1000:
                raise FileRefused("Each entry of files must be a non-empty path or pattern.")
            if GLOB_CHARS & set(spec):
                found = self._matches(spec.strip(), selection)
            else:
                found = [self._named(spec.strip())]
            for real, label in found:
                if real in seen:
                    continue
                seen.add(real)
                try:
                    selection.files.append(SentFile(label, self._read(real, label)))
                except FileRefused as refused:
                    if not GLOB_CHARS & set(spec):
                        raise
                    selection.skipped[refused.reason] += 1
            if selection.total_bytes > MAX_TOTAL_BYTES:
                raise FileRefused(
                    f"The files come to {selection.total_bytes} bytes, over the "
                    f"{MAX_TOTAL_BYTES} a call may send; name fewer files or a narrower pattern."
                )
        return selection

    def _named(self, spec: str) -> tuple[Path, str]:
        given = Path(spec).expanduser()
        candidates = [given] if given.is_absolute() else [root / given for root in self.roots]
        for candidate in candidates:
            if os.path.lexists(candidate):
                real = self._inside(candidate, spec)
                self._allowed(real, spec)
                return real, self._label(real)
        raise FileRefused(
            f"{spec} was not found in the workspace ({', '.join(map(str, self.roots))})."
        )

    def _inside(self, path: Path, spec: str) -> Path:
        try:
            real = Path(os.path.realpath(path, strict=True))
        except (OSError, RuntimeError):
            raise _refused(spec, "it is a broken or looping symlink") from None
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            raise _refused(spec, "it resolves outside the workspace roots")
        return real

    def _allowed(self, real: Path, spec: str) -> None:
        """Checks from the name and a stat alone: nothing is opened before they pass."""
        if any(real == path or real.is_relative_to(path) for path in self.forbidden):
            raise _refused(
                spec, "blockrun-mcp's own files (keys, ledger, media) are never sent", "private"
            )
        if SECRET_NAMES.match(real.name):
            raise _refused(spec, "its name looks like a secret", reason="secret-looking")
        info = real.stat()
        if not stat.S_ISREG(info.st_mode):
            raise _refused(spec, "it is not a regular file", reason="not regular files")
        if info.st_size > MAX_FILE_BYTES:
            raise _refused(
                spec, f"it is {info.st_size} bytes, over the {MAX_FILE_BYTES} per file", "too large"
            )

    def _label(self, real: Path) -> str:
        root = next(r for r in self.roots if real == r or real.is_relative_to(r))
        relative = real.relative_to(root).as_posix() or real.name
        return relative if len(self.roots) == 1 else f"{root.name}/{relative}"

    # --- patterns -----------------------------------------------------------------------------

    def _matches(self, pattern: str, selection: Selection) -> list[tuple[Path, str]]:
        if os.path.isabs(pattern):
            root = next((r for r in self.roots if Path(pattern).is_relative_to(r)), None)
            if root is None:
                raise FileRefused(f"The pattern {pattern} is outside the workspace roots.")
            pattern = Path(pattern).relative_to(root).as_posix()
        if ".." in Path(pattern).parts:
            raise FileRefused(f"The pattern {pattern} climbs out of the workspace with '..'.")
        matcher = glob_regex(pattern)
        found: list[tuple[Path, str]] = []
        for root in self.roots:
            for path, relative, linked in _walk(root, selection):
                if not matcher.fullmatch(relative):
                    continue
                try:
                    # Under a resolved root, through directories that are never symlinks, only a
                    # symlinked file can lead elsewhere: resolve just those.
                    real = self._inside(path, relative) if linked else path
                    self._allowed(real, relative)
                except FileRefused as refused:
                    selection.skipped[refused.reason] += 1
                    continue
                found.append((real, self._label(real)))
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

    # --- reading ------------------------------------------------------------------------------

    def _read(self, real: Path, label: str) -> str:
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(real, flags)
        except OSError as exc:
            raise _refused(label, f"it cannot be opened ({exc.strerror})", "unreadable") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())  # what was opened, should it have been swapped
            if not stat.S_ISREG(info.st_mode):
                raise _refused(label, "it is not a regular file", "not regular files")
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise _refused(label, f"it is over the {MAX_FILE_BYTES} bytes per file", "too large")
        if b"\x00" in data[:BINARY_SNIFF_BYTES]:
            raise _refused(label, "it is a binary file", "binary")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise _refused(label, "it is not UTF-8 text", "binary") from None


def _refused(spec: str, why: str, reason: str = "outside the workspace") -> FileRefused:
    return FileRefused(f"{spec} was not sent: {why}.", reason)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


def _walk(root: Path, selection: Selection) -> list[tuple[Path, str, bool]]:
    """Every file under `root` a pattern may consider, as (path, relative posix path): `.git/`
    and what `.gitignore` files ignore are passed over (counted), symlinked directories are
    not followed (each file comes with whether it is a symlink). Iterative, and bounded by
    MAX_SCAN_ENTRIES."""
    files: list[tuple[Path, str, bool]] = []
    stack: list[tuple[Path, str, list[tuple[str, pathspec.GitIgnoreSpec]]]] = [(root, "", [])]
    scanned = 0
    while stack:
        directory, prefix, ignores = stack.pop()
        ignores = ignores + _gitignore(directory, prefix)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            selection.skipped["unreadable"] += 1
            continue
        for entry in entries:
            scanned += 1
            if scanned > MAX_SCAN_ENTRIES:
                raise FileRefused(
                    f"A pattern had to look at more than {MAX_SCAN_ENTRIES} entries under "
                    f"{root}; name a narrower directory in the pattern."
                )
            relative = f"{prefix}{entry.name}"
            is_dir = entry.is_dir(follow_symlinks=False)
            if entry.name == ".git" or _ignored(relative, is_dir, ignores):
                if not is_dir:  # (an ignored directory is passed over whole, uncounted)
                    selection.skipped["ignored by git"] += 1
                continue
            if is_dir:
                stack.append((Path(entry.path), relative + "/", ignores))
            else:
                files.append((Path(entry.path), relative, entry.is_symlink()))
    return files


def _gitignore(directory: Path, prefix: str) -> list[tuple[str, pathspec.GitIgnoreSpec]]:
    path = directory / ".gitignore"
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return []
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    import pathspec

    return [(prefix, pathspec.GitIgnoreSpec.from_lines(lines))]


def _ignored(
    relative: str, is_dir: bool, ignores: list[tuple[str, pathspec.GitIgnoreSpec]]
) -> bool:
    for prefix, spec in ignores:
        if relative.startswith(prefix):
            inner = relative[len(prefix) :] + ("/" if is_dir else "")
            if spec.match_file(inner):
                return True
    return False


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A shell-style glob over posix relative paths: `*` and `?` stay within one directory,
    `**` spans any number of them (`src/**/*.py` matches `src/a.py` too), `[...]` is a class."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))
