"""STS credentials (assumed_role, federation_token) against moto with auth on."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from plugin.aws.client import KeyPair
from plugin.logical import BadRequestError, Operation, Response, Secret
from tests.support.database import Mount
from tests.support.moto import (
    ACCOUNT_ID,
    ADMIN_USER,
    MotoServer,
    assumable_role,
    aws_creds,
    aws_mount,
    error_code_of,
    serve_moto,
)

LIST_USERS = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iam:ListUsers", "Resource": "*"}],
    }
)


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from serve_moto(tmp_path_factory)


@pytest.fixture
def mount(moto_server: MotoServer) -> Mount:
    return aws_mount(moto_server)


@pytest.fixture
def role_arn(moto_server: MotoServer) -> str:
    """An IAM role the admin user may assume, allowed to list users."""
    return assumable_role(moto_server, LIST_USERS)


def add_role(
    mount: Mount, role_arn: str, name: str = "demo-sts", **fields: Any
) -> None:
    values = {
        "credential_type": "assumed_role",
        "role_arns": role_arn,
        "allowed_agents": "dev",
    }
    mount.write(f"aws/roles/{name}", **{**values, **fields})


def session_keys(data: dict[str, Any]) -> KeyPair:
    return KeyPair(data["access_key"], data["secret_key"], data["session_token"])


def revoke(mount: Mount, secret: Secret | None) -> Response:
    assert secret is not None
    response = mount.request(Operation.REVOKE, "aws/sts/x", secret=secret)
    assert response is not None
    return response


def test_assumed_role_lease_is_session(
    mount: Mount, moto_server: MotoServer, role_arn: str
) -> None:
    add_role(mount, role_arn)

    response = aws_creds(mount, "demo-sts", "dev")

    assert response.secret is not None
    lease = response.secret.lease
    assert 3500 <= lease.ttl <= 3600
    assert lease.max_ttl == lease.ttl
    assert lease.renewable is False
    data = response.data
    assert data["session_token"]
    assert data["security_token"] == data["session_token"]
    assert data["region"] == "us-east-1"
    assert data["endpoint_url"] == moto_server.url
    identity = moto_server.client("sts", session_keys(data)).get_caller_identity()
    assert identity["Arn"].startswith(
        f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role_arn.rsplit('/', 1)[-1]}/ab-dev-"
    )
    assert data["arn"] == identity["Arn"]
    assert data["secret_key"] not in json.dumps(response.secret.internal_data)


def test_sts_post_with_ttl_and_session_name(
    mount: Mount, moto_server: MotoServer, role_arn: str
) -> None:
    add_role(mount, role_arn)

    response = aws_creds(
        mount,
        "demo-sts",
        "dev",
        endpoint="sts",
        operation=Operation.UPDATE,
        ttl="15m",
        role_session_name="nightly report",
    )

    assert response.secret is not None
    assert 880 <= response.secret.lease.ttl <= 900
    expires = datetime.datetime.fromisoformat(response.data["expiration"])
    remaining = expires.timestamp() - time.time()
    assert 880 <= remaining <= 900
    identity = moto_server.client("sts", session_keys(response.data))
    assert identity.get_caller_identity()["Arn"].endswith("/ab-dev@nightly_report")
    assert response.secret.internal_data["session_name"] == "ab-dev@nightly_report"


def test_session_name_keeps_caller_agent(
    mount: Mount, moto_server: MotoServer, role_arn: str
) -> None:
    """A role_session_name naming another agent stays a suffix of the caller's."""
    add_role(mount, role_arn, allowed_agents="dev,ops")
    other = aws_creds(mount, "demo-sts", "ops").secret
    assert other is not None
    other_session = other.internal_data["session_name"]

    response = aws_creds(mount, "demo-sts", "dev", role_session_name=other_session)

    identity = moto_server.client("sts", session_keys(response.data))
    arn = identity.get_caller_identity()["Arn"]
    assert arn.endswith("/ab-dev@" + other_session.replace("@", "_"))
    assert not arn.endswith("/" + other_session)


def test_session_name_escapes_at_sign(mount: Mount, role_arn: str) -> None:
    """`@` occurs once, between the caller's agent and its suffix."""
    add_role(mount, role_arn, allowed_agents="dev@example.com")

    named = aws_creds(mount, "demo-sts", "dev@example.com", role_session_name="a@b")
    generated = aws_creds(mount, "demo-sts", "dev@example.com")

    assert named.secret is not None
    assert named.secret.internal_data["session_name"] == "ab-dev_example.com@a_b"
    assert generated.secret is not None
    assert "@" not in generated.secret.internal_data["session_name"]
    assert generated.secret.internal_data["session_name"].startswith(
        "ab-dev_example.com-"
    )


def test_session_name_too_long_rejected(mount: Mount, role_arn: str) -> None:
    add_role(mount, role_arn)
    longest = "x" * (64 - len("ab-dev@"))

    fitting = aws_creds(mount, "demo-sts", "dev", role_session_name=longest)

    assert fitting.secret is not None
    assert len(fitting.secret.internal_data["session_name"]) == 64
    with pytest.raises(BadRequestError) as err:
        aws_creds(mount, "demo-sts", "dev", role_session_name=longest + "x")
    message = str(err.value)
    assert "role_session_name" in message
    assert repr(longest + "x") in message
    assert "at most 64 characters of [A-Za-z0-9+=,.@_-]" in message
    assert "at most 57 characters long" in message


def test_query_ttl_string_is_accepted(mount: Mount, role_arn: str) -> None:
    add_role(mount, role_arn, max_sts_ttl="20m")

    response = aws_creds(mount, "demo-sts", "dev", ttl="7200")

    assert response.secret is not None
    assert 1180 <= response.secret.lease.ttl <= 1200


def test_ttl_below_900_is_rejected(mount: Mount, role_arn: str) -> None:
    add_role(mount, role_arn)

    with pytest.raises(BadRequestError) as raised:
        aws_creds(mount, "demo-sts", "dev", ttl="60")

    assert str(raised.value) == (
        "session duration 60 s (ttl 60 s) is below 900 s, the shortest session "
        "AWS issues: ask for at least 900 s"
    )


def test_ttl_capped_below_900_names_the_cap(mount: Mount, role_arn: str) -> None:
    add_role(mount, role_arn)
    mount.system.max_ttl = 600

    with pytest.raises(BadRequestError) as raised:
        aws_creds(mount, "demo-sts", "dev", ttl="899")

    assert str(raised.value) == (
        "session duration 600 s (ttl 899 s, capped to 600 s by max_sts_ttl or the "
        "mount's max lease TTL) is below 900 s, the shortest session AWS issues: "
        "raise that maximum to at least 900 s"
    )


def test_revoke_warns_session_stays_valid(
    mount: Mount, moto_server: MotoServer, role_arn: str
) -> None:
    add_role(mount, role_arn)
    response = aws_creds(mount, "demo-sts", "dev")
    keys = session_keys(response.data)

    revoked = revoke(mount, response.secret)

    assert len(revoked.warnings) == 1
    assert "cannot be revoked one by one" in revoked.warnings[0]
    assert "remain valid until" in revoked.warnings[0]
    # The warning is the truth: the session still works.
    users = moto_server.client("iam", keys).list_users()["Users"]
    assert any(u["UserName"] == ADMIN_USER for u in users)


def test_revoke_denies_older_sessions(
    mount: Mount, moto_server: MotoServer, role_arn: str
) -> None:
    add_role(mount, role_arn, deny_older_sessions_on_revoke=True)
    response = aws_creds(mount, "demo-sts", "dev")
    other = aws_creds(mount, "demo-sts", "dev")
    before_revoke = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    holder = moto_server.client("iam", session_keys(response.data))
    assert error_code_of(holder.list_users) == ""

    revoked = revoke(mount, response.secret)

    assert "other agents' sessions included" in revoked.warnings[0]
    role_name = role_arn.rsplit("/", 1)[-1]
    found = moto_server.client("iam").get_role_policy(
        RoleName=role_name, PolicyName="AWSRevokeOlderSessions"
    )
    statement = found["PolicyDocument"]["Statement"][0]
    assert statement["Effect"] == "Deny"
    cutoff = statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
    cutoff_time = datetime.datetime.fromisoformat(cutoff.replace("Z", "+00:00"))
    assert cutoff_time >= before_revoke
    assert error_code_of(holder.list_users) == "AccessDenied"
    # The blast radius: the other lease's session is denied as well.
    bystander = moto_server.client("iam", session_keys(other.data))
    assert error_code_of(bystander.list_users) == "AccessDenied"


def test_renew_of_sts_lease_fails(mount: Mount, role_arn: str) -> None:
    add_role(mount, role_arn)
    secret = aws_creds(mount, "demo-sts", "dev").secret

    with pytest.raises(BadRequestError, match="cannot be renewed"):
        mount.request(Operation.RENEW, "aws/sts/x", secret=secret)


def test_role_arn_must_be_listed(mount: Mount, role_arn: str) -> None:
    other = f"arn:aws:iam::{ACCOUNT_ID}:role/other"
    add_role(mount, role_arn)
    add_role(mount, f"{role_arn},{other}", "two")

    with pytest.raises(BadRequestError, match="is not in role_arns"):
        aws_creds(mount, "demo-sts", "dev", role_arn=other)
    with pytest.raises(BadRequestError, match="has 2 role_arns: give role_arn"):
        aws_creds(mount, "two", "dev")
    chosen = aws_creds(mount, "two", "dev", role_arn=role_arn)
    assert chosen.secret is not None
    assert chosen.secret.internal_data["role_arn"] == role_arn


def test_group_policies_join_session(
    mount: Mount, moto_server: MotoServer, role_arn: str
) -> None:
    iam = moto_server.client("iam")
    group = f"session-{time.monotonic_ns()}"
    iam.create_group(GroupName=group)
    iam.put_group_policy(GroupName=group, PolicyName="list", PolicyDocument=LIST_USERS)
    add_role(mount, role_arn, iam_groups=group, policy_document=LIST_USERS)

    response = aws_creds(mount, "demo-sts", "dev")

    keys = session_keys(response.data)
    assert error_code_of(moto_server.client("iam", keys).list_users) == ""


def test_federation_token_lease(mount: Mount) -> None:
    mount.write(
        "aws/roles/federated",
        credential_type="federation_token",
        policy_document=LIST_USERS,
        default_sts_ttl="30m",
        allowed_agents="dev",
    )

    response = aws_creds(mount, "federated", "dev")

    assert response.secret is not None
    assert 1780 <= response.secret.lease.ttl <= 1800
    assert response.secret.lease.renewable is False
    assert response.data["session_token"]
    assert ":federated-user/ab-dev-" in response.data["arn"]


def test_federation_token_needs_policy(mount: Mount) -> None:
    mount.write(
        "aws/roles/open",
        credential_type="federation_token",
        allowed_agents="dev",
    )

    with pytest.raises(BadRequestError, match="needs at least one"):
        aws_creds(mount, "open", "dev")
