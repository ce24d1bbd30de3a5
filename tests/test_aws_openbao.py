"""The aws/ paths through a real OpenBao, the built plugin and the attestor.

The built plugin gets a mount of its own, whose `aws/config/root` points at
this module's moto server. An agent logs in through the attestor on a JWT role of
its own, whose policy reads only the `e2e-*` AWS roles, and uses hvac's
`client.secrets.aws` exactly as a user would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import hvac
import hvac.exceptions
import pytest

from attestor.client import request_token
from devstack.stack import StackState
from plugin.aws.client import KeyPair
from tests.support.moto import (
    MotoServer,
    assumable_role,
    error_code_of,
    serve_moto,
)

pytestmark = pytest.mark.stack

MOUNT_ROOT = "agent-creds-aws-e2e"
MOUNT = f"{MOUNT_ROOT}/aws"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*"}],
}
AGENT_POLICY = f"""
path "{MOUNT}/creds/e2e-*" {{ capabilities = ["read", "update"] }}
path "{MOUNT}/sts/e2e-*" {{ capabilities = ["read", "update"] }}
"""
# Fields of the stack's JWT role `dev` that a copy must keep.
JWT_ROLE_FIELDS = (
    "role_type",
    "user_claim",
    "bound_audiences",
    "bound_claims",
    "claim_mappings",
    "clock_skew_leeway",
    "expiration_leeway",
    "not_before_leeway",
)


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from serve_moto(tmp_path_factory)


@pytest.fixture(scope="module")
def admin(stack: StackState, moto_server: MotoServer) -> Iterator[hvac.Client]:
    """A root client, with a mount of the plugin of this module's own."""
    client = hvac.Client(url=stack.vault_addr, token=stack.root_token)
    # A mount of its own leaves the stack's agent-creds/ config untouched.
    client.sys.enable_secrets_engine("agent-bridge", path=MOUNT_ROOT)
    accessor = client.sys.list_auth_methods()["jwt/"]["accessor"]
    client.write(f"{MOUNT_ROOT}/config/identity", jwt_mount_accessor=accessor)
    client.secrets.aws.configure_root_iam_credentials(
        access_key=moto_server.admin.access_key,
        secret_key=moto_server.admin.secret_key,
        region="us-east-1",
        iam_endpoint=moto_server.url,
        sts_endpoint=moto_server.url,
        mount_point=MOUNT,
    )
    try:
        yield client
    finally:
        # Unmounting revokes the mount's leases while moto still runs.
        client.sys.disable_secrets_engine(MOUNT_ROOT)


@pytest.fixture(scope="module")
def agent(stack: StackState, admin: hvac.Client) -> hvac.Client:
    """An hvac client logged in as the agent `dev` with the AWS test policy."""
    admin.sys.create_or_update_policy("agent-bridge-aws-e2e", AGENT_POLICY)
    dev = admin.read("auth/jwt/role/dev")["data"]
    role = {k: dev[k] for k in JWT_ROLE_FIELDS if dev.get(k) is not None}
    admin.write(
        "auth/jwt/role/aws-e2e",
        **role,
        token_policies=["agent-bridge-aws-e2e"],
        token_ttl=300,
    )
    client = hvac.Client(url=stack.vault_addr)
    issued = request_token(stack.attestor_socket)
    client.auth.jwt.jwt_login(role="aws-e2e", jwt=issued.token, path="jwt")
    return client


@pytest.fixture(scope="module")
def role_arn(moto_server: MotoServer) -> str:
    """An IAM role the admin user may assume, allowed to list users."""
    return assumable_role(moto_server, json.dumps(POLICY))


def keys_of(data: dict[str, str]) -> KeyPair:
    return KeyPair(
        data["access_key"], data["secret_key"], data.get("session_token") or ""
    )


def test_iam_user_through_openbao(
    admin: hvac.Client, agent: hvac.Client, moto_server: MotoServer
) -> None:
    admin.secrets.aws.create_or_update_role(
        name="e2e-iam",
        credential_type="iam_user",
        policy_document=POLICY,
        mount_point=MOUNT,
    )
    admin.write(f"{MOUNT}/roles/e2e-iam", allowed_agents="dev")

    response = agent.secrets.aws.generate_credentials(name="e2e-iam", mount_point=MOUNT)

    assert response["lease_duration"] > 0
    assert response["renewable"] is True
    data = response["data"]
    assert data["session_token"] is None
    assert data["endpoint_url"] == moto_server.url
    keys = keys_of(data)
    arn = moto_server.client("sts", keys).get_caller_identity()["Arn"]
    username = arn.rsplit("/", 1)[-1]
    assert username.startswith("ab-dev-e2e-iam-")

    admin.sys.revoke_lease(response["lease_id"])

    iam = moto_server.client("iam")
    assert error_code_of(lambda: iam.get_user(UserName=username)) == "NoSuchEntity"
    sts = moto_server.client("sts", keys)
    assert error_code_of(sts.get_caller_identity) == "InvalidClientTokenId"


def test_assumed_role_lease_through_openbao(
    admin: hvac.Client, agent: hvac.Client, moto_server: MotoServer, role_arn: str
) -> None:
    admin.secrets.aws.create_or_update_role(
        name="e2e-sts",
        credential_type="assumed_role",
        role_arns=[role_arn],
        mount_point=MOUNT,
    )
    admin.write(f"{MOUNT}/roles/e2e-sts", allowed_agents="dev")

    response = agent.secrets.aws.generate_credentials(
        name="e2e-sts", ttl="900s", endpoint="sts", mount_point=MOUNT
    )

    assert 880 <= response["lease_duration"] <= 900
    assert response["renewable"] is False
    keys = keys_of(response["data"])
    assert error_code_of(moto_server.client("iam", keys).list_users) == ""

    admin.sys.revoke_lease(response["lease_id"])

    # AWS cannot revoke one session: the credentials stay valid until expiry.
    assert error_code_of(moto_server.client("iam", keys).list_users) == ""


def test_agent_outside_allowed_agents(admin: hvac.Client, agent: hvac.Client) -> None:
    admin.secrets.aws.create_or_update_role(
        name="e2e-ops",
        credential_type="iam_user",
        policy_document=POLICY,
        mount_point=MOUNT,
    )
    admin.write(f"{MOUNT}/roles/e2e-ops", allowed_agents="ops-*")

    with pytest.raises(hvac.exceptions.Forbidden, match="not in allowed_agents"):
        agent.secrets.aws.generate_credentials(name="e2e-ops", mount_point=MOUNT)
