"""The aws/ API as hvac and Terraform send it: config, lease, roles, errors.

Nothing here calls AWS: config and role writes are stored without a call.
Request bodies are the ones hvac 2.x builds in `api/secrets_engines/aws.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from devstack.stack import StackState
from plugin.aws.secret_access_keys import retry_for
from plugin.framework import list_wal
from plugin.logical import BadRequestError, Operation
from tests.support.database import Mount, new_mount
from tests.support.database_stack import admin_client, jwt_accessor, plugin_mount
from tests.support.moto import aws_creds

ROLE_ARN = "arn:aws:iam::123456789012:role/agents"
POLICY_ARN = "arn:aws:iam::123456789012:policy/reader"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}],
}


@pytest.fixture
def mount() -> Iterator[Mount]:
    result = new_mount()
    yield result
    result.backend.cleanup()


def read_data(mount: Mount, path: str) -> dict[str, object]:
    response = mount.read(path)
    assert response is not None
    return response.data


def configure_root(mount: Mount, **overrides: object) -> None:
    # configure_root_iam_credentials always sends max_retries, often as null.
    body = {
        "access_key": "AKIAEXAMPLEROOT00001",
        "secret_key": "root-secret",
        "max_retries": None,
        "region": "eu-west-1",
        "iam_endpoint": "http://127.0.0.1:9",
        "sts_endpoint": "http://127.0.0.1:9",
    }
    mount.request(Operation.UPDATE, "aws/config/root", {**body, **overrides})


def test_root_config_read_hides_secret(mount: Mount) -> None:
    configure_root(mount)

    data = read_data(mount, "aws/config/root")

    assert "secret_key" not in data
    assert "root-secret" not in json.dumps(data)
    assert data["access_key"] == "AKIAEXAMPLEROOT00001"
    assert data["max_retries"] == -1
    assert data["region"] == "eu-west-1"
    assert data["iam_endpoint"] == "http://127.0.0.1:9"
    assert data["key_ready_timeout"] == 30


def test_root_config_write_merges(mount: Mount) -> None:
    configure_root(mount)

    mount.write("aws/config/root", region="us-west-2", max_retries=2)

    data = read_data(mount, "aws/config/root")
    assert data["region"] == "us-west-2"
    assert data["max_retries"] == 2
    assert data["access_key"] == "AKIAEXAMPLEROOT00001"


def test_root_config_null_max_retries_kept(mount: Mount) -> None:
    configure_root(mount, max_retries=2)

    configure_root(mount, region=None)

    data = read_data(mount, "aws/config/root")
    # Vault would store 0, no retries; here hvac's null keeps the stored value.
    assert data["max_retries"] == 2
    assert data["region"] == ""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"access_key": "AKIANEW"}, "without secret_key"),
        ({"iam_endpoint": "localhost:4566"}, "invalid iam_endpoint"),
        ({"max_retries": -2}, "invalid max_retries"),
        ({"username_template": "{{.Nope}}"}, "unsupported username_template"),
        ({"username_template": "ab-{{.RoleName"}, "unclosed action at offset 3"),
        ({"username_template": "{{random 60}}-{{random 10}}"}, "at most 64"),
    ],
)
def test_root_config_rejects(
    mount: Mount, fields: dict[str, object], message: str
) -> None:
    configure_root(mount)

    with pytest.raises(BadRequestError, match=message):
        mount.write("aws/config/root", **fields)


def test_secret_key_error_redacts_value(mount: Mount) -> None:
    with pytest.raises(BadRequestError) as raised:
        mount.write("aws/config/root", access_key="AKIA1", secret_key={"x": "s3cr3t"})

    assert "s3cr3t" not in str(raised.value)


def test_lease_config_round_trip(mount: Mount) -> None:
    mount.request(
        Operation.UPDATE, "aws/config/lease", {"lease": "1h", "lease_max": "36h30m"}
    )

    data = read_data(mount, "aws/config/lease")

    assert data == {"lease": "1h0m0s", "lease_max": "36h30m0s"}


def test_lease_config_requires_both(mount: Mount) -> None:
    with pytest.raises(BadRequestError, match="lease_max"):
        mount.write("aws/config/lease", lease="1h")
    assert mount.read("aws/config/lease") is None


def test_hvac_role_create_read_list_delete(mount: Mount) -> None:
    # create_or_update_role turns a dict policy into indented JSON.
    body = {
        "credential_type": "iam_user",
        "policy_document": json.dumps(POLICY, indent=4, sort_keys=True),
        "policy_arns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"],
        "iam_tags": ["team=data", "env=dev"],
    }
    mount.request(Operation.UPDATE, "aws/roles/reader", body)

    data = read_data(mount, "aws/roles/reader")
    assert data["credential_type"] == "iam_user"
    assert json.loads(str(data["policy_document"])) == POLICY
    assert "\n" not in str(data["policy_document"])
    assert data["policy_arns"] == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    assert data["iam_tags"] == {"team": "data", "env": "dev"}
    assert data["default_sts_ttl"] == 0
    assert data["allowed_agents"] == []
    listed = mount.request(Operation.LIST, "aws/roles/")
    assert listed is not None
    assert listed.data["keys"] == ["reader"]

    assert mount.request(Operation.DELETE, "aws/roles/reader") is None
    assert mount.read("aws/roles/reader") is None


def test_terraform_role_shape(mount: Mount) -> None:
    # vault_aws_secret_backend_role sends sets as lists and TTLs as strings.
    mount.write(
        "aws/roles/sts",
        credential_type="assumed_role",
        role_arns=[ROLE_ARN],
        policy_arns=[],
        iam_groups=[],
        default_sts_ttl="900",
        max_sts_ttl="3600",
        session_tags={"team": "data"},
        external_id="ext-1",
    )

    data = read_data(mount, "aws/roles/sts")

    assert data["role_arns"] == [ROLE_ARN]
    assert data["default_sts_ttl"] == 900
    assert data["max_sts_ttl"] == 3600
    assert data["session_tags"] == {"team": "data"}


def test_role_update_keeps_other_fields(mount: Mount) -> None:
    mount.write(
        "aws/roles/reader", credential_type="iam_user", policy_arns=[POLICY_ARN]
    )

    mount.write("aws/roles/reader", allowed_agents="dev,ops-*")

    data = read_data(mount, "aws/roles/reader")
    assert data["credential_type"] == "iam_user"
    assert data["policy_arns"] == [POLICY_ARN]
    assert data["allowed_agents"] == ["dev", "ops-*"]


def test_role_update_with_null_clears(mount: Mount) -> None:
    mount.write(
        "aws/roles/reader",
        credential_type="iam_user",
        policy_arns=[POLICY_ARN],
        iam_tags={"team": "data"},
        allowed_agents="dev",
        default_ttl=600,
    )
    # Terraform sends null for an optional attribute the user removed.
    body = {"policy_arns": None, "iam_tags": None, "default_ttl": None}
    mount.request(Operation.UPDATE, "aws/roles/reader", body)

    data = read_data(mount, "aws/roles/reader")
    assert data["policy_arns"] == []
    assert data["iam_tags"] == {}
    # A null duration counts as absent, as in Vault: the stored value stays.
    assert data["default_ttl"] == 600
    assert data["allowed_agents"] == ["dev"]
    assert data["credential_type"] == "iam_user"


@pytest.mark.stack
def test_null_through_openbao_clears(stack: StackState) -> None:
    admin = admin_client(stack)
    with plugin_mount(admin, "agent-creds-aws-null", jwt_accessor=jwt_accessor(admin)):
        path = "agent-creds-aws-null/aws/roles/reader"
        admin.write(
            path,
            credential_type="iam_user",
            policy_arns=[POLICY_ARN],
            allowed_agents="dev",
        )
        # The raw JSON body that Terraform sends for a removed attribute.
        reply = requests.post(
            f"{stack.vault_addr}/v1/{path}",
            headers={"X-Vault-Token": stack.root_token},
            data='{"policy_arns": null}',
            timeout=30,
        )
        assert reply.status_code == 204, reply.text

        data = admin.read(path)["data"]
        assert data["policy_arns"] == []
        assert data["allowed_agents"] == ["dev"]
        assert data["credential_type"] == "iam_user"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "missing credential_type"),
        ({"credential_type": "root"}, "unsupported credential_type"),
        ({"credential_type": "iam_user", "role_arns": ROLE_ARN}, "role_arns applies"),
        ({"credential_type": "assumed_role"}, "assumed_role needs role_arns"),
        (
            {"credential_type": "assumed_role", "role_arns": ROLE_ARN, "max_ttl": 60},
            "max_ttl applies only to credential_type iam_user",
        ),
        (
            {
                "credential_type": "assumed_role",
                "role_arns": ROLE_ARN,
                "default_sts_ttl": 300,
            },
            "below 900 s",
        ),
        (
            {
                "credential_type": "assumed_role",
                "role_arns": ROLE_ARN,
                "default_sts_ttl": 7200,
                "max_sts_ttl": 3600,
            },
            "default_sts_ttl must be less",
        ),
        ({"credential_type": "iam_user", "user_path": "agents"}, "invalid user_path"),
        (
            {"credential_type": "iam_user", "deny_older_sessions_on_revoke": True},
            "deny_older_sessions_on_revoke applies",
        ),
        ({"credential_type": "iam_user", "policy_document": "{"}, "not valid JSON"),
        ({"credential_type": "iam_user", "iam_tags": ["novalue"]}, "key=value"),
        ({"credential_type": "iam_user", "policy_arns": "ReadOnly"}, "policy ARN"),
        (
            # Arabic-Indic digits: Python's Unicode \d would take them.
            {"credential_type": "iam_user", "policy_arns": POLICY_ARN[:13] + "\u0661"},
            "policy ARN",
        ),
        (
            {
                "credential_type": "iam_user",
                "permissions_boundary_arn": POLICY_ARN + "\n",
            },
            "invalid permissions_boundary_arn",
        ),
        (
            {"credential_type": "session_token", "policy_document": json.dumps(POLICY)},
            "session_token credentials take no policy",
        ),
    ],
)
def test_role_rejects(mount: Mount, fields: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        mount.write("aws/roles/bad", **fields)

    assert mount.read("aws/roles/bad") is None


def test_role_null_credential_type_rejected(mount: Mount) -> None:
    # Vault's AWS engine requires credential_type; a JSON null reads as "".
    with pytest.raises(BadRequestError, match="missing credential_type: use one of"):
        mount.request(Operation.UPDATE, "aws/roles/r", {"credential_type": None})
    assert mount.read("aws/roles/r") is None

    mount.write("aws/roles/r", credential_type="iam_user", policy_arns=POLICY_ARN)
    with pytest.raises(BadRequestError, match="missing credential_type"):
        mount.request(Operation.UPDATE, "aws/roles/r", {"credential_type": None})

    assert read_data(mount, "aws/roles/r")["credential_type"] == "iam_user"


def test_legacy_policy_parameter(mount: Mount) -> None:
    # hvac's legacy_params=True sends policy and arn, here without an arn.
    body = {"policy": json.dumps(POLICY), "arn": None}
    response = mount.request(Operation.UPDATE, "aws/roles/legacy", body)

    assert response is not None
    assert "deprecated" in response.warnings[0]
    data = read_data(mount, "aws/roles/legacy")
    assert data["credential_type"] == "iam_user"
    assert json.loads(str(data["policy_document"])) == POLICY


def test_legacy_role_arn_parameter(mount: Mount) -> None:
    mount.write("aws/roles/legacy", arn=ROLE_ARN)

    data = read_data(mount, "aws/roles/legacy")

    assert data["credential_type"] == "assumed_role"
    assert data["role_arns"] == [ROLE_ARN]


def test_unknown_role_field_warns(mount: Mount) -> None:
    response = mount.write("aws/roles/r", credential_type="iam_user", colour="blue")

    assert response is not None
    assert "colour" in response.warnings[0]


def test_creds_for_unknown_role(mount: Mount) -> None:
    configure_root(mount)

    with pytest.raises(BadRequestError, match="unknown role 'nope'"):
        aws_creds(mount, "nope", "dev")


def test_creds_without_root_config(mount: Mount) -> None:
    mount.write("aws/roles/r", credential_type="iam_user", allowed_agents="dev")

    with pytest.raises(BadRequestError, match="aws/config/root is not configured"):
        aws_creds(mount, "r", "dev")

    assert list_wal(mount.storage) == []


def test_backend_starts_without_boto3() -> None:
    code = (
        "import sys\n"
        "from plugin.backend import new_backend\n"
        "new_backend()\n"
        "print('boto3' in sys.modules, 'botocore' in sys.modules)\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert found.stdout.split() == ["False", "False"]


def test_retry_for_retries_then_succeeds() -> None:
    failures = [RuntimeError("throttled"), RuntimeError("throttled")]

    def attempt() -> bool:
        if failures:
            raise failures.pop()
        return True

    assert retry_for(5, attempt, lambda err: True, "u") is True
    assert failures == []


def test_retry_for_raises_permanent_error() -> None:
    calls = []

    def attempt() -> bool:
        calls.append(1)
        raise ValueError("AccessDenied")

    with pytest.raises(ValueError, match="AccessDenied"):
        retry_for(5, attempt, lambda err: False, "u")
    assert len(calls) == 1


def test_retry_for_stops_at_deadline() -> None:
    calls = []

    def attempt() -> bool:
        calls.append(1)
        raise RuntimeError("still throttled")

    with pytest.raises(RuntimeError, match="still throttled"):
        retry_for(1, attempt, lambda err: True, "u")
    assert 1 < len(calls) <= 3
