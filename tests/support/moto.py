"""A moto server on 127.0.0.1 that enforces IAM authentication, like AWS.

moto accepts any key until authentication is switched on. The fixture first
creates an IAM user `agent-bridge-admin` with an allow-everything inline
policy and one access key, then switches authentication on through moto's
`/moto-api/reset-auth`. From then on every call must be signed by a key
that exists in moto's IAM, so a deleted key is really rejected.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plugin.aws.client import KeyPair
from plugin.logical import Operation, Response
from tests.support.database import Mount, new_mount

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
ADMIN_USER = "agent-bridge-admin"
ALLOW_ALL = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
)
_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class MotoServer:
    """A running moto server and the admin key valid in it."""

    url: str
    process: subprocess.Popen[bytes]
    admin: KeyPair

    def client(self, service: str, keys: KeyPair | None = None) -> Any:
        """Return a boto3 client for this server, signed with `keys` or the admin's."""
        import boto3

        keys = keys or self.admin
        return boto3.session.Session().client(
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


def start_moto(log_path: Path) -> MotoServer:
    """Start moto_server on a free port, create the admin key, enforce auth."""
    from devstack.procs import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Only what moto needs: no AWS_* variable of the host may leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    binary = Path(sys.executable).with_name("moto_server")
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_ready(url, process)
        admin = _create_admin(url)
        _post(url + "/moto-api/reset-auth", b"0")
    except BaseException:
        stop_moto(process)
        raise
    return MotoServer(url, process, admin)


def stop_moto(process: subprocess.Popen[bytes]) -> None:
    """Stop the server by its PID (its own process group) and reap it."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):  # noqa: S310
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {url} within {_START_TIMEOUT} s")


def _create_admin(url: str) -> KeyPair:
    import boto3

    # Any key works before authentication is switched on.
    iam = boto3.session.Session().client(
        "iam",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName=ADMIN_USER)
    iam.put_user_policy(
        UserName=ADMIN_USER, PolicyName="allow-all", PolicyDocument=ALLOW_ALL
    )
    key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
    return KeyPair(key["AccessKeyId"], key["SecretAccessKey"])


def _post(url: str, body: bytes) -> None:
    # moto reads the raw body; a form content type would hide it.
    request = urllib.request.Request(  # noqa: S310 (an http URL built here)
        url, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        response.read()


def serve_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """Run a moto server for a fixture, stopped when the fixture ends.

    Test modules wrap it in their own `moto_server` fixture.
    """
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    server = start_moto(log_path)
    try:
        yield server
    finally:
        stop_moto(server.process)


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
