"""agent-exec with the stack's AWS role `demo-aws`, against its moto server.

The session's `stack` fixture declares the `iam_user` role `demo-aws` for the
agent `dev` through vault-config/, with `aws/config/root` pointing at the
stack's moto server (authentication on, so a deleted key is rejected). The
command run by agent-exec writes what it saw to a file, and the test then
checks from the administrator's side that the IAM user, its key and the
Vault lease are gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import hvac
import hvac.exceptions
import pytest
from botocore.exceptions import ClientError

from devstack import moto
from devstack.stack import StackState
from tests.test_end_to_end import role_exists

pytestmark = pytest.mark.stack

AGENT_EXEC = str(Path(sys.executable).parent / "agent-exec")
USER_ARN_PREFIX = f"arn:aws:iam::{moto.ACCOUNT_ID}:user/ab-dev-demo-aws-"
AWS_CREDS_PREFIX = "agent-creds/aws/creds/demo-aws/"
# AWS settings agent-exec itself runs with; none may reach the command.
INHERITED_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIAINHERITED0000000",
    "AWS_SECRET_ACCESS_KEY": "inherited-secret-key",
    "AWS_SESSION_TOKEN": "inherited-session-token",
    "AWS_PROFILE": "inherited-profile",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}

# Run inside agent-exec: what the per-call key can do, and its environment.
AWS_CHILD = """
import json, os, sys
import boto3
from botocore.exceptions import ClientError

try:
    boto3.client("iam").list_users()
    list_users = "allowed"
except ClientError as err:
    list_users = err.response["Error"]["Code"]
result = {
    "arn": boto3.client("sts").get_caller_identity()["Arn"],
    "list_users": list_users,
    "env": {k: v for k, v in os.environ.items() if k.startswith("AWS_")},
}
with open(sys.argv[1], "w") as out:
    json.dump(result, out)
"""

# Run inside agent-exec with a database and an AWS role at once.
BOTH_CHILD = """
import json, sys
import boto3, psycopg

with psycopg.connect() as conn:  # libpq reads PGHOST, PGUSER, PGPASSWORD...
    pg_user = conn.execute("select current_user").fetchone()[0]
arn = boto3.client("sts").get_caller_identity()["Arn"]
with open(sys.argv[1], "w") as out:
    json.dump({"pg_user": pg_user, "arn": arn}, out)
"""


@dataclass(frozen=True)
class Call:
    """One finished agent-exec call and what its command wrote."""

    result: subprocess.CompletedProcess[str]
    seen: dict[str, Any]

    @property
    def iam_user(self) -> str:
        return str(self.seen["arn"]).rsplit("/", 1)[1]


def run_call(stack: StackState, folder: Path, roles: list[str], child: str) -> Call:
    """Run `child` under agent-exec with `roles`; return what it wrote."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VAULT_", "PG", "AWS_"))
    }
    env.update(INHERITED_AWS)
    env.update(VAULT_ADDR=stack.vault_addr, AGENT_ATTESTOR_SOCKET=stack.attestor_socket)
    output = folder / "seen.json"
    role_args = [arg for role in roles for arg in ("--role", role)]
    result = subprocess.run(
        [AGENT_EXEC, *role_args, "--", sys.executable, "-c", child, str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return Call(result, json.loads(output.read_text()))


@pytest.fixture(scope="module")
def aws_call(stack: StackState, tmp_path_factory: pytest.TempPathFactory) -> Call:
    return run_call(stack, tmp_path_factory.mktemp("aws-call"), ["demo-aws"], AWS_CHILD)


def user_exists(stack: StackState, name: str) -> bool:
    return moto.user_exists(
        stack.aws_endpoint_url,
        stack.aws_admin_access_key,
        stack.aws_admin_secret_key,
        name,
    )


def caller_identity_error(stack: StackState, env: dict[str, str]) -> str:
    """Return the error code of GetCallerIdentity signed with `env`'s key."""
    sts = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=moto.REGION,
    ).client("sts", endpoint_url=stack.aws_endpoint_url)
    try:
        sts.get_caller_identity()
    except ClientError as err:
        return str(err.response["Error"]["Code"])
    return ""


def live_leases(stack: StackState) -> list[str]:
    admin = hvac.Client(url=stack.vault_addr, token=stack.root_token)
    try:
        listing = admin.adapter.request(
            "LIST", f"v1/sys/leases/lookup/{AWS_CREDS_PREFIX}"
        )
    except hvac.exceptions.InvalidPath:
        return []
    return list(listing["data"]["keys"])


def test_call_runs_as_per_call_user(aws_call: Call) -> None:
    assert aws_call.seen["arn"].startswith(USER_ARN_PREFIX)
    assert aws_call.iam_user != moto.ADMIN_USER


def test_per_call_key_limited_to_role_policy(aws_call: Call) -> None:
    # demo-aws allows sts:GetCallerIdentity and iam:GetUser, not ListUsers.
    assert aws_call.seen["list_users"] == "AccessDenied"


def test_iam_user_gone_after_call(stack: StackState, aws_call: Call) -> None:
    assert not user_exists(stack, aws_call.iam_user)


def test_per_call_key_rejected_after_call(stack: StackState, aws_call: Call) -> None:
    error = caller_identity_error(stack, aws_call.seen["env"])
    assert error == "InvalidClientTokenId"


def test_aws_lease_revoked_after_call(stack: StackState, aws_call: Call) -> None:
    assert live_leases(stack) == []


def test_child_gets_stack_endpoint(stack: StackState, aws_call: Call) -> None:
    env = aws_call.seen["env"]
    assert env["AWS_ENDPOINT_URL"] == stack.aws_endpoint_url
    assert env["AWS_REGION"] == moto.REGION
    assert env["AWS_DEFAULT_REGION"] == moto.REGION


def test_child_gets_no_inherited_aws(aws_call: Call) -> None:
    env = aws_call.seen["env"]
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SESSION_TOKEN"):
        assert name not in env
    for value in INHERITED_AWS.values():
        assert value not in env.values()
    assert sorted(env) == [
        "AWS_ACCESS_KEY_ID",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_SECRET_ACCESS_KEY",
    ]


def test_database_and_aws_roles_in_one_call(stack: StackState, tmp_path: Path) -> None:
    call = run_call(stack, tmp_path, ["demo-readonly", "demo-aws"], BOTH_CHILD)

    assert call.seen["pg_user"].startswith("v-dev-demo-readonly-")
    assert call.seen["arn"].startswith(USER_ARN_PREFIX)
    assert not role_exists(stack, call.seen["pg_user"])
    assert not user_exists(stack, call.iam_user)
    assert live_leases(stack) == []
