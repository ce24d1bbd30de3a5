"""The attestor against real processes of real non-root users.

Each test starts an in-process daemon on a socket in a world-traversable
folder and runs the client helper as `ab-agent1` or `ab-agent2`. The pause
hook between reading a process and re-checking it lets a test make the
process exit or exec at exactly that moment.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from attestor.inspection.inspector import Peer
from tests.support.attestor_env import (  # noqa: F401 (fixtures)
    SYSTEM_PYTHON,
    AgentUser,
    Harness,
    agent_users_fixture,
    as_user,
    make_harness_fixture,
    shared_dir_fixture,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

ONE_AGENT = """
[[agent]]
name = "agent1"
selectors = ["uid:{uid}"]
"""


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verify(
    harness: Harness, token: str, audience: str = "agent-bridge"
) -> dict[str, Any]:
    """Verify `token` against the JWKS the daemon serves over HTTP."""
    with urllib.request.urlopen(harness.jwks_url, timeout=5) as response:  # noqa: S310
        keys = json.load(response)["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [key for key in keys if key["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience=audience,
        issuer=harness.daemon.issuer,
    )
    return claims


def signal_then_wait(until: Callable[[Peer], bool]) -> Callable[[Peer], None]:
    """Build a pause hook: send SIGUSR1 to the peer, then wait for `until`."""

    def hook(peer: Peer) -> None:
        os.kill(peer.pid, signal.SIGUSR1)
        assert wait_for(lambda: until(peer), timeout=10)

    return hook


def test_matching_process_gets_verified_jwt(
    agent_users: dict[str, AgentUser], make_harness: Callable[..., Harness]
) -> None:
    user = agent_users["ab-agent1"]
    harness = make_harness(ONE_AGENT.format(uid=user.uid))
    asserted = {"tool": "psql", "on_behalf_of": "alice@example.com"}

    response = harness.run_client(user, {"op": "token", "asserted": asserted})

    assert response["ok"] is True, response
    claims = verify(harness, response["token"])
    assert claims["sub"] == "agent1"
    assert claims["agent"] == "agent1"
    assert claims["aud"] == "agent-bridge"
    assert claims["jti"] == response["jti"]
    assert claims["exp"] == response["expires_at"]
    assert claims["exp"] - claims["iat"] == 60
    assert claims["nbf"] == claims["iat"]
    assert claims["uid"] == str(user.uid)
    assert claims["gid"] == str(user.gid)
    assert claims["user"] == "ab-agent1"
    assert claims["exe"] == os.path.realpath(SYSTEM_PYTHON)
    assert claims["exe_sha256"] == sha256_of(SYSTEM_PYTHON)
    assert claims["exe_deleted"] == "false"
    assert claims["asserted"] == asserted
    for name in ("pid", "uid", "gid", "user", "exe", "exe_sha256", "exe_deleted"):
        assert isinstance(claims[name], str), name

    script = claims["process"]["script"]
    assert script["path"] == str(harness.directory / "helper.py")
    assert script["sha256"] == sha256_of(harness.directory / "helper.py")
    assert claims["process"]["parents"][0]["uid"] == "0"


def test_decision_log_records_issue_without_token(
    agent_users: dict[str, AgentUser], make_harness: Callable[..., Harness]
) -> None:
    user = agent_users["ab-agent1"]
    harness = make_harness(ONE_AGENT.format(uid=user.uid))

    response = harness.run_client(user)

    (record,) = [r for r in harness.decisions.records if r["decision"] == "issued"]
    assert record["jti"] == response["jti"]
    assert record["agent"] == "agent1"
    assert record["uid"] == user.uid
    assert record["exe_sha256"] == sha256_of(SYSTEM_PYTHON)
    assert response["token"] not in json.dumps(harness.decisions.records)


def test_other_uid_gets_no_matching_agent(
    agent_users: dict[str, AgentUser], make_harness: Callable[..., Harness]
) -> None:
    harness = make_harness(ONE_AGENT.format(uid=agent_users["ab-agent1"].uid))
    stranger = agent_users["ab-agent2"]

    response = harness.run_client(stranger)

    assert response["ok"] is False
    assert response["code"] == "no_matching_agent"
    assert f"uid {stranger.uid}" in response["error"]
    assert "no agent matches" in response["error"]
    assert "token" not in response


def test_ambiguous_match_is_rejected(
    agent_users: dict[str, AgentUser], make_harness: Callable[..., Harness]
) -> None:
    user = agent_users["ab-agent1"]
    agents = ONE_AGENT.format(uid=user.uid) + ONE_AGENT.format(uid=user.uid).replace(
        "agent1", "agent1-copy"
    )
    harness = make_harness(agents)

    response = harness.run_client(user)

    assert response["code"] == "no_matching_agent"
    assert "several agents (agent1, agent1-copy)" in response["error"]


def test_process_exiting_before_answer_gets_nothing(
    agent_users: dict[str, AgentUser], make_harness: Callable[..., Harness]
) -> None:
    user = agent_users["ab-agent1"]
    harness = make_harness(ONE_AGENT.format(uid=user.uid))
    harness.hook = signal_then_wait(
        lambda peer: bool(select.select([peer.pidfd], [], [], 0)[0])
    )

    child = harness.start_client(user, "exit")
    stdout, _ = child.communicate(timeout=20)

    assert stdout == ""
    assert wait_for(lambda: bool(harness.decisions.for_pid(child.pid)), timeout=20)
    (record,) = harness.decisions.for_pid(child.pid)
    assert record["decision"] == "rejected"
    assert record["code"] == "process_changed"
    assert "exited" in record["reason"]


def test_exec_after_connect_gets_no_token(
    agent_users: dict[str, AgentUser], make_harness: Callable[..., Harness]
) -> None:
    user = agent_users["ab-agent1"]
    harness = make_harness(ONE_AGENT.format(uid=user.uid))
    sleep_binary = os.path.realpath("/bin/sleep")
    harness.hook = signal_then_wait(
        lambda peer: os.readlink(f"/proc/{peer.pid}/exe") == sleep_binary
    )

    child = harness.start_client(user, "exec")

    assert wait_for(lambda: bool(harness.decisions.for_pid(child.pid)), timeout=20)
    (record,) = harness.decisions.for_pid(child.pid)
    assert record["code"] == "process_changed"
    assert f"executed {sleep_binary}" in record["reason"]
    assert not [r for r in harness.decisions.records if r["decision"] == "issued"]


def test_replaced_binary_reports_running_image(
    agent_users: dict[str, AgentUser],
    make_harness: Callable[..., Harness],
    shared_dir: Path,
) -> None:
    user = agent_users["ab-agent1"]
    binary = shared_dir / "agentbin"
    shutil.copy(os.path.realpath(SYSTEM_PYTHON), binary)
    binary.chmod(0o755)
    original_sha256 = sha256_of(binary)
    harness = make_harness(f"""
        [[agent]]
        name = "agent1"
        selectors = ["uid:{user.uid}", "path:{binary}"]
        """)
    child = subprocess.Popen(
        [str(binary), str(shared_dir / "helper.py"), harness.socket_path, "stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **as_user(user),
    )
    harness.children.append(child)
    assert wait_for(lambda: os.readlink(f"/proc/{child.pid}/exe") == str(binary))

    replacement = shared_dir / "agentbin.new"
    replacement.write_bytes(binary.read_bytes() + b"\0replaced")
    replacement.chmod(0o755)
    os.rename(replacement, binary)
    stdout, _ = child.communicate("go\n", timeout=20)
    response = json.loads(stdout)

    assert response["ok"] is True, response
    claims = verify(harness, response["token"])
    assert claims["exe"] == str(binary)
    assert claims["exe_deleted"] == "true"
    assert claims["exe_sha256"] == original_sha256
    assert claims["exe_sha256"] != sha256_of(binary)


def test_script_selectors_match_helper(
    agent_users: dict[str, AgentUser],
    make_harness: Callable[..., Harness],
    shared_dir: Path,
) -> None:
    user = agent_users["ab-agent1"]
    helper = shared_dir / "helper.py"
    harness = make_harness(f"""
        [[agent]]
        name = "scripted"
        selectors = ["uid:{user.uid}", "path:/usr/bin/python3*",
                     "script_path:{shared_dir}/*.py",
                     "script_sha256:{sha256_of(helper)}"]
        """)

    response = harness.run_client(user)

    assert response["ok"] is True, response
    assert response["agent"] == "scripted"


def test_script_hash_mismatch_is_rejected(
    agent_users: dict[str, AgentUser],
    make_harness: Callable[..., Harness],
) -> None:
    user = agent_users["ab-agent1"]
    harness = make_harness(f"""
        [[agent]]
        name = "scripted"
        selectors = ["uid:{user.uid}", "script_sha256:{"0" * 64}"]
        """)

    response = harness.run_client(user)

    assert response["code"] == "no_matching_agent"


def test_agent_exec_descendant_is_rejected(
    agent_users: dict[str, AgentUser],
    make_harness: Callable[..., Harness],
    shared_dir: Path,
) -> None:
    user = agent_users["ab-agent1"]
    harness = make_harness(ONE_AGENT.format(uid=user.uid))
    wrapper = shared_dir / "agent-exec"
    wrapper.write_text(
        "#!/usr/bin/python3\nimport subprocess, sys\n"
        "sys.exit(subprocess.call(sys.argv[1:]))\n"
    )
    wrapper.chmod(0o755)

    direct = harness.run_client(user)
    wrapped = subprocess.run(
        [str(wrapper), *harness.helper_argv("once", None)],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
        **as_user(user),
    )
    response = json.loads(wrapped.stdout)

    assert direct["ok"] is True
    assert response["ok"] is False
    assert response["code"] == "no_matching_agent"
    assert "descends from agent-exec" in response["error"]
    assert str(wrapper) in response["error"]


def test_inspect_returns_identity_without_token(
    agent_users: dict[str, AgentUser], make_harness: Callable[..., Harness]
) -> None:
    user = agent_users["ab-agent1"]
    harness = make_harness(ONE_AGENT.format(uid=user.uid))

    mine = harness.run_client(user, {"op": "inspect"})
    other = harness.run_client(agent_users["ab-agent2"], {"op": "inspect"})

    assert mine["ok"] is True
    assert mine["agent"] == "agent1"
    assert "token" not in mine
    assert mine["process"]["uid"] == str(user.uid)
    assert other["agent"] is None
    assert other["code"] == "no_matching_agent"


def test_invalid_assertions_are_bad_requests(
    agent_users: dict[str, AgentUser], make_harness: Callable[..., Harness]
) -> None:
    user = agent_users["ab-agent1"]
    harness = make_harness(ONE_AGENT.format(uid=user.uid))
    cases = [
        {"tool": "x" * 257},
        {"tool": "psql\nINJECTED"},
        {"role": "admin"},
        ["tool"],
        {"tool": 7},
    ]

    responses = [
        harness.run_client(user, {"op": "token", "asserted": a}) for a in cases
    ]

    for asserted, response in zip(cases, responses, strict=True):
        assert response["code"] == "bad_request", asserted
        assert "asserted" in response["error"], asserted
