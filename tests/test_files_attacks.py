"""`files` as a security boundary: each test is an attack that once sent a file it must not.

The key under another name (a hard link, a copy), a directory swapped for a symlink while a
call runs, a pattern built to hold the server, secret names in disguise, git's own data, a
`.gitignore` swapped for a FIFO, the HTTP tokens file. Most run against the workspace the
service builds for a call (`service.workspace(...)`, what the tools use); the key, the tokens
file and the bad pattern also go through a real MCP client against the sandbox.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

import blockrun_mcp
from blockrun_mcp.service import BlockrunService
from blockrun_mcp.service.caller import NOBODY_IN_PARTICULAR
from blockrun_mcp.workspace import FileRefused, Selection
from tests.support.server import CHEAP_MODEL, make_service, open_server

PROJECT_FILES = {"src/a.py": "def a():\n    return 'alpha'\n", "README.md": "# project\n"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, text in PROJECT_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def service_for(
    tmp_path: Path, project: Path, *, with_wallet: bool = True, **env: str
) -> tuple[BlockrunService, str]:
    """A service whose workspace is `project`; its data dir and home are beside it (outside)."""
    return make_service(
        tmp_path, None, env={"BLOCKRUN_WORKSPACE": str(project), **env}, with_wallet=with_wallet
    )


def select(service: BlockrunService, *specs: str) -> Selection:
    return service.workspace(service.workspace_roots(NOBODY_IN_PARTICULAR)).select(list(specs))


def refusal(service: BlockrunService, spec: str) -> FileRefused:
    with pytest.raises(FileRefused) as caught:
        select(service, spec)
    return caught.value


def sent_text(selection: Selection) -> str:
    return "\n".join(file.text for file in selection.files)


def write_key_file(home: Path) -> str:
    """A wallet key file where the server looks for one (~/.blockrun/.session); its key."""
    folder = home / ".blockrun"
    folder.mkdir(mode=0o700, exist_ok=True)
    key = "ab" * 32
    path = folder / ".session"
    path.write_text(f"0x{key}\n")
    path.chmod(0o600)
    return key


# --- 1. the wallet key, and our other files, under another name ------------------------------


@pytest.mark.anyio
async def test_the_wallet_key_under_another_name_never_reaches_the_model(
    sandbox, tmp_path, project
):
    key = write_key_file(tmp_path)  # HOME is tmp_path: the server's own wallet
    os.link(tmp_path / ".blockrun" / ".session", project / "notes.txt")  # `ln`, another name
    (project / "copy.txt").write_text(f"wallet = {key.upper()}\n")  # a copy, in upper case
    (project / "plain.txt").write_text("nothing to hide\n")
    env = {"BLOCKRUN_WORKSPACE": str(project)}
    async with open_server(tmp_path, sandbox, env=env, with_wallet=False) as h:
        for spec, says in (("notes.txt", "own files"), ("copy.txt", "private key")):
            text = await h.fail("ask_model", {"prompt": "q", "model": CHEAP_MODEL, "files": [spec]})
            assert says in text and key not in text.lower()
        assert not sandbox.state.payments_seen and not h.ledger.payments()
        answer = await h.ok("ask_model", {"prompt": "q", "model": CHEAP_MODEL, "files": ["*.txt"]})
        assert [f["path"] for f in answer["files"]] == ["plain.txt"]
        assert "2 private" in answer["note"]
        with sandbox.state.lock:
            bodies = repr(sandbox.state.bodies_seen).lower()
        assert "nothing to hide" in bodies and key not in bodies


def test_a_hard_link_to_any_of_our_files_is_refused(tmp_path, project):
    service, _ = service_for(tmp_path, project)
    assert service.ledger.path is not None  # the ledger exists, in the data dir
    try:
        hard_links_are_refused(service, project)
    finally:
        service.ledger.close()


def hard_links_are_refused(service: BlockrunService, project: Path) -> None:
    config = service.config
    assert service.ledger.path is not None
    (config.data_dir / "notes.json").write_text('{"spent": 1}\n')
    config.output_dir.mkdir(parents=True, exist_ok=True)
    (config.output_dir / "image.txt").write_text("a media file\n")
    ours = {
        "ledger.txt": service.ledger.path,
        "data.txt": config.data_dir / "notes.json",
        "media.txt": config.output_dir / "image.txt",
    }
    for name, path in ours.items():
        os.link(path, project / name)
        refused = refusal(service, name)
        assert "own files" in str(refused) and refused.reason == "private"
    # Matched by a pattern, they are skipped, and counted.
    selection = select(service, "*")
    assert [f.label for f in selection.files] == ["README.md"]
    assert selection.skipped["private"] == 3


def test_a_file_holding_the_wallet_key_is_refused_whatever_its_name(tmp_path, project):
    service, key = service_for(tmp_path, project)
    bare = key.removeprefix("0x")
    for name, text in {
        "a.txt": f"KEY={key}\n",
        "b.txt": f"key: {bare.upper()}\n",
        "c.py": f"# old wallet\nKEY = '0X{bare}'\n",
    }.items():
        (project / name).write_text(text)
        refused = refusal(service, name)
        assert "private key" in str(refused) and bare not in str(refused).lower()
    assert (
        bare not in repr(service.workspace(service.workspace_roots(NOBODY_IN_PARTICULAR))).lower()
    )
    assert sent_text(select(service, "src/a.py")) == PROJECT_FILES["src/a.py"]


def test_without_a_wallet_files_are_still_read(tmp_path, project):
    service, _ = service_for(tmp_path, project, with_wallet=False)  # no key anywhere
    assert sent_text(select(service, "src/a.py")) == PROJECT_FILES["src/a.py"]


# --- 2. a directory swapped for a symlink while the call runs ----------------------------------


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads take turns far more often, so a race shows within a few hundred calls."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def keep_swapping(swap: Callable[[], None]) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            swap()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return stop, thread


def test_a_directory_swapped_for_a_symlink_never_leaks_the_outside(
    tmp_path, project, fast_switching
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_text("SECRET FROM OUTSIDE\n")
    (project / "sub").mkdir()
    (project / "sub" / "f.txt").write_text("inside\n")
    (project / "link").symlink_to(outside)
    service, _ = service_for(tmp_path, project)
    sub, real, link = project / "sub", project / "sub.real", project / "link"

    def swap() -> None:  # `sub` is the directory, then a symlink to outside, and back
        os.rename(sub, real)
        os.rename(link, sub)
        os.rename(sub, link)
        os.rename(real, sub)

    stop, swapper = keep_swapping(swap)
    leaked, crashed, read = [], [], 0
    try:
        deadline = time.monotonic() + 10
        while read < 1000 and time.monotonic() < deadline:
            for spec in ("sub/f.txt", "sub/*.txt"):
                try:
                    text = sent_text(select(service, spec))
                except FileRefused:
                    continue  # refused mid-swap: fine, as long as nothing leaks
                except OSError as exc:  # (a tool would report an internal error)
                    crashed.append(repr(exc))
                    continue
                read += 1
                if "SECRET" in text:
                    leaked.append(spec)
    finally:
        stop.set()
        swapper.join()
    assert not leaked, f"the outside file was sent {len(leaked)} time(s)"
    assert not crashed, crashed[:3]
    assert read > 0


def test_symlinks_that_stay_inside_are_still_read(tmp_path, project):
    (project / "alias.py").symlink_to("src/a.py")
    (project / "src" / "up.py").symlink_to("../README.md")
    (project / "code").symlink_to(project / "src")  # an absolute link to a directory inside
    service, _ = service_for(tmp_path, project)
    for spec, text in (
        ("alias.py", PROJECT_FILES["src/a.py"]),
        ("src/up.py", PROJECT_FILES["README.md"]),
        ("code/a.py", PROJECT_FILES["src/a.py"]),
        (str(project / "code" / "a.py"), PROJECT_FILES["src/a.py"]),
    ):
        assert sent_text(select(service, spec)) == text
    refusal(service, "code/../../README.md")  # `..` after a link is the link's parent: out


def test_a_path_through_a_symlink_out_is_refused_even_if_it_comes_back(tmp_path, project):
    """What lies outside cannot be checked against a swap: leaving the root is refused, even
    on a way that would end inside it again."""
    (project / "out").symlink_to(tmp_path)
    service, _ = service_for(tmp_path, project)
    assert refusal(service, "out/project/README.md").reason == "outside the workspace"


# --- 3. patterns that would hold the server ----------------------------------------------------


def test_no_pattern_can_hold_the_server(tmp_path, project):
    """Each pattern once took seconds to forever on the event loop. Run in a child process (a
    regex holds the GIL, so a thread could not be timed out), with a generous limit."""
    (project / ("n" * 60 + ".txt")).write_text("long name\n")
    deep = project.joinpath(*["d"] * 25)
    deep.mkdir(parents=True)
    (deep / "f.txt").write_text("deep\n")
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from blockrun_mcp.workspace import FileRefused, Workspace

        space = Workspace([Path(sys.argv[1])], forbidden=[])
        for pattern in ("**" + "?**" * 13 + "#", "**/" * 30 + "x", "**/" * 30 + "f.txt"):
            try:
                print([f.label for f in space.select([pattern]).files])
            except FileRefused as refused:
                print("refused:", refused)
        """
    )
    repository = Path(blockrun_mcp.__file__).resolve().parents[1]  # the code under test
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, str(project)],
            cwd=repository,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a pattern held the selection for over 20 s")
    assert done.returncode == 0, done.stderr
    first, second, third = done.stdout.splitlines()
    assert first.startswith("refused:") and "matches no file" in first
    assert second.startswith("refused:") and "matches no file" in second
    assert third == f"['{'d/' * 25}f.txt']"


def test_matching_work_is_bounded(tmp_path, project):
    """Past a bound on the work a pattern makes (every pattern state alive at every segment of
    a deep walk), the pattern is refused rather than endured."""
    from blockrun_mcp.workspace import Glob

    glob = Glob.compile("**/" + "*/" * 300 + "x")
    deep = "/".join(["a"] * 200)
    with pytest.raises(FileRefused, match="too much work"):
        for _ in range(1000):  # as a walk would, directory after directory
            assert not glob.matches(deep)


@pytest.mark.anyio
async def test_a_malformed_pattern_is_a_clear_refusal(sandbox, tmp_path, project):
    async with open_server(tmp_path, sandbox, env={"BLOCKRUN_WORKSPACE": str(project)}) as h:
        text = await h.fail("ask_model", {"prompt": "q", "files": ["src/[z-a]*.py"]})
        assert "[z-a]" in text and "backwards" in text
        assert not sandbox.state.payments_seen


@pytest.mark.anyio
async def test_files_are_chosen_off_the_event_loop(tmp_path, project):
    service, _ = service_for(tmp_path, project)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(tick)
        await anyio.sleep(0)
        before = ticks
        selection = await service.select_files(NOBODY_IN_PARTICULAR, ["src/*.py"])
        during = ticks - before  # the loop went on serving while the files were chosen
        tasks.cancel_scope.cancel()
    assert [f.label for f in selection.files] == ["src/a.py"]
    assert during > 0


# --- 4. secret names in disguise, and credentials not on the old list ---------------------------

DISGUISED = [
    ".env~",
    ".env-production",
    ".env_local",
    "id_rsa2",
    "id_rsa-old",
    "server.key.bak",
    "cert.pem.orig",
    ".netrc.old",
    ".pgpass~",
    ".env ",  # a trailing space
    ".env\u200b",  # a zero-width space
    "\uff0eenv",  # a fullwidth full stop
    "id_ｒｓａ",  # fullwidth letters
    "server.key.bak~",  # backups of backups
    "_netrc",
    ".s3cfg",
    ".boto",
    ".yarnrc.yml",
    "auth.json",
    "prod-sa-key.json",
    ".bash_history",
    ".zsh_history",
    ".python_history",
    ".psql_history",
    ".mysql_history",
    ".node_repl_history",
    ".sqlite_history",
    ".envrc",
]


@pytest.mark.parametrize("name", DISGUISED)
def test_disguised_secret_names_are_refused(tmp_path, project, name):
    folder = project / "d"
    folder.mkdir()
    (folder / name).write_text("TOKEN=hunter2\n")
    (folder / "ok.py").write_text("ok = True\n")
    service, _ = service_for(tmp_path, project)
    selection = select(service, "d/*")
    assert [f.label for f in selection.files] == ["d/ok.py"]
    assert selection.skipped == {"secret-looking": 1}
    if name == name.strip():  # (a named entry is stripped of outer spaces first)
        assert refusal(service, f"d/{name}").reason == "secret-looking"


@pytest.mark.parametrize(
    "name", ["environment.py", "identity.py", "keys.py", "tokenizer.py", "history.md", "env.py"]
)
def test_ordinary_source_files_are_not_taken_for_secrets(tmp_path, project, name):
    (project / name).write_text("x = 1\n")
    service, _ = service_for(tmp_path, project)
    assert sent_text(select(service, name)) == "x = 1\n"


# --- 5. git's own data -------------------------------------------------------------------------


def test_nothing_under_git_is_sent_named_or_matched(tmp_path, project):
    (project / ".git").mkdir()
    (project / ".git" / "config").write_text('[remote "origin"]\n\turl = https://t@x/r\n')
    (project / "sub").mkdir()
    (project / "sub" / ".git").write_text("gitdir: ../.git/worktrees/sub\n")  # a .git file
    (project / ".GIT").mkdir()
    (project / ".GIT" / "HEAD").write_text("ref: refs/heads/main\n")
    service, _ = service_for(tmp_path, project)
    for spec in (".git/config", "sub/.git", ".GIT/HEAD", "src/../.git/config"):
        assert refusal(service, spec).reason == "git internals", spec
    for pattern in (".git/*", ".GIT/*", "sub/.gi?"):
        assert "matches no file" in str(refusal(service, pattern))


# --- 6. a .gitignore swapped for a FIFO ----------------------------------------------------


def test_a_gitignore_swapped_for_a_fifo_never_blocks(tmp_path, project, fast_switching):
    gitignore, spare = project / ".gitignore", project / "spare.tmp"
    # One FIFO and one regular file, linked in by turns: a reader blocked on the FIFO can be
    # freed at the end, and each swap is two quick system calls.
    fifo, regular = tmp_path / "fifo", tmp_path / "regular"
    os.mkfifo(fifo)
    regular.write_text("*.log\n")
    gitignore.write_text("*.log\n")
    service, _ = service_for(tmp_path, project)

    def swap() -> None:  # a regular .gitignore, then the FIFO in its place, and back
        for source in (fifo, regular):
            os.link(source, spare)
            os.replace(spare, gitignore)

    stop, swapper = keep_swapping(swap)
    outcome: list[str] = []

    def choose() -> None:
        deadline = time.monotonic() + 8
        calls = 0
        while calls < 3000 and time.monotonic() < deadline:
            select(service, "src/*.py")
            calls += 1
        outcome.append("done")

    chooser = threading.Thread(target=choose, daemon=True)
    chooser.start()
    chooser.join(timeout=20)  # a few seconds' work, unless it blocks
    blocked = chooser.is_alive()
    stop.set()
    swapper.join()
    if blocked:  # on the FIFO: a writer that comes and goes frees it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        chooser.join(timeout=5)
    assert not blocked, "choosing files blocked on a FIFO"
    assert outcome == ["done"]


# --- 7. the HTTP tokens file -------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_tokens_file_in_the_workspace_is_never_sent(sandbox, tmp_path, project):
    tokens = project / "team.toml"
    tokens.write_text('[[identity]]\nname = "ann"\ntoken_sha256 = "' + "0" * 64 + '"\n')
    os.link(tokens, project / "notes.toml")
    env = {"BLOCKRUN_WORKSPACE": str(project), "BLOCKRUN_HTTP_TOKENS_FILE": str(tokens)}
    async with open_server(tmp_path, sandbox, env=env) as h:
        for spec in ("team.toml", "notes.toml", str(tokens)):
            text = await h.fail("ask_model", {"prompt": "q", "model": CHEAP_MODEL, "files": [spec]})
            assert "own files" in text
        assert not sandbox.state.payments_seen
