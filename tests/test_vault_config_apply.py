"""Apply and destroy vault-config/ against a real OpenBao dev server.

Each test starts its own OpenBao (about half a second) on a free port with
HOME in a temporary folder. The JWT auth and policy parts are applied with
`targets`, so they need no plugin. Logins use JWTs signed here with an ES256
key whose public half is configured as `jwt_validation_pubkeys`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devstack import openbao, procs, tfapply
from devstack.tfapply_errors import VaultAPIError
from devstack.tfapply_vault import VaultClient
from tests.test_vault_config_plan import MODULE, variables

# devstack.procs.spawn drops its Popen handle while OpenBao keeps running
# (the process is tracked by PID), so Popen.__del__ warns at collection.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <function Popen.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)

JWT_TARGETS = ["vault_jwt_auth_backend_role.agent", "vault_policy.agent"]
ISSUER = "http://127.0.0.1:8300"


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[openbao.OpenBao]:
    server = openbao.start(tmp_path, procs.free_port_pair())
    try:
        yield server
    finally:
        procs.stop("openbao", server.pid)


@pytest.fixture
def vault(bao: openbao.OpenBao) -> VaultClient:
    return VaultClient(bao.addr, bao.root_token)


def jwt_variables(key: ec.EllipticCurvePrivateKey, **overrides: Any) -> dict[str, Any]:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    values = variables(jwks_url=None, jwt_validation_pubkeys=[pem.decode()])
    values["bound_issuer"] = ISSUER
    values["vault_cli"] = str(openbao.bao_binary())
    values.update(overrides)
    return values


def sign(key: ec.EllipticCurvePrivateKey, agent: str, **claims: Any) -> tuple[str, str]:
    """Return an attestor-like JWT for `agent` and its jti."""
    now = int(time.time())
    jti = str(uuid.uuid4())
    payload = {
        "iss": ISSUER,
        "sub": agent,
        "agent": agent,
        "aud": "agent-bridge",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "jti": jti,
        "host": "test-host",
        "uid": "1000",
        "exe": "/usr/bin/python3",
        "asserted": {"tool": "psql", "on_behalf_of": "alice"},
        **claims,
    }
    return jwt.encode(payload, key, algorithm="ES256"), jti


def apply_jwt(
    vault: VaultClient, values: dict[str, Any], state: Path | None = None
) -> None:
    tfapply.apply(
        MODULE, values, vault.addr, vault.token, targets=JWT_TARGETS, state_path=state
    )


def login(vault: VaultClient, role: str, token: str) -> dict[str, Any]:
    response = vault.write("auth/jwt/login", {"role": role, "jwt": token})
    assert response is not None
    auth: dict[str, Any] = response["auth"]
    return auth


def listing(vault: VaultClient, path: str) -> list[str]:
    response = vault.request("LIST", path)
    return sorted(response["data"]["keys"]) if response else []


def test_apply_jwt_role_state(vault: VaultClient, signing_key: Any) -> None:
    apply_jwt(vault, jwt_variables(signing_key))

    role = vault.read("auth/jwt/role/dev")
    assert role is not None
    data = role["data"]
    assert data["role_type"] == "jwt"
    assert data["user_claim"] == "sub"
    assert data["bound_audiences"] == ["agent-bridge"]
    assert data["bound_claims"] == {"agent": ["dev"]}
    assert data["clock_skew_leeway"] == 5
    assert data["expiration_leeway"] == 5
    assert data["not_before_leeway"] == 5
    assert data["token_ttl"] == 120
    assert data["token_max_ttl"] == 3600
    assert data["token_policies"] == ["agent-dev"]
    assert data["token_type"] == "service"
    assert data["claim_mappings"]["jti"] == "call_id"

    config = vault.read("auth/jwt/config")
    assert config is not None
    assert config["data"]["bound_issuer"] == ISSUER
    assert config["data"]["jwt_supported_algs"] == ["ES256"]


def test_apply_policy_exact(vault: VaultClient, signing_key: Any) -> None:
    apply_jwt(vault, jwt_variables(signing_key))

    assert listing(vault, "sys/policies/acl") == ["agent-dev", "default", "root"]
    policy = vault.read("sys/policies/acl/agent-dev")
    assert policy is not None
    assert json.loads(policy["data"]["policy"]) == {
        "path": {
            "agent-creds/database/creds/demo-readonly": {"capabilities": ["read"]},
            "sys/leases/revoke/agent-creds/database/creds/demo-readonly/*": {
                "capabilities": ["update"]
            },
        }
    }


def test_login_maps_claims_and_policy(vault: VaultClient, signing_key: Any) -> None:
    apply_jwt(vault, jwt_variables(signing_key))
    token, jti = sign(signing_key, "dev")

    auth = login(vault, "dev", token)
    assert auth["policies"] == ["agent-dev", "default"]
    assert auth["lease_duration"] == 120
    assert auth["metadata"]["call_id"] == jti
    assert auth["metadata"]["asserted_tool"] == "psql"
    assert auth["metadata"]["asserted_on_behalf_of"] == "alice"
    assert auth["metadata"]["exe"] == "/usr/bin/python3"

    agent = VaultClient(vault.addr, auth["client_token"])
    capabilities = agent.write(
        "sys/capabilities-self",
        {
            "paths": [
                "agent-creds/database/creds/demo-readonly",
                "agent-creds/database/creds/admin",
                "sys/leases/revoke/agent-creds/database/creds/demo-readonly/abc",
                "sys/leases/revoke/agent-creds/database/creds/admin/abc",
            ]
        },
    )
    assert capabilities is not None
    assert capabilities["agent-creds/database/creds/demo-readonly"] == ["read"]
    assert capabilities["agent-creds/database/creds/admin"] == ["deny"]
    revoke_own = "sys/leases/revoke/agent-creds/database/creds/demo-readonly/abc"
    assert capabilities[revoke_own] == ["update"]
    revoke_other = "sys/leases/revoke/agent-creds/database/creds/admin/abc"
    assert capabilities[revoke_other] == ["deny"]


def test_login_rejects_other_agent_token(vault: VaultClient, signing_key: Any) -> None:
    agents = {"dev": {"roles": ["demo-readonly"]}, "bot": {"roles": []}}
    values = jwt_variables(signing_key, agents=agents)
    apply_jwt(vault, values)
    bot_token, _ = sign(signing_key, "bot")

    with pytest.raises(VaultAPIError) as caught:
        login(vault, "dev", bot_token)
    assert caught.value.status == 400


def test_login_rejects_wrong_audience(vault: VaultClient, signing_key: Any) -> None:
    apply_jwt(vault, jwt_variables(signing_key))
    token, _ = sign(signing_key, "dev", aud="some-other-service")

    with pytest.raises(VaultAPIError, match="aud"):
        login(vault, "dev", token)


def test_login_rejects_recently_expired_jwt(
    vault: VaultClient, signing_key: Any
) -> None:
    # With Vault's default 150 s expiration leeway this JWT would be accepted.
    apply_jwt(vault, jwt_variables(signing_key))
    now = int(time.time())
    token, _ = sign(signing_key, "dev", iat=now - 70, nbf=now - 70, exp=now - 10)

    with pytest.raises(VaultAPIError, match="expired"):
        login(vault, "dev", token)


def test_added_agent_gets_exactly_its_role(
    vault: VaultClient, signing_key: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    apply_jwt(vault, jwt_variables(signing_key), state)
    roles_before = listing(vault, "auth/jwt/role")
    policies_before = listing(vault, "sys/policies/acl")
    dev_before = vault.read("auth/jwt/role/dev")

    agents = {"dev": {"roles": ["demo-readonly"]}, "bot": {"roles": ["demo-readonly"]}}
    apply_jwt(vault, jwt_variables(signing_key, agents=agents), state)

    assert roles_before == ["dev"]
    assert listing(vault, "auth/jwt/role") == ["bot", "dev"]
    assert set(listing(vault, "sys/policies/acl")) - set(policies_before) == {
        "agent-bot"
    }
    dev_after = vault.read("auth/jwt/role/dev")
    assert dev_before is not None and dev_after is not None
    assert dev_after["data"] == dev_before["data"]
    bot = vault.read("auth/jwt/role/bot")
    assert bot is not None
    assert bot["data"]["bound_claims"] == {"agent": ["bot"]}
    assert bot["data"]["token_policies"] == ["agent-bot"]


def test_removed_agent_loses_role_and_policy(
    vault: VaultClient, signing_key: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    agents = {"dev": {"roles": ["demo-readonly"]}, "bot": {"roles": []}}
    values = jwt_variables(signing_key, agents=agents)
    apply_jwt(vault, values, state)
    assert listing(vault, "auth/jwt/role") == ["bot", "dev"]

    values["agents"] = {"dev": {"roles": ["demo-readonly"]}}
    apply_jwt(vault, values, state)

    assert listing(vault, "auth/jwt/role") == ["dev"]
    assert listing(vault, "sys/policies/acl") == ["agent-dev", "default", "root"]
    recorded = [r["address"] for r in json.loads(state.read_text())["records"]]
    assert not any("bot" in address for address in recorded)


def test_destroy_then_reapply(
    vault: VaultClient, signing_key: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    values = jwt_variables(signing_key)
    apply_jwt(vault, values, state)

    tfapply.destroy(
        MODULE,
        values,
        vault.addr,
        vault.token,
        targets=["vault_jwt_auth_backend.agents", "vault_policy.agent"],
        state_path=state,
    )
    assert "jwt/" not in vault.mount_table("auth")
    assert listing(vault, "sys/policies/acl") == ["default", "root"]
    assert json.loads(state.read_text())["records"] == []

    apply_jwt(vault, values, state)
    token, _ = sign(signing_key, "dev")
    assert login(vault, "dev", token)["policies"] == ["agent-dev", "default"]


POLICY_TARGETS = ["vault_password_policy.postgres"]
LOWER24 = 'length = 24\nrule "charset" {\n  charset = "abcdefghijklmnopqrstuvwxyz"\n}\n'
DIGITS12 = 'length = 12\nrule "charset" {\n  charset = "0123456789"\n}\n'


def generated_password(vault: VaultClient, policy: str) -> str:
    response = vault.read(f"sys/policies/password/{policy}/generate")
    assert response is not None
    return str(response["data"]["password"])


def test_password_policy_written_and_refreshed(
    vault: VaultClient, signing_key: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    values = jwt_variables(signing_key)
    values["postgres"] = {
        **values["postgres"],
        "scram_iterations": 4096,
        "password_policy": "pg-lower24",
        "password_policy_rules": LOWER24,
    }
    address = 'vault_password_policy.postgres["pg-lower24"]'
    path = "sys/policies/password/pg-lower24"
    run = (MODULE, values, vault.addr, vault.token)
    options: dict[str, Any] = {"targets": POLICY_TARGETS, "state_path": state}

    tfapply.apply(*run, **options)
    stored = vault.read(path)
    assert stored is not None
    assert stored["data"]["policy"] == LOWER24
    assert re.fullmatch(r"[a-z]{24}", generated_password(vault, "pg-lower24"))
    assert tfapply.drift(*run, **options) == {}

    vault.put(path, {"policy": DIGITS12})
    assert tfapply.drift(*run, **options) == {address: ["policy"]}
    vault.delete(path)
    assert tfapply.drift(*run, **options) == {address: [tfapply.ABSENT]}
    tfapply.apply(*run, **options)
    assert tfapply.drift(*run, **options) == {}

    values["postgres"]["password_policy_rules"] = DIGITS12
    tfapply.apply(*run, **options)
    assert re.fullmatch(r"[0-9]{12}", generated_password(vault, "pg-lower24"))
    assert tfapply.drift(*run, **options) == {}

    # Without rules the module no longer manages the policy, so it goes.
    values["postgres"]["password_policy_rules"] = None
    tfapply.apply(*run, **options)
    assert vault.read(path) is None
    assert tfapply.drift(*run, **options) == {}
