"""Unit tests of the attestor's parsers and policies, without a daemon.

The inspector tests fake one seam: the procfs root points at a folder laid
out like /proc, so kernel states that are hard to produce on demand (mixed
uids, a reused parent pid) can be checked exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attestor.inspection.hashing import HashCache
from attestor.inspection.inspector import Inspector, Peer
from attestor.inspection.interpreters import ScriptRef, find_script
from attestor.inspection.process import (
    AncestorInfo,
    AttestationError,
    ProcessInfo,
    ScriptInfo,
)
from attestor.inspection.procfs import ProcFS
from attestor.policy.agents import Agent, WrapperRule, select_agent
from attestor.policy.config import ConfigError, load_config
from attestor.policy.selectors import SelectorError, compile_glob, parse_selector
from attestor.server.ratelimit import RateLimiter
from attestor.signing.tokens import validate_asserted


@pytest.mark.parametrize(
    ("exe", "cmdline", "expected"),
    [
        (
            "/usr/bin/python3.11",
            ["python3", "-u", "job.py", "-c"],
            ScriptRef("file", "job.py"),
        ),
        ("/usr/bin/python3.11", ["python3", "-c", "print(1)"], ScriptRef("inline", "")),
        (
            "/usr/bin/python3.11",
            ["python3", "-Wignore", "-um", "pkg.mod"],
            ScriptRef("module", "pkg.mod"),
        ),
        (
            "/usr/bin/python3.11",
            ["python3", "-X", "dev", "a.py"],
            ScriptRef("file", "a.py"),
        ),
        ("/usr/bin/python3.11", ["python3", "-"], None),
        ("/usr/bin/python3.11", ["python3"], None),
        (
            "/usr/bin/bash",
            ["bash", "-o", "pipefail", "run.sh"],
            ScriptRef("file", "run.sh"),
        ),
        ("/usr/bin/bash", ["bash", "-xc", "ls"], ScriptRef("inline", "")),
        ("/usr/bin/dash", ["sh", "-s", "arg"], None),
        ("/usr/bin/bash", ["bash", "--", "-odd.sh"], ScriptRef("file", "-odd.sh")),
        ("/usr/bin/perl", ["perl", "-Ilib", "-w", "t.pl"], ScriptRef("file", "t.pl")),
        (
            "/usr/bin/node",
            ["node", "--require", "x", "app.js"],
            ScriptRef("file", "app.js"),
        ),
        ("/usr/bin/php8.2", ["php", "-f", "index.php"], ScriptRef("file", "index.php")),
        ("/usr/bin/sleep", ["sleep", "5"], None),
    ],
)
def test_find_script_per_interpreter(
    exe: str, cmdline: list[str], expected: ScriptRef | None
) -> None:
    assert find_script(exe, cmdline) == expected


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/usr/bin/*", "/usr/bin/python3", True),
        ("/usr/bin/*", "/usr/bin/sub/python3", False),
        ("/usr/**", "/usr/bin/sub/python3", True),
        ("/opt/app-?/run", "/opt/app-1/run", True),
        ("/opt/app-[0-9]/run", "/opt/app-x/run", False),
        ("/opt/app-[!0-9]/run", "/opt/app-x/run", True),
        ("/opt/a.b", "/opt/axb", False),
    ],
)
def test_path_glob_semantics(pattern: str, path: str, matches: bool) -> None:
    assert (compile_glob(pattern).fullmatch(path) is not None) is matches


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("uid", "must read kind:value"),
        ("pid:1", "unknown kind 'pid'"),
        ("uid:alice", "needs a decimal number"),
        ("sha256:ABC", "64 lowercase hex digits"),
        ("path:bin/*", "must be absolute"),
    ],
)
def test_selector_errors_name_problem(text: str, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        parse_selector(text)


def make_process(**changes: object) -> ProcessInfo:
    values: dict[str, object] = {
        "pid": 42,
        "uid": 1001,
        "gid": 1001,
        "user": "svc",
        "groups": (1001,),
        "exe": "/usr/bin/python3.11",
        "exe_sha256": "a" * 64,
        "exe_deleted": False,
        "cmdline": ("python3", "/opt/job.py"),
        "cmdline_truncated": False,
        "cwd": "/",
        "start_time": 100,
        "ppid": 41,
        "script": ScriptInfo("file", "/opt/job.py", "b" * 64),
        "parents": (
            AncestorInfo(41, 1001, "/usr/bin/bash", "c" * 64, 90),
            AncestorInfo(1, 0, "/usr/lib/systemd/systemd", "d" * 64, 1),
        ),
    }
    values.update(changes)
    return ProcessInfo(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("uid:1001", True),
        ("uid:1002", False),
        ("user:svc", True),
        ("gid:1001", True),
        ("path:/usr/bin/python3*", True),
        (f"sha256:{'a' * 64}", True),
        ("script_path:/opt/*.py", True),
        (f"script_sha256:{'b' * 64}", True),
        ("parent_path:/usr/bin/bash", True),
        (f"parent_sha256:{'c' * 64}", True),
        ("ancestor_path:/usr/lib/systemd/*", True),
        ("parent_path:/usr/lib/**", False),
    ],
)
def test_selector_matching(selector: str, matches: bool) -> None:
    assert parse_selector(selector).matches(make_process()) is matches


def agent(name: str, *selectors: str) -> Agent:
    return Agent(
        name, tuple(parse_selector(s) for s in selectors), ("agent-bridge",), 60
    )


NO_WRAPPERS = WrapperRule(paths=(), modules=())


def test_select_agent_requires_all_selectors() -> None:
    agents = (agent("a", "uid:1001", "path:/usr/bin/node"), agent("b", "uid:1001"))

    assert select_agent(agents, NO_WRAPPERS, make_process()).name == "b"


def test_wrapper_module_ancestor_is_rejected() -> None:
    wrapper = AncestorInfo(
        41,
        1001,
        "/usr/bin/python3.11",
        None,
        90,
        ScriptInfo("module", "attestor.agent_exec"),
    )
    process = make_process(parents=(wrapper,))
    rule = WrapperRule(
        paths=(compile_glob("/**/agent-exec"),), modules=("attestor.agent_exec",)
    )

    with pytest.raises(AttestationError, match="descends from agent-exec") as caught:
        select_agent((agent("b", "uid:1001"),), rule, process)

    assert caught.value.code == "no_matching_agent"


def test_wrapper_path_matches_script_or_exe() -> None:
    rule = WrapperRule(paths=(compile_glob("/**/agent-exec"),), modules=())
    by_script = AncestorInfo(
        41,
        1,
        "/usr/bin/python3.11",
        None,
        9,
        ScriptInfo("file", "/usr/local/bin/agent-exec"),
    )
    by_exe = AncestorInfo(41, 1, "/opt/bin/agent-exec (deleted)", None, 9)
    unrelated = AncestorInfo(41, 1, "/usr/bin/bash", None, 9)

    assert rule.find(make_process(parents=(by_script,))) == by_script
    assert rule.find(make_process(parents=(by_exe,))) == by_exe
    assert rule.find(make_process(parents=(unrelated,))) is None


@pytest.mark.parametrize(
    ("asserted", "expected"),
    [
        (None, {}),
        ({"tool": "psql"}, {"tool": "psql"}),
        ({"tool": "psql", "on_behalf_of": None}, {"tool": "psql"}),
        (
            {"on_behalf_of": "Zoë <zoe@example.com>"},
            {"on_behalf_of": "Zoë <zoe@example.com>"},
        ),
    ],
)
def test_validate_asserted_accepts(asserted: object, expected: dict[str, str]) -> None:
    assert validate_asserted(asserted) == expected


def test_rate_limiter_refills_per_key() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])

    first = [limiter.allow(7) for _ in range(3)]
    other = limiter.allow(8)
    now[0] = 0.5
    refilled = limiter.allow(7)

    assert first == [True, True, False]
    assert other is True
    assert refilled is True
    assert limiter.allow(7) is False
    assert limiter.retry_after(7) == pytest.approx(0.5)


def test_hash_cache_sees_rewrite_with_old_mtime(tmp_path: Path) -> None:
    target = tmp_path / "tool"
    target.write_bytes(b"version 1")
    cache = HashCache(max_bytes=1024)
    stat = target.stat()

    with open(target, "rb") as handle:
        first = cache.digest_fd(handle.fileno())
    target.write_bytes(b"version 2")
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with open(target, "rb") as handle:
        second = cache.digest_fd(handle.fileno())

    assert first.sha256 != second.sha256
    assert first.sha256 is not None


def test_hash_cache_skips_large_files(tmp_path: Path) -> None:
    target = tmp_path / "big"
    target.write_bytes(b"x" * 2048)
    cache = HashCache(max_bytes=1024)

    with open(target, "rb") as handle:
        digest = cache.digest_fd(handle.fileno())

    assert digest.sha256 is None
    assert digest.size == 2048


CONFIG_HEAD = 'socket_path = "/tmp/s.sock"\nkey_dir = "/tmp/keys"\n'
ONE_AGENT = '[[agent]]\nname = "dev"\nselectors = ["uid:1"]\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[[agent]]\nname = "dev"\nselectors = ["uid:1"]\nttl = 600\n',
            "agent 'dev': field 'ttl': must be at least 1 and at most 300, got 600",
        ),
        (
            '[[agent]]\nname = "dev"\nselectors = ["path:/usr/bin/x"]\n',
            "agent 'dev': field 'selectors': needs a uid: or user: selector",
        ),
        (
            '[[agent]]\nname = "dev"\nselectors = ["uid:x"]\n',
            "agent 'dev': field 'selectors': selector uid:x needs a decimal number",
        ),
        (
            '[[agent]]\nname = "Dev Team"\nselectors = ["uid:1"]\n',
            "agent 'Dev Team': field 'name': 'Dev Team' must be 1-63 of a-z",
        ),
        ('[[agent]]\nselectors = ["uid:1"]\n', "agent #1: field 'name': missing"),
        (
            '[[agent]]\nname = "dev"\nselectors = ["uid:1"]\nttll = 5\n',
            "agent 'dev': field 'ttll': unknown setting",
        ),
        (
            '[[agent]]\nname = "dev"\nselectors = ["uid:1"]\n' * 2,
            "agent 'dev': field 'name': defined twice",
        ),
        (
            'jwks_address = "0.0.0.0:8300"\n',
            "field 'jwks_address': 0.0.0.0 is not a loopback",
        ),
        ('jwks_address = "8300"\n', "field 'jwks_address': '8300' must read HOST:PORT"),
        (
            "[rate_limit]\nper_uid_rate = -1\n" + ONE_AGENT,
            "[rate_limit] field 'per_uid_rate'",
        ),
        (
            'algorithm = "HS256"\n' + ONE_AGENT,
            "field 'algorithm': 'HS256' is not supported",
        ),
        ("", "field 'agent': no [[agent]] table"),
        ("socket_path = [", "invalid TOML"),
    ],
)
def test_config_errors_name_file_agent_field(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "attestor.toml"
    head = "" if body.startswith("socket_path") else CONFIG_HEAD
    path.write_text(head + body)

    with pytest.raises(ConfigError) as caught:
        load_config(str(path))

    assert str(caught.value).startswith(f"{path}:")
    assert message in str(caught.value)


def test_config_defaults(tmp_path: Path) -> None:
    path = tmp_path / "attestor.toml"
    path.write_text(CONFIG_HEAD + '[[agent]]\nname = "dev"\nselectors = ["uid:1000"]\n')

    config = load_config(str(path))

    assert config.jwks_host == "127.0.0.1"
    assert config.jwks_port == 8300
    assert config.socket_mode == 0o666
    assert config.agents[0].ttl == 60
    assert config.agents[0].audience == ("agent-bridge",)
    assert config.rate_limit.rate == 50.0


def write_fake_process(
    root: Path, pid: int, *, ppid: int, start: int, uids: str = "1001\t1001\t1001\t1001"
) -> None:
    if ppid == 1 and not (root / "1").exists():
        write_fake_process(root, 1, ppid=0, start=1)  # the chain ends at init
    entry = root / str(pid)
    entry.mkdir(parents=True)
    (entry / "stat").write_text(
        f"{pid} (fake job) S {ppid} " + "0 " * 17 + f"{start} 0 0\n"
    )
    (entry / "status").write_text(
        f"Name:\tfake\nUid:\t{uids}\nGid:\t1001\t1001\t1001\t1001\nGroups:\t1001 27\n"
    )
    (entry / "cmdline").write_bytes(b"/usr/bin/sleep\x0030\x00")
    (entry / "exe").symlink_to("/usr/bin/sleep")
    (entry / "cwd").symlink_to("/tmp")
    (entry / "root").symlink_to("/")


def fake_peer(pid: int, start: int) -> Peer:
    # A live pidfd (this test process) so the liveness check passes.
    return Peer(
        pid=pid, uid=1001, gid=1001, pidfd=os.pidfd_open(os.getpid()), start_time=start
    )


def test_fake_procfs_reads_identity(tmp_path: Path) -> None:
    write_fake_process(tmp_path, 500, ppid=400, start=1000)
    write_fake_process(tmp_path, 400, ppid=1, start=900)
    inspector = Inspector(
        hashes=HashCache(max_bytes=1 << 30),
        procfs=ProcFS(str(tmp_path)),
        user_name=lambda uid: f"user{uid}",
    )
    peer = fake_peer(500, 1000)

    try:
        info = inspector.inspect(peer)
    finally:
        peer.close()

    assert info.uid == 1001
    assert info.user == "user1001"
    assert info.groups == (1001, 27)
    assert info.exe == "/usr/bin/sleep"
    assert info.cwd == "/tmp"
    assert [ancestor.pid for ancestor in info.parents] == [400, 1]


def test_fake_procfs_rejects_reused_parent_pid(tmp_path: Path) -> None:
    write_fake_process(tmp_path, 500, ppid=400, start=1000)
    # pid 400 now names a process that started after its "child": pid reuse.
    write_fake_process(tmp_path, 400, ppid=1, start=2000)
    inspector = Inspector(
        hashes=HashCache(max_bytes=1 << 30), procfs=ProcFS(str(tmp_path))
    )
    peer = fake_peer(500, 1000)

    try:
        with pytest.raises(AttestationError, match="ancestor 400") as caught:
            inspector.inspect(peer)
    finally:
        peer.close()

    assert caught.value.code == "process_changed"


def test_fake_procfs_rejects_vanished_ancestor(tmp_path: Path) -> None:
    write_fake_process(tmp_path, 500, ppid=400, start=1000)
    write_fake_process(tmp_path, 400, ppid=300, start=900)  # 300 has exited
    inspector = Inspector(
        hashes=HashCache(max_bytes=1 << 30), procfs=ProcFS(str(tmp_path))
    )
    peer = fake_peer(500, 1000)

    try:
        with pytest.raises(AttestationError, match="ancestor 300") as caught:
            inspector.inspect(peer)
    finally:
        peer.close()

    assert caught.value.code == "process_changed"


def test_fake_procfs_rejects_too_deep_chain(tmp_path: Path) -> None:
    write_fake_process(tmp_path, 500, ppid=400, start=1000)
    write_fake_process(tmp_path, 400, ppid=300, start=900)
    write_fake_process(tmp_path, 300, ppid=1, start=800)
    inspector = Inspector(
        hashes=HashCache(max_bytes=1 << 30), procfs=ProcFS(str(tmp_path)), max_depth=1
    )
    peer = fake_peer(500, 1000)

    try:
        with pytest.raises(AttestationError, match="more than 1 ancestors"):
            inspector.inspect(peer)
    finally:
        peer.close()


def test_fake_procfs_rejects_mixed_uids(tmp_path: Path) -> None:
    write_fake_process(tmp_path, 500, ppid=1, start=1000, uids="1001\t0\t0\t0")
    inspector = Inspector(
        hashes=HashCache(max_bytes=1 << 30), procfs=ProcFS(str(tmp_path))
    )
    peer = fake_peer(500, 1000)

    try:
        with pytest.raises(AttestationError, match="mixed uids") as caught:
            inspector.inspect(peer)
    finally:
        peer.close()

    assert caught.value.code == "no_matching_agent"


def test_fake_procfs_detects_restarted_pid(tmp_path: Path) -> None:
    write_fake_process(tmp_path, 500, ppid=1, start=1000)
    inspector = Inspector(
        hashes=HashCache(max_bytes=1 << 30), procfs=ProcFS(str(tmp_path))
    )
    peer = fake_peer(500, 999)  # pinned start time differs from /proc's

    try:
        with pytest.raises(AttestationError, match="exited") as caught:
            inspector.inspect(peer)
    finally:
        peer.close()

    assert caught.value.code == "process_changed"


def test_wrapper_found_without_exe_access(tmp_path: Path) -> None:
    write_fake_process(tmp_path, 500, ppid=400, start=1000)
    write_fake_process(tmp_path, 400, ppid=1, start=900)
    # As for a non-dumpable agent-exec seen without CAP_SYS_PTRACE: no exe
    # link, but the cmdline is readable.
    (tmp_path / "400" / "exe").unlink()
    (tmp_path / "400" / "cmdline").write_bytes(
        b"/usr/bin/python3\x00/opt/venv/bin/agent-exec\x00--role\x00db\x00"
    )
    inspector = Inspector(
        hashes=HashCache(max_bytes=1 << 30), procfs=ProcFS(str(tmp_path))
    )
    peer = fake_peer(500, 1000)
    rule = WrapperRule(paths=(compile_glob("/**/agent-exec"),), modules=())

    try:
        info = inspector.inspect(peer)
    finally:
        peer.close()

    assert info.parents[0].exe == ""
    assert rule.find(info) == info.parents[0]
