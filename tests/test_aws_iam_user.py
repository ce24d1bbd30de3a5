"""iam_user credentials against a moto server that enforces IAM authentication."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from plugin.aws import client, secret_access_keys
from plugin.aws.backend import AwsBackend
from plugin.aws.client import KeyPair
from plugin.aws.errors import AwsUnavailableError, RequestCancelledError
from plugin.framework.wal import WAL_PREFIX, list_wal
from plugin.logical import Operation, PermissionDeniedError, Secret
from tests.support.database import Mount
from tests.support.moto import (
    ACCOUNT_ID,
    MotoServer,
    aws_creds,
    aws_mount,
    error_code_of,
    serve_moto,
)

SELF_SERVICE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "iam:CreateLoginProfile",
                    "iam:CreateAccessKey",
                    "iam:AttachUserPolicy",
                    "iam:AddUserToGroup",
                    "iam:PutUserPolicy",
                ],
                "Resource": "*",
            }
        ],
    }
)


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from serve_moto(tmp_path_factory)


@pytest.fixture
def mount(moto_server: MotoServer) -> Mount:
    return aws_mount(moto_server)


def add_role(mount: Mount, name: str = "demo-aws", **fields: Any) -> None:
    values = {
        "credential_type": "iam_user",
        "policy_document": SELF_SERVICE,
        "allowed_agents": "dev",
    }
    mount.write(f"aws/roles/{name}", **{**values, **fields})


def keys_of(data: dict[str, Any]) -> KeyPair:
    return KeyPair(data["access_key"], data["secret_key"])


def user_exists(server: MotoServer, username: str) -> bool:
    iam = server.client("iam")
    return error_code_of(lambda: iam.get_user(UserName=username)) != "NoSuchEntity"


def managed_policy(server: MotoServer) -> str:
    """Create a customer managed policy; moto loads no AWS managed ones."""
    document = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:List*", "Resource": "*"}],
        }
    )
    name = f"list-buckets-{time.monotonic_ns()}"
    created = server.client("iam").create_policy(
        PolicyName=name, PolicyDocument=document
    )
    return str(created["Policy"]["Arn"])


def caller_arn(server: MotoServer, keys: KeyPair) -> str:
    return str(server.client("sts", keys).get_caller_identity()["Arn"])


def finish_deferred(mount: Mount) -> None:
    """Run now the WAL deletes that creds reads defer until after the response."""
    mount.backend.cleanup()


def revoke(mount: Mount, secret: Secret | None) -> Any:
    assert secret is not None
    return mount.request(Operation.REVOKE, "aws/creds/x", secret=secret)


def test_creds_shape_and_working_key(mount: Mount, moto_server: MotoServer) -> None:
    add_role(mount)

    response = aws_creds(mount, "demo-aws", "dev")

    data = response.data
    assert data["access_key"].startswith("AKIA")
    assert data["secret_key"]
    assert data["session_token"] is None
    assert data["security_token"] is None
    assert data["region"] == "us-east-1"
    assert data["endpoint_url"] == moto_server.url
    username = caller_arn(moto_server, keys_of(data)).rsplit("/", 1)[-1]
    assert username.startswith("ab-dev-demo-aws-")
    assert len(username) <= 64
    assert response.secret is not None
    assert response.secret.lease.renewable
    internal = response.secret.internal_data
    assert internal["username"] == username
    assert internal["agent"] == "dev"
    assert internal["key_verified"] is True
    assert data["secret_key"] not in json.dumps(internal)
    revoke(mount, response.secret)


def test_user_tags_name_agent_and_call(mount: Mount, moto_server: MotoServer) -> None:
    add_role(mount, iam_tags=["team=data", "cost=7"])

    response = aws_creds(mount, "demo-aws", "dev")

    assert response.secret is not None
    username = response.secret.internal_data["username"]
    listed = moto_server.client("iam").list_user_tags(UserName=username)["Tags"]
    tags = {t["Key"]: t["Value"] for t in listed}
    assert tags["agent-bridge:agent"] == "dev"
    assert tags["agent-bridge:role"] == "demo-aws"
    assert tags["agent-bridge:token-accessor"].startswith("accessor-dev-")
    assert tags["team"] == "data"
    assert tags["cost"] == "7"
    revoke(mount, response.secret)


def test_revoke_removes_what_holder_added(
    mount: Mount, moto_server: MotoServer
) -> None:
    admin = moto_server.client("iam")
    group = f"holders-{time.monotonic_ns()}"
    admin.create_group(GroupName=group)
    add_role(mount)
    response = aws_creds(mount, "demo-aws", "dev")
    assert response.secret is not None
    username = response.secret.internal_data["username"]
    issued = keys_of(response.data)

    # The holder uses its own key to entrench itself in its own user.
    holder = moto_server.client("iam", issued)
    holder.create_login_profile(UserName=username, Password="Str0ng-Passw0rd!")
    second = holder.create_access_key(UserName=username)["AccessKey"]
    holder.attach_user_policy(UserName=username, PolicyArn=managed_policy(moto_server))
    holder.add_user_to_group(UserName=username, GroupName=group)
    second_keys = KeyPair(second["AccessKeyId"], second["SecretAccessKey"])
    assert caller_arn(moto_server, second_keys).endswith("/" + username)

    assert revoke(mount, response.secret) is None

    assert not user_exists(moto_server, username)
    for keys in (issued, second_keys):
        sts = moto_server.client("sts", keys)
        assert error_code_of(sts.get_caller_identity) == "InvalidClientTokenId"
    members = admin.get_group(GroupName=group)["Users"]
    assert username not in [u["UserName"] for u in members]


def test_revoke_of_deleted_user_is_immediate(
    mount: Mount, moto_server: MotoServer
) -> None:
    add_role(mount)
    response = aws_creds(mount, "demo-aws", "dev")
    assert response.secret is not None
    username = response.secret.internal_data["username"]
    admin = moto_server.client("iam")
    admin.delete_user_policy(UserName=username, PolicyName="demo-aws")
    admin.delete_user(UserName=username)

    started = time.monotonic()
    assert revoke(mount, response.secret) is None

    assert time.monotonic() - started < 5


def test_revoke_twice_succeeds(mount: Mount, moto_server: MotoServer) -> None:
    add_role(mount)
    secret = aws_creds(mount, "demo-aws", "dev").secret

    revoke(mount, secret)

    assert revoke(mount, secret) is None


def test_denied_agent_creates_nothing(mount: Mount, moto_server: MotoServer) -> None:
    add_role(mount, allowed_agents="ops-*")
    before = moto_server.client("iam").list_users()["Users"]

    with pytest.raises(PermissionDeniedError, match="'dev' is not in allowed_agents"):
        aws_creds(mount, "demo-aws", "dev")

    after = moto_server.client("iam").list_users()["Users"]
    assert len(after) == len(before)
    assert list_wal(mount.storage) == []


def test_cancelled_read_deletes_user(mount: Mount, moto_server: MotoServer) -> None:
    """A read that Vault cancelled deletes the user it created."""
    add_role(mount)
    before = moto_server.client("iam").list_users()["Users"]
    entity_id = mount.system.add_agent("dev")

    with pytest.raises(RequestCancelledError, match="was deleted"):
        mount.request(
            Operation.READ,
            "aws/creds/demo-aws",
            entity_id=entity_id,
            is_cancelled=lambda: True,
        )

    after = moto_server.client("iam").list_users()["Users"]
    assert len(after) == len(before)
    assert list_wal(mount.storage) == []


def test_empty_allowed_agents_denies(mount: Mount, moto_server: MotoServer) -> None:
    add_role(mount, allowed_agents="")

    with pytest.raises(PermissionDeniedError, match="allows no agents"):
        aws_creds(mount, "demo-aws", "dev")


def test_lease_ttls_follow_config_and_role(mount: Mount) -> None:
    mount.write("aws/config/lease", lease="30m", lease_max="2h")
    add_role(mount)
    add_role(mount, "capped", max_ttl="10m")

    plain = aws_creds(mount, "demo-aws", "dev").secret
    capped = aws_creds(mount, "capped", "dev").secret

    assert plain is not None and capped is not None
    assert (plain.lease.ttl, plain.lease.max_ttl) == (1800, 7200)
    assert (capped.lease.ttl, capped.lease.max_ttl) == (600, 600)
    revoke(mount, plain)
    revoke(mount, capped)


def test_renew_extends_iam_user_lease(mount: Mount) -> None:
    add_role(mount, default_ttl="5m", max_ttl="1h")
    secret = aws_creds(mount, "demo-aws", "dev").secret
    assert secret is not None
    secret.lease.increment = 600

    renewed = mount.request(Operation.RENEW, "aws/creds/x", secret=secret)

    assert renewed is not None and renewed.secret is not None
    assert renewed.secret.lease.ttl == 600
    revoke(mount, secret)


def test_rollback_deletes_orphan_user(mount: Mount, moto_server: MotoServer) -> None:
    add_role(mount)
    response = aws_creds(mount, "demo-aws", "dev")
    assert response.secret is not None
    username = response.secret.internal_data["username"]
    finish_deferred(mount)
    # A crash between CreateUser and the lease leaves only the WAL entry.
    record = {
        "kind": "aws-user",
        "data": {"username": username, "role": "demo-aws", "agent": "dev"},
        "created_at": time.time() - 3600,
    }
    mount.storage.put(WAL_PREFIX + "orphan", json.dumps(record).encode())

    mount.request(Operation.ROLLBACK, "")

    assert not user_exists(moto_server, username)
    assert list_wal(mount.storage) == []


def age_wal(mount: Mount, seconds: float) -> None:
    """Move every WAL entry's creation time `seconds` into the past."""
    for entry_id in list_wal(mount.storage):
        key = WAL_PREFIX + entry_id
        entry = mount.storage.get(key)
        assert entry is not None
        record = json.loads(entry)
        record["created_at"] -= seconds
        mount.storage.put(key, json.dumps(record).encode())


def test_wal_outlives_response(
    mount: Mount, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin killed right after the response leaves the user to the rollback."""
    add_role(mount)
    deferred: list[object] = []
    # The plugin dies before any deferred call runs.
    monkeypatch.setattr(AwsBackend, "defer", lambda self, *call: deferred.append(call))

    response = aws_creds(mount, "demo-aws", "dev")

    assert response.secret is not None
    username = response.secret.internal_data["username"]
    assert user_exists(moto_server, username)
    assert len(deferred) == 1
    assert len(list_wal(mount.storage)) == 1
    age_wal(mount, 3600)
    mount.request(Operation.ROLLBACK, "")
    assert not user_exists(moto_server, username)
    assert list_wal(mount.storage) == []
    revoke(mount, response.secret)


def test_deferred_wal_delete_keeps_user(mount: Mount, moto_server: MotoServer) -> None:
    """The WAL delete runs after the response, and the rollback then keeps the user."""
    add_role(mount)
    response = aws_creds(mount, "demo-aws", "dev")
    assert response.secret is not None
    username = response.secret.internal_data["username"]
    assert len(list_wal(mount.storage)) == 1

    finish_deferred(mount)

    assert list_wal(mount.storage) == []
    mount.request(Operation.ROLLBACK, "")
    assert user_exists(moto_server, username)
    revoke(mount, response.secret)
    assert not user_exists(moto_server, username)


def test_policy_arns_and_groups_attach(mount: Mount, moto_server: MotoServer) -> None:
    admin = moto_server.client("iam")
    group = f"readers-{time.monotonic_ns()}"
    admin.create_group(GroupName=group)
    arn = managed_policy(moto_server)
    add_role(mount, policy_arns=arn, iam_groups=group, user_path="/agents/")

    response = aws_creds(mount, "demo-aws", "dev")

    assert response.secret is not None
    username = response.secret.internal_data["username"]
    user = admin.get_user(UserName=username)["User"]
    assert user["Path"] == "/agents/"
    assert user["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/agents/{username}"
    attached = admin.list_attached_user_policies(UserName=username)
    assert [p["PolicyArn"] for p in attached["AttachedPolicies"]] == [arn]
    groups = admin.list_groups_for_user(UserName=username)["Groups"]
    assert [g["GroupName"] for g in groups] == [group]
    revoke(mount, response.secret)
    assert not user_exists(moto_server, username)


def test_failed_create_rolls_back_at_once(
    mount: Mount, moto_server: MotoServer
) -> None:
    add_role(mount, iam_groups="no-such-group")
    before = len(moto_server.client("iam").list_users()["Users"])

    with pytest.raises(Exception, match="NoSuchEntity"):
        aws_creds(mount, "demo-aws", "dev")

    assert len(moto_server.client("iam").list_users()["Users"]) == before
    assert list_wal(mount.storage) == []


def test_taken_name_keeps_other_user(moto_server: MotoServer) -> None:
    """A read whose generated name exists fails and leaves that user and its key."""
    admin = moto_server.client("iam")
    name = f"taken-{time.monotonic_ns()}"
    admin.create_user(UserName=name)
    key = admin.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"]
    mount = aws_mount(moto_server, username_template=name)
    add_role(mount)

    with pytest.raises(Exception, match="EntityAlreadyExists"):
        aws_creds(mount, "demo-aws", "dev")

    assert user_exists(moto_server, name)
    listed = admin.list_access_keys(UserName=name)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in listed] == [key]
    assert list_wal(mount.storage) == []


def test_repeated_name_keeps_first_lease(moto_server: MotoServer) -> None:
    """A template without randomness fails the second read, not the first lease."""
    name = f"fixed-{time.monotonic_ns()}"
    mount = aws_mount(moto_server, username_template=name)
    add_role(mount)
    first = aws_creds(mount, "demo-aws", "dev")

    with pytest.raises(Exception, match="EntityAlreadyExists"):
        aws_creds(mount, "demo-aws", "dev")

    assert caller_arn(moto_server, keys_of(first.data)).endswith(f":user/{name}")
    finish_deferred(mount)
    assert list_wal(mount.storage) == []
    revoke(mount, first.secret)
    assert not user_exists(moto_server, name)


class FirstCreateUserLost:
    """HTTP proxy to moto that drops the response to the first CreateUser.

    moto creates the user, and the proxy keeps the connection open without a
    response until botocore's read timeout sends the retry, which then finds
    the user that the first attempt created. This is the order of events of a
    response lost on the network, independent of timing.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.retried = threading.Event()
        self.lost = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers, payload = proxy.forward(self, body)
                if b"Action=CreateUser" in body and not proxy.retried.is_set():
                    if proxy.lost:
                        proxy.retried.set()
                    else:
                        proxy.lost += 1
                        # Send no response until the retry has received one.
                        proxy.retried.wait(30)
                        self.close_connection = True
                        return
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in {"transfer-encoding", "connection"}:
                        self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(
        self, request: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        # The Host header goes unchanged: it is part of the SigV4 signature.
        conn = http.client.HTTPConnection(
            self.upstream.hostname or "", self.upstream.port, timeout=30
        )
        try:
            conn.request("POST", request.path, body, dict(request.headers.items()))
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def close(self) -> None:
        self.retried.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_retried_create_deletes_own_user(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CreateUser retried after a lost response deletes the user it created."""
    monkeypatch.setattr(client, "READ_TIMEOUT", 1)
    name = f"retried-{time.monotonic_ns()}"
    proxy = FirstCreateUserLost(moto_server.url)
    mount = aws_mount(moto_server, username_template=name, iam_endpoint=proxy.url)
    add_role(mount)
    try:
        with pytest.raises(Exception, match="EntityAlreadyExists"):
            aws_creds(mount, "demo-aws", "dev")
    finally:
        proxy.close()

    assert proxy.lost == 1
    assert proxy.retried.is_set()
    assert not user_exists(moto_server, name)
    assert list_wal(mount.storage) == []


def test_username_template_renders(moto_server: MotoServer) -> None:
    template = "agent-{{.Agent}}-{{.PolicyName | uppercase}}-{{random 6}}"
    mount = aws_mount(moto_server, username_template=template)
    add_role(mount)

    response = aws_creds(mount, "demo-aws", "dev")

    assert response.secret is not None
    username = response.secret.internal_data["username"]
    assert username.startswith("agent-dev-DEMO-AWS-")
    assert len(username) == len("agent-dev-DEMO-AWS-") + 6
    assert user_exists(moto_server, username)
    revoke(mount, response.secret)


def test_missing_fresh_unverified_user_retries(
    mount: Mount, moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secret_access_keys, "REVOKE_DEADLINE", 1.0)
    add_role(mount, key_ready_timeout=0)
    response = aws_creds(mount, "demo-aws", "dev")
    assert response.secret is not None
    assert response.secret.internal_data["key_verified"] is False
    username = response.secret.internal_data["username"]
    admin = moto_server.client("iam")
    admin.delete_user_policy(UserName=username, PolicyName="demo-aws")
    admin.delete_access_key(UserName=username, AccessKeyId=response.data["access_key"])
    admin.delete_user(UserName=username)

    # IAM may not show a user this fresh yet, so "not found" is not trusted.
    with pytest.raises(AwsUnavailableError, match="eventually consistent"):
        revoke(mount, response.secret)

    response.secret.lease.issue_time -= secret_access_keys.PROPAGATION_GRACE + 1
    assert revoke(mount, response.secret) is None
