"""The workspace tools a delegated model calls (list_files, read_file, search), attacked.

The model is hostile by assumption: every path, pattern, regex and JSON text here is one it
could send. Each secret file in the hostile tree holds a unique marker, and every outcome of
every call (refused or not) is checked never to hold any of them, nor the wallet's key.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockrun_mcp import workspace_tools
from blockrun_mcp.service.caller import NOBODY_IN_PARTICULAR
from blockrun_mcp.workspace import MAX_FILE_BYTES, Workspace
from blockrun_mcp.workspace_tools import (
    MAX_LISTED,
    MAX_MATCHES,
    MAX_RESULT_BYTES,
    TOOL_DEFINITIONS,
    ToolOutcome,
    WorkspaceTools,
)
from tests.support.server import make_service

KEY = "c0de" * 16  # the wallet's private key (hex), as the service hands it to Workspace
SOURCE = "def a():\n    return 'alpha'\n"


def marker(name: str) -> str:
    """The unique text a secret file holds: seen in any outcome, it leaked."""
    return f"MARKER-{name.encode('utf-8').hex()}-LEAKED"


@dataclass
class Tree:
    """A hostile workspace: `project` is the root; `outside` and `private` lie beyond it."""

    project: Path
    outside: Path
    private: Path
    markers: list[str] = field(default_factory=list)

    def secret(self, relative: str, root: Path | None = None) -> Path:
        path = (root or self.project) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{marker(relative)}\n")
        self.markers.append(marker(relative))
        return path


@dataclass
class Probe:
    """The tools, with every outcome checked as it comes back."""

    tools: WorkspaceTools
    markers: list[str]
    outcomes: list[ToolOutcome] = field(default_factory=list)

    def run(self, name: str, arguments: str | dict[str, Any]) -> ToolOutcome:
        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        outcome = self.tools.run(name, raw)
        check_outcome(outcome, self.markers)
        self.outcomes.append(outcome)
        return outcome

    def refused(self, name: str, arguments: str | dict[str, Any]) -> ToolOutcome:
        outcome = self.run(name, arguments)
        assert outcome.refused, (name, arguments, outcome.text)
        assert outcome.files_read == ()
        return outcome

    def ok(self, name: str, arguments: str | dict[str, Any]) -> ToolOutcome:
        outcome = self.run(name, arguments)
        assert not outcome.refused, (name, arguments, outcome.text)
        return outcome


def check_outcome(outcome: ToolOutcome, markers: list[str]) -> None:
    """What holds of every outcome: consistent fields, no secret, no key."""
    assert outcome.bytes_returned == len(outcome.text.encode("utf-8"))
    assert outcome.refused == outcome.text.startswith("refused: ")
    assert outcome.bytes_returned <= MAX_RESULT_BYTES
    for secret in markers:
        assert secret not in outcome.text, f"{secret} leaked: {outcome.text[:200]!r}"
    assert KEY not in outcome.text.lower()


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    project, outside, private = tmp_path / "project", tmp_path / "outside", tmp_path / "private"
    for folder in (project / "src", outside, private):
        folder.mkdir(parents=True)
    (project / "src" / "a.py").write_text(SOURCE)
    (project / "README.md").write_text("# project\n")
    built = Tree(project, outside, private)
    built.secret("plain.txt", outside)  # (a name that is no secret)
    built.secret("wallet.json", private)
    return built


def probe_for(tree: Tree, **options: Any) -> Probe:
    workspace = Workspace([tree.project], forbidden=[tree.private], private_key=f"0x{KEY}")
    return Probe(WorkspaceTools(workspace, **options), tree.markers)


@pytest.fixture
def probe(tree: Tree) -> Probe:
    return probe_for(tree)


def finishes(action: Callable[[], Any], unblock: Callable[[], None]) -> Any:
    """`action`'s result, run in a thread that must end; `unblock` frees it if it hangs."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(action()), daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():
        unblock()
        worker.join(timeout=5)
        pytest.fail("the call blocked")
    return result[0]


# --- the definitions ---------------------------------------------------------------------------


def test_the_definitions_are_three_function_tools_with_exact_parameters():
    shapes = {
        d["function"]["name"]: (
            set(d["function"]["parameters"]["properties"]),
            d["function"]["parameters"]["required"],
        )
        for d in TOOL_DEFINITIONS
    }
    assert shapes == {
        "list_files": ({"pattern"}, ["pattern"]),
        "read_file": ({"path", "start_line", "end_line"}, ["path"]),
        "search": ({"query", "pattern", "regex"}, ["query"]),
    }
    for definition in TOOL_DEFINITIONS:
        assert definition["type"] == "function"
        assert definition["function"]["parameters"]["additionalProperties"] is False
        assert len(definition["function"]["description"]) < 300  # sent, and paid for, each step
    assert len(json.dumps(TOOL_DEFINITIONS)) < 2500


# --- reading ---------------------------------------------------------------------------------------


def test_read_file_numbers_lines_and_takes_a_range(tree, probe):
    (tree.project / "empty.txt").write_text("")
    (tree.project / "crlf.txt").write_bytes(b"one\r\ntwo\r\nthree")
    whole = probe.ok("read_file", {"path": "src/a.py"})
    assert whole.text == "src/a.py (lines 1-2 of 2):\n1: def a():\n2:     return 'alpha'"
    assert (whole.files_read, whole.target, whole.tool) == (("src/a.py",), "src/a.py", "read_file")
    assert probe.ok("read_file", {"path": "crlf.txt", "start_line": 2}).text.endswith(
        "2: two\n3: three"
    )
    clamped = probe.ok("read_file", {"path": "src/a.py", "start_line": 2, "end_line": 99})
    assert clamped.text == "src/a.py (lines 2-2 of 2):\n2:     return 'alpha'"
    inside = probe.ok("read_file", {"path": str(tree.project / "src" / "a.py")})  # absolute
    assert inside.files_read == ("src/a.py",)
    assert "is empty (0 lines)" in probe.ok("read_file", {"path": "empty.txt"}).text
    for bad in ({"start_line": 3}, {"start_line": 2, "end_line": 1}):
        text = probe.refused("read_file", {"path": "src/a.py", **bad}).text
        assert "has 2 line(s)" in text and "1-2" in text and "alpha" not in text


def test_a_100k_line_file_is_paged_at_line_boundaries(tree, probe):
    lines = [str(i % 10) for i in range(100_000)]
    (tree.project / "long.txt").write_text("\n".join(lines) + "\n")
    assert (tree.project / "long.txt").stat().st_size <= MAX_FILE_BYTES
    seen: list[str] = []
    start, pages = 1, 0
    while True:
        outcome = probe.ok("read_file", {"path": "long.txt", "start_line": start})
        pages += 1
        header, *body = outcome.text.split("\n")
        assert header.startswith(f"long.txt (lines {start}-") and header.endswith("of 100000):")
        if body[-1].startswith("(cut at line"):
            note = body.pop()
            last = int(note.split()[3])
            assert note == f"(cut at line {last} of 100000; ask for start_line={last + 1}.)"
        else:
            last = 100_000
        numbers = [int(line.split(": ", 1)[0]) for line in body]
        assert numbers == list(range(start, last + 1))
        seen += [line.split(": ", 1)[1] for line in body]
        if last == 100_000:
            break
        start = last + 1
    assert seen == lines and pages > 10


def test_a_huge_line_is_cut_and_said_to_be(tree, probe):
    line = "x" * 200_000 + "NEEDLE" + "y" * 20_000
    (tree.project / "min.js").write_text(f"first\n{line}\nlast\n")
    first = probe.ok("read_file", {"path": "min.js"})
    assert first.text.endswith("(cut at line 1 of 3; ask for start_line=2.)")
    second = probe.ok("read_file", {"path": "min.js", "start_line": 2})
    assert "cut: it is too long to show whole" in second.text
    assert "ask for start_line=3" in second.text
    found = probe.ok("search", {"query": "needle", "pattern": "*.js"})
    hit = found.text.split("\n")[1]
    assert hit.startswith("min.js:2: …x") and "NEEDLE" in hit and len(hit) < 260


def test_a_small_result_cap_is_kept(tree):
    probe = probe_for(tree, max_result_bytes=2048)
    (tree.project / "many.txt").write_text("".join(f"line {i}\n" for i in range(5000)))
    outcome = probe.ok("read_file", {"path": "many.txt"})
    assert outcome.bytes_returned <= 2048 and "ask for start_line=" in outcome.text
    deep = tree.project.joinpath(*["d" * 60] * 14)  # a label of 854 characters
    deep.mkdir(parents=True)
    (deep / "f.txt").write_text("".join(f"line {i}\n" for i in range(100)))
    label = str((deep / "f.txt").relative_to(tree.project))
    tight = probe_for(tree, max_result_bytes=1024)
    for outcome in (
        tight.ok("read_file", {"path": label}),
        tight.ok("search", {"query": "line", "pattern": "d*/**"}),
        tight.ok("list_files", {"pattern": "**/*.txt"}),
    ):
        assert outcome.bytes_returned <= 1024
    with pytest.raises(ValueError):
        WorkspaceTools(probe.tools.workspace, max_result_bytes=10)


# --- confinement -----------------------------------------------------------------------------------


def test_paths_out_of_the_workspace_are_refused(tree, probe):
    project, outside = tree.project, tree.outside
    (project / "out_file").symlink_to(outside / "plain.txt")
    (project / "out_dir").symlink_to(outside)
    (project / "rel_out").symlink_to("../outside/plain.txt")
    (project / "loop_a").symlink_to("loop_b")
    (project / "loop_b").symlink_to("loop_a")
    (project / "back").symlink_to(project.parent)  # out, then back in: still refused
    for path in (
        "../outside/plain.txt",
        "src/../../outside/plain.txt",
        str(outside / "plain.txt"),
        f"{project}/../outside/plain.txt",
        "out_file",
        "out_dir/plain.txt",
        "rel_out",
        "loop_a",
        "back/project/README.md",
        "/etc/passwd",
        "~/.bashrc",
    ):
        outcome = probe.refused("read_file", {"path": path})
        assert outcome.target == path
        assert "outside" in outcome.text or "not found" in outcome.text or "symlink" in outcome.text
    for pattern in ("out_dir/*", "../outside/*", str(outside / "*"), "back/**"):
        assert "plain" not in probe.run("list_files", {"pattern": pattern}).text
        assert probe.run("search", {"query": "MARKER", "pattern": pattern}).files_read == ()
    everything = probe.ok("search", {"query": "marker"})
    assert everything.files_read == ()


def test_an_absolute_path_outside_tells_nothing_about_it(tree, probe):
    """Existing or not, the same answer: outside the roots nothing is looked at."""
    existing = probe.refused("read_file", {"path": str(tree.outside / "plain.txt")})
    missing = probe.refused("read_file", {"path": str(tree.outside / "other.txt")})
    assert existing.text.replace("plain", "other") == missing.text


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (".env", "looks like a secret"),
        ("id_rsa", "looks like a secret"),
        (".env\u200b", "looks like a secret"),  # a zero-width space hides the name
        ("\uff0eenv", "looks like a secret"),  # a fullwidth full stop
        ("config/.env.local~", "looks like a secret"),
        (".git/config", "git's own data"),
        ("sub/.git/HEAD", "git's own data"),
        (".ssh/x", "holds credentials"),
        (".aws/credentials", "holds credentials"),
        # Agent hosts' settings and MCP configs: their `env` blocks hold API keys.
        (".claude/settings.local.json", "holds credentials"),
        (".cursor/mcp.json", "holds credentials"),
        (".mcp.json", "looks like a secret"),
        ("tools/settings.local.json", "looks like a secret"),
    ],
)
def test_secret_names_git_and_credential_directories_are_refused(tree, probe, name, says):
    tree.secret(name)
    outcome = probe.refused("read_file", {"path": name})
    assert outcome.text.startswith(f"refused: {name}: ") and says in outcome.text
    assert name.split("/")[-1] not in probe.ok("list_files", {"pattern": "**"}).text.split("\n")
    assert probe.ok("search", {"query": "marker"}).files_read == ()


def test_the_private_key_our_files_and_links_to_them_are_refused(tree, probe):
    project = tree.project
    (project / "holds_key.txt").write_text(f"wallet = 0X{KEY.upper()}\n{marker('holds_key')}\n")
    tree.markers.append(marker("holds_key"))
    os.link(tree.private / "wallet.json", project / "notes.txt")  # our file under another name
    (project / "wallet_link.txt").symlink_to(tree.private / "wallet.json")
    for path, says in (
        ("holds_key.txt", "private key"),
        ("notes.txt", "own files"),
        ("wallet_link.txt", "outside"),
        (str(tree.private / "wallet.json"), "outside"),
    ):
        assert says in probe.refused("read_file", {"path": path}).text
    assert probe.ok("search", {"query": "wallet"}).files_read == ()
    listing = probe.ok("list_files", {"pattern": "*.txt"}).text
    assert "notes.txt" not in listing and "private" in listing


def test_our_own_files_from_the_service_are_refused(tmp_path):
    """The workspace the service builds: the wallet's key file, hard-linked into the project."""
    project = tmp_path / "project"
    project.mkdir()
    folder = tmp_path / ".blockrun"  # HOME is tmp_path: where the server's wallet lives
    folder.mkdir(mode=0o700)
    (folder / ".session").write_text(f"0x{KEY}\n")
    (folder / ".session").chmod(0o600)  # (a key file others can read is not loaded)
    os.link(folder / ".session", project / "notes.txt")
    (project / "copy.txt").write_text(f"key: {KEY}\n")
    (project / "ok.txt").write_text("fine\n")
    service, _ = make_service(
        tmp_path, None, env={"BLOCKRUN_WORKSPACE": str(project)}, with_wallet=False
    )
    workspace = service.workspace(service.workspace_roots(NOBODY_IN_PARTICULAR))
    probe = Probe(WorkspaceTools(workspace), [])
    assert "own files" in probe.refused("read_file", {"path": "notes.txt"}).text
    assert "private key" in probe.refused("read_file", {"path": "copy.txt"}).text
    found = probe.ok("search", {"query": "e"})
    assert found.files_read == ("ok.txt",) and "2 private" in found.text


def test_a_fifo_never_blocks_and_special_files_are_refused(tree, probe):
    fifo = tree.project / "pipe"
    os.mkfifo(fifo)
    (tree.project / "blob.bin").write_bytes(b"\x00\x01" + marker("blob").encode())
    tree.markers.append(marker("blob"))
    (tree.project / "big.txt").write_text("z" * (MAX_FILE_BYTES + 1))

    def unblock() -> None:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    reading = finishes(lambda: probe.run("read_file", {"path": "pipe"}), unblock)
    assert reading.refused and "not a regular file" in reading.text
    searching = finishes(lambda: probe.run("search", {"query": "x"}), unblock)
    assert "not regular" in searching.text
    listing = finishes(lambda: probe.run("list_files", {"pattern": "*"}), unblock)
    assert "pipe" not in listing.text.split("\n")
    assert "binary" in probe.refused("read_file", {"path": "blob.bin"}).text
    assert "over the" in probe.refused("read_file", {"path": "big.txt"}).text
    assert "is not a regular file" in probe.refused("read_file", {"path": "src"}).text


# --- .gitignore --------------------------------------------------------------------------------------


def test_what_git_ignores_is_never_reached_named_linked_or_matched(tree, probe):
    project = tree.project
    (project / ".gitignore").write_text("ignored.txt\nbuild/\nalias.py\n")
    tree.secret("ignored.txt")
    tree.secret("build/out.txt")
    tree.secret("sub/x.log")
    (project / "sub" / ".gitignore").write_text("*.log\n")  # nested rules count too
    (project / "to_ignored.txt").symlink_to("ignored.txt")
    (project / "to_build").symlink_to("build")  # a directory link into what is ignored
    (project / "abs_to_ignored.txt").symlink_to(project / "ignored.txt")
    (project / "src" / "up.txt").symlink_to("../build/out.txt")
    (project / "alias.py").symlink_to("src/a.py")  # the link itself is ignored
    for path in (
        "ignored.txt",
        "build/out.txt",
        "sub/x.log",
        "to_ignored.txt",
        "to_build/out.txt",
        "abs_to_ignored.txt",
        "src/up.txt",
        "alias.py",
        str(project / "ignored.txt"),
        "src/../ignored.txt",
        "build/../src/a.py",  # through an ignored directory
    ):
        outcome = probe.refused("read_file", {"path": path})
        assert "git ignores it" in outcome.text, (path, outcome.text)
    listing = probe.ok("list_files", {"pattern": "**"})
    assert listing.text.split("\n")[1:4] == [".gitignore", "README.md", "src/a.py"]
    assert "ignored by git" in listing.text and "ignored.txt" not in listing.text
    for pattern in ("**/*", "to_build/*", "*.txt", "src/*"):
        assert probe.run("search", {"query": "marker", "pattern": pattern}).files_read == ()
    # Not ignored, through a link that is not: still read.
    (project / "fine.py").symlink_to("src/a.py")
    assert probe.ok("read_file", {"path": "fine.py"}).files_read == ("src/a.py",)


def test_a_negated_rule_is_honoured(tree, probe):
    (tree.project / ".gitignore").write_text("*.txt\n!keep.txt\n")
    (tree.project / "keep.txt").write_text("kept\n")
    tree.secret("drop.txt")
    assert probe.ok("read_file", {"path": "keep.txt"}).files_read == ("keep.txt",)
    assert "git ignores it" in probe.refused("read_file", {"path": "drop.txt"}).text


def test_a_gitignore_line_pathspec_cannot_read_is_passed_over_as_git_does(tree, probe):
    (tree.project / ".gitignore").write_text("!\n[z-a]\n\\\nhidden.txt\n")
    tree.secret("hidden.txt")
    assert "git ignores it" in probe.refused("read_file", {"path": "hidden.txt"}).text
    assert probe.ok("list_files", {"pattern": "src/*"}).text.endswith("src/a.py")


# --- a directory swapped for a symlink while the tools run --------------------------------------


@pytest.fixture
def fast_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_a_directory_swapped_for_a_symlink_never_leaks(tree, probe, fast_switching):
    sub, real, link = tree.project / "sub", tree.project / "sub.real", tree.project / "link"
    sub.mkdir()
    (sub / "plain.txt").write_text("inside, harmless\n")  # outside/plain.txt is the marker
    link.symlink_to(tree.outside)
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.rename(sub, real)
            os.rename(link, sub)
            os.rename(sub, link)
            os.rename(real, sub)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    calls = 0
    try:
        deadline = time.monotonic() + 5
        while calls < 300 and time.monotonic() < deadline:
            probe.run("read_file", {"path": "sub/plain.txt"})  # (checked: no marker)
            probe.run("search", {"query": "marker", "pattern": "sub/*"})
            probe.run("list_files", {"pattern": "sub/*"})
            calls += 1
    finally:
        stop.set()
        swapper.join()
    assert calls > 0
    assert any(not o.refused and o.files_read for o in probe.outcomes)


# --- listing ---------------------------------------------------------------------------------------


def test_listing_over_a_thousand_files_shows_the_first_and_counts_the_rest(tree, probe):
    many = tree.project / "many"
    many.mkdir()
    for i in range(1200):
        (many / f"f{i:04}.txt").write_text("x\n")
    outcome = probe.ok("list_files", {"pattern": "many/**"})
    lines = outcome.text.split("\n")
    assert lines[0] == "1200 file(s) match many/**:"
    assert lines[1 : MAX_LISTED + 1] == [f"many/f{i:04}.txt" for i in range(MAX_LISTED)]
    assert (
        lines[MAX_LISTED + 1]
        == f"... and {1200 - MAX_LISTED} more: narrow the pattern to see them."
    )
    assert outcome.files_read == () and outcome.target == "many/**"
    assert probe.ok("list_files", {"pattern": "nothing/*"}).text == "No file matches nothing/*."


def test_bad_patterns_are_refused_plainly(tree, probe):
    for pattern, says in (
        ("src/[z-a]*.py", "backwards"),
        ("../*", "'..'"),
        ("/elsewhere/*", "outside the workspace roots"),
    ):
        assert says in probe.refused("list_files", {"pattern": pattern}).text


def test_several_roots_are_told_apart_by_label(tmp_path):
    first, second = tmp_path / "alpha", tmp_path / "beta"
    for root, text in ((first, "one\n"), (second, "two\n")):
        (root / "src").mkdir(parents=True)
        (root / "src" / "f.txt").write_text(text)
    probe = Probe(WorkspaceTools(Workspace([first, second], forbidden=[])), [])
    listing = probe.ok("list_files", {"pattern": "src/*"}).text
    assert listing.split("\n")[1:] == ["alpha/src/f.txt", "beta/src/f.txt"]
    assert probe.ok("list_files", {"pattern": "beta/src/*"}).text.split("\n")[1:] == [
        "beta/src/f.txt"
    ]
    assert probe.ok("read_file", {"path": "beta/src/f.txt"}).text.endswith("1: two")
    assert probe.ok("read_file", {"path": "src/f.txt"}).files_read == ("alpha/src/f.txt",)
    refused = probe.refused("read_file", {"path": "gamma/x"})
    assert str(tmp_path) not in refused.text  # where the roots lie is not the model's to know


def test_a_file_name_that_is_not_utf8_is_listed_without_failing(tree, probe):
    with open(os.path.join(os.fsencode(tree.project), b"bad\xff.txt"), "w") as handle:
        handle.write("odd name\n")
    listing = probe.ok("list_files", {"pattern": "*.txt"})
    assert "bad?.txt" in listing.text
    found = probe.ok("search", {"query": "odd name"})
    assert "bad?.txt:1: odd name" in found.text
    refused = probe.refused("read_file", '{"path": "bad\\udcff.txt"}')  # a lone surrogate
    assert "unpaired surrogates" in refused.text and refused.target is None


# --- searching -------------------------------------------------------------------------------------


def test_search_finds_text_case_insensitively_and_regexes_by_line(tree, probe):
    (tree.project / "notes.md").write_text("Alpha beta\nGAMMA alpha\n(a+)+ literally\n")
    plain = probe.ok("search", {"query": "ALPHA"})
    assert plain.text.split("\n")[1:] == [
        "notes.md:1: Alpha beta",
        "notes.md:2: GAMMA alpha",
        "src/a.py:2:     return 'alpha'",
    ]
    assert plain.files_read == ("notes.md", "src/a.py") and plain.target == "ALPHA in **/*"
    literal = probe.ok("search", {"query": "(a+)+", "pattern": "*.md"})  # plain: no regex
    assert literal.text.split("\n")[1:] == ["notes.md:3: (a+)+ literally"]
    anchored = probe.ok("search", {"query": "^G[A-Z]+ ", "regex": True})
    assert anchored.text.split("\n")[1:] == ["notes.md:2: GAMMA alpha"]
    ends = probe.ok("search", {"query": "alpha$", "regex": True, "pattern": "*.md"})
    assert ends.text.split("\n")[1:] == ["notes.md:2: GAMMA alpha"]
    spanning = probe.ok("search", {"query": r"beta\sGAMMA", "regex": True})  # never two lines
    assert spanning.text.startswith("No match") and spanning.files_read == ()


def test_a_catastrophic_regex_completes(tree, probe):
    """`(a+)+$` against a long line of a's backtracks for ever in Python's re; RE2 is linear."""
    (tree.project / "a.txt").write_text("a" * 200_000 + "!\n")
    outcome = probe.ok("search", {"query": "(a+)+$", "regex": True, "pattern": "a.txt"})
    assert outcome.text.startswith("No match")
    nested = probe.ok("search", {"query": "(x+x+)+y|(a|aa)*b", "regex": True})
    assert nested.text.startswith("No match")


def test_bad_and_overcomplex_regexes_are_refused_with_the_reason(tree, probe):
    for query, says in (
        ("(a", "missing )"),
        (r"(a)\1", "invalid escape"),
        ("(?=a)", "invalid perl operator"),
        ("a{1001}", "repetition"),
    ):
        outcome = probe.refused("search", {"query": query, "regex": True})
        assert outcome.text.startswith("refused: the regex is not valid RE2 syntax (")
        assert says in outcome.text and "(?m)" not in outcome.text
    assert "too complex" in probe.refused("search", {"query": "(?:abc){700}", "regex": True}).text


def test_search_is_bounded_and_says_so(tree, probe, monkeypatch):
    (tree.project / "hits.txt").write_text("hit\n" * 500)
    capped = probe.ok("search", {"query": "hit", "pattern": "hits.txt"})
    lines = capped.text.split("\n")
    assert lines[0].startswith(f"{MAX_MATCHES} match(es)")
    assert lines[MAX_MATCHES] == f"hits.txt:{MAX_MATCHES}: hit"
    assert lines[-1] == f"Stopped at {MAX_MATCHES} matches: narrow the query or the pattern."
    for i in range(10):
        (tree.project / f"n{i}.txt").write_text("nothing here\n")
    monkeypatch.setattr(workspace_tools, "MAX_SEARCH_FILES", 3)
    few = probe.ok("search", {"query": "zzz", "pattern": "n*.txt"})
    assert "Stopped after searching 3 file(s)" in few.text
    # A regex's scan shrinks with its complexity; a literal's does not.
    monkeypatch.setattr(workspace_tools, "MAX_REGEX_WORK", 200)
    costly = probe.ok("search", {"query": "h.t", "regex": True, "pattern": "hits.txt"})
    assert (
        "Stopped after searching 0 file(s)" in costly.text and "simplify the regex" in costly.text
    )
    assert probe.ok("search", {"query": "hit", "pattern": "hits.txt"}).files_read == ("hits.txt",)


# --- hostile arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arguments", "says"),
    [
        ("read_file", "{not json", "not valid JSON"),
        ("read_file", '["src/a.py"]', "must be a JSON object"),
        ("read_file", "null", "must be a JSON object"),
        ("read_file", "", "needs path"),
        ("read_file", "{}", "needs path"),
        ("read_file", '{"path": null}', "needs path"),
        ("read_file", '{"path": 1}', "path must be text"),
        ("read_file", '{"path": ["src/a.py"]}', "path must be text"),
        ("read_file", '{"path": "src/a.py", "start_line": "2"}', "whole number"),
        ("read_file", '{"path": "src/a.py", "start_line": true}', "whole number"),
        ("read_file", '{"path": "src/a.py", "start_line": 1.5}', "whole number"),
        ("read_file", '{"path": "src/a.py", "start_line": 0}', "1 or more"),
        ("read_file", '{"path": "src/a.py", "end_line": -3}', "1 or more"),
        ("read_file", '{"path": "src/a.py", "start_line": 1e400}', "whole number"),
        ("read_file", '{"path": "src/a.py", "mode": "w"}', 'has no "mode"'),
        ("read_file", '{"path": ""}', "non-empty"),
        ("read_file", '{"path": "   "}', "non-empty"),
        ("read_file", '{"path": "a\\u0000b"}', "NUL"),
        ("read_file", json.dumps({"path": "a" * 2000}), "at most 1000"),
        ("read_file", json.dumps({"path": "a" * 5000}), "over 4096"),
        ("read_file", "[" * 2000 + "]" * 2000, "nests deeper"),
        ("read_file", '{"path": {"path": {"path": "x"}}}', "nests deeper"),
        ("list_files", '{"pattern": "*", "pattern2": "*"}', 'has no "pattern2"'),
        ("search", '{"query": "x", "regex": "yes"}', "true or false"),
        ("search", json.dumps({"query": "q" * 600}), "at most 500"),
        ("search", '{"pattern": "*"}', "needs query"),
        ("delete_file", '{"path": "src/a.py"}', 'no tool "delete_file"'),
        ("", "{}", 'no tool ""'),
        ("x" * 10_000, "{}", "no tool"),
    ],
)
def test_hostile_arguments_are_refused_saying_what_to_send(probe, name, arguments, says):
    outcome = probe.refused(name, arguments)
    assert says in outcome.text, outcome.text
    assert outcome.target is None and len(outcome.tool) <= 100
    assert len(outcome.text) < 400  # (what the model sent is not echoed back whole)


def test_arguments_that_are_not_a_string_are_refused(probe):
    outcome = probe.tools.run("read_file", {"path": "src/a.py"})  # type: ignore[arg-type]
    assert outcome.refused and "JSON object" in outcome.text
    assert probe.tools.run(None, "{}").refused  # type: ignore[arg-type]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
_FIELDS = st.sampled_from(["path", "pattern", "query", "start_line", "end_line", "regex"])
_VALUES = (
    st.sampled_from(["src/a.py", "**", "../x", ".env", "*.txt", "(a+)+$", "[", "/", "."])
    | st.text(max_size=30)
    | _JSON
)
_ARGUMENTS = (
    st.text(max_size=200)
    | _JSON.map(json.dumps)
    | st.dictionaries(_FIELDS, _VALUES, max_size=4).map(json.dumps)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["list_files", "read_file", "search", "run", "read_file "]),
    arguments=_ARGUMENTS,
)
def test_nothing_a_model_sends_raises_or_leaks(fuzzed_probe, name, arguments):
    outcome = fuzzed_probe.run(name, arguments)
    assert outcome.tool == name


@pytest.fixture(scope="module")
def fuzzed_probe(tmp_path_factory: pytest.TempPathFactory) -> Probe:
    base = tmp_path_factory.mktemp("fuzz")
    tree = Tree(base / "project", base / "outside", base / "private")
    for folder in (tree.project / "src", tree.outside, tree.private):
        folder.mkdir(parents=True)
    (tree.project / "src" / "a.py").write_text(SOURCE)
    (tree.project / ".gitignore").write_text("x.txt\n")
    for name in (".env", "x.txt", ".git/config", "id_rsa"):
        tree.secret(name)
    tree.secret("plain.txt", tree.outside)
    (tree.project / "out").symlink_to(tree.outside)
    return probe_for(tree)
