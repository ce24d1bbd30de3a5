"""A moto server on 127.0.0.1 that enforces IAM authentication, like AWS.

`devstack.moto` starts it: an admin user `agent-bridge-admin` with one key,
then authentication switched on, so a deleted key is really rejected. This
module wraps it for fixtures and adds helpers of the AWS backend tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devstack import moto
from devstack.moto import ACCOUNT_ID, ADMIN_USER, ALLOW_ALL, REGION
from devstack.procs import free_port, stop
from plugin.aws.client import KeyPair
from plugin.logical import Operation, Response
from tests.support.database import Mount, new_mount

__all__ = [
    "ACCOUNT_ID",
    "ADMIN_USER",
    "ALLOW_ALL",
    "REGION",
    "MotoServer",
    "assumable_role",
    "aws_creds",
    "aws_mount",
    "error_code_of",
    "serve_moto",
]


@dataclass(frozen=True)
class MotoServer:
    """A running moto server and the admin key valid in it."""

    url: str
    pid: int
    admin: KeyPair

    def client(self, service: str, keys: KeyPair | None = None) -> Any:
        """Return a boto3 client for this server, signed with `keys` or the admin's."""
        import boto3

        from plugin.aws.client import isolated_botocore_session

        keys = keys or self.admin
        session = boto3.session.Session(botocore_session=isolated_botocore_session())
        return session.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=keys.access_key,
            aws_secret_access_key=keys.secret_key,
            aws_session_token=keys.session_token or None,
        )

    def root_config(self, **overrides: Any) -> dict[str, Any]:
        """Return the fields of `aws/config/root` that point at this server."""
        fields: dict[str, Any] = {
            "access_key": self.admin.access_key,
            "secret_key": self.admin.secret_key,
            "region": REGION,
            "iam_endpoint": self.url,
            "sts_endpoint": self.url,
        }
        return {**fields, **overrides}


def serve_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """Run a moto server for a fixture, stopped when the fixture ends.

    Test modules wrap it in their own `moto_server` fixture.
    """
    started = moto.start(tmp_path_factory.mktemp("moto"), free_port())
    admin = KeyPair(started.admin_access_key, started.admin_secret_key)
    try:
        yield MotoServer(started.url, started.pid, admin)
    finally:
        stop("moto", started.pid)


def assumable_role(server: MotoServer, policy_document: str) -> str:
    """Create an IAM role the admin user may assume; return its ARN."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:user/{ADMIN_USER}"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam = server.client("iam")
    name = f"agents-{time.monotonic_ns()}"
    created = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=name, PolicyName="inline", PolicyDocument=policy_document
    )
    return str(created["Role"]["Arn"])


def aws_mount(server: MotoServer, **config: Any) -> Mount:
    """Return a fresh mount whose `aws/config/root` points at `server`."""
    mount = new_mount()
    mount.write("aws/config/root", **server.root_config(**config))
    return mount


def aws_creds(
    mount: Mount,
    role: str,
    agent: str,
    *,
    endpoint: str = "creds",
    operation: Operation = Operation.READ,
    **params: Any,
) -> Response:
    """Read `aws/ENDPOINT/ROLE` as `agent`, with `params` as Vault passes them."""
    entity_id = mount.system.add_agent(agent)
    response = mount.request(
        operation,
        f"aws/{endpoint}/{role}",
        params,
        entity_id=entity_id,
        display_name=f"jwt-{agent}",
        client_token_accessor=f"accessor-{agent}-{time.monotonic_ns()}",
    )
    assert response is not None
    return response


def error_code_of(call: Any) -> str:
    """Run `call` and return the AWS error code it raised, or "" on success."""
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as err:
        return str(err.response["Error"]["Code"])
    return ""
