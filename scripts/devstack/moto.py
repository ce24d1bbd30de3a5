"""moto_server on 127.0.0.1, standing in for IAM and STS, with authentication on.

moto accepts any key until authentication is switched on. `start` creates an
IAM user `agent-bridge-admin` with an allow-all inline policy and one access
key, then switches authentication on through moto's `/moto-api/reset-auth`.
From then on every request must be signed by a key that exists in moto's
IAM, so a deleted key is rejected as AWS would reject it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.procs import spawn, stop, wait_until

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
ADMIN_USER = "agent-bridge-admin"
ALLOW_ALL = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
)
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Moto:
    """A running moto server and the administrator key valid in it."""

    url: str
    pid: int
    admin_access_key: str
    admin_secret_key: str = field(repr=False)
    log_path: Path


def start(state_dir: Path, port: int) -> Moto:
    """Start moto_server on `port`, create the admin key, enforce authentication."""
    home = state_dir / "moto"
    log_path = home / "moto.log"
    url = f"http://127.0.0.1:{port}"
    binary = Path(sys.executable).with_name("moto_server")
    # No AWS_* variable of the host may change how moto behaves.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    argv = [str(binary), "-H", "127.0.0.1", "-p", str(port)]
    pid = spawn("moto", argv, log_path=log_path, env=env)
    try:
        wait_until(
            "moto",
            lambda: _answers(url),
            timeout=START_TIMEOUT,
            pid=pid,
            log_path=log_path,
        )
        access_key, secret_key = _create_admin(url)
        _enforce_auth(url)
    except BaseException:
        stop("moto", pid)
        raise
    log.info("moto serves IAM and STS at %s with authentication on", url)
    return Moto(url, pid, access_key, secret_key, log_path)


def iam_client(url: str, access_key: str, secret_key: str) -> IAMClient:
    """Return a boto3 IAM client for the moto server at `url`."""
    import boto3

    # Keys, region and endpoint are explicit, so the host's AWS_* variables
    # and ~/.aws files cannot send the client anywhere but `url`.
    import botocore.session

    # A missing profile named by AWS_PROFILE would fail even with explicit keys.
    core = botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        botocore_session=core,
    )
    return session.client("iam", endpoint_url=url)


def user_exists(url: str, access_key: str, secret_key: str, name: str) -> bool:
    """Return whether IAM user `name` exists, asked with the given key."""
    iam = iam_client(url, access_key, secret_key)
    try:
        iam.get_user(UserName=name)
    except iam.exceptions.NoSuchEntityException:
        return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/moto-api/", timeout=1):  # noqa: S310
            return True
    except (urllib.error.URLError, OSError):
        return False


def _create_admin(url: str) -> tuple[str, str]:
    # Any key is accepted before authentication is switched on.
    iam = iam_client(url, "bootstrap", "bootstrap")
    iam.create_user(UserName=ADMIN_USER)
    iam.put_user_policy(
        UserName=ADMIN_USER, PolicyName="allow-all", PolicyDocument=ALLOW_ALL
    )
    key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _enforce_auth(url: str) -> None:
    """Switch authentication on: from now on, moto rejects unsigned requests."""
    # moto reads the raw body as the count; a form content type would hide it.
    request = urllib.request.Request(  # noqa: S310 (an http URL built here)
        url + "/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        response.read()
