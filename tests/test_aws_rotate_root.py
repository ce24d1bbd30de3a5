"""aws/config/rotate-root and its rollback, against moto with auth on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from plugin.aws.backend import AwsBackend, Clients
from plugin.aws.client import KeyPair, iam_client, sts_client
from plugin.aws.config import load_root
from plugin.framework.wal import WAL_PREFIX, list_wal
from plugin.logical import BadRequestError, Operation, Storage
from tests.support.database import Mount
from tests.support.moto import (
    ALLOW_ALL,
    MotoServer,
    aws_creds,
    aws_mount,
    error_code_of,
    serve_moto,
)


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from serve_moto(tmp_path_factory)


@pytest.fixture
def rotator(moto_server: MotoServer) -> tuple[str, KeyPair]:
    """A fresh admin user with one key, so rotating it spares the fixture's key."""
    iam = moto_server.client("iam")
    name = f"rotator-{time.monotonic_ns()}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return name, KeyPair(key["AccessKeyId"], key["SecretAccessKey"])


@pytest.fixture
def mount(moto_server: MotoServer, rotator: tuple[str, KeyPair]) -> Mount:
    _, keys = rotator
    return aws_mount(
        moto_server, access_key=keys.access_key, secret_key=keys.secret_key
    )


def key_ids(server: MotoServer, username: str) -> list[str]:
    listed = server.client("iam").list_access_keys(UserName=username)
    return [k["AccessKeyId"] for k in listed["AccessKeyMetadata"]]


def stored_key(mount: Mount) -> str:
    response = mount.read("aws/config/root")
    assert response is not None
    return str(response.data["access_key"])


def works(server: MotoServer, keys: KeyPair) -> bool:
    sts = server.client("sts", keys)
    return error_code_of(sts.get_caller_identity) == ""


def put_wal_entry(mount: Mount, data: dict[str, object]) -> None:
    record = {"kind": "aws-rotate-root", "data": data, "created_at": time.time() - 3600}
    mount.storage.put(WAL_PREFIX + "rotation", json.dumps(record).encode())


def test_rotate_keeps_one_working_key(
    mount: Mount, moto_server: MotoServer, rotator: tuple[str, KeyPair]
) -> None:
    username, old = rotator

    response = mount.write("aws/config/rotate-root")

    assert response is not None
    new_id = response.data["access_key"]
    assert new_id != old.access_key
    assert stored_key(mount) == new_id
    assert key_ids(moto_server, username) == [new_id]
    assert not works(moto_server, old)
    assert list_wal(mount.storage) == []
    # The rotated key is the one the plugin now signs with.
    mount.write("aws/roles/after", credential_type="iam_user", allowed_agents="dev")
    secret = aws_creds(mount, "after", "dev").secret
    assert mount.request(Operation.REVOKE, "aws/creds/x", secret=secret) is None


def test_rotate_without_free_slot_changes_nothing(
    mount: Mount, moto_server: MotoServer, rotator: tuple[str, KeyPair]
) -> None:
    username, old = rotator
    moto_server.client("iam").create_access_key(UserName=username)

    with pytest.raises(BadRequestError, match="LimitExceeded"):
        mount.write("aws/config/rotate-root")

    assert stored_key(mount) == old.access_key
    assert works(moto_server, old)
    assert list_wal(mount.storage) == []


def test_rollback_deletes_unstored_new_key(
    mount: Mount, moto_server: MotoServer, rotator: tuple[str, KeyPair]
) -> None:
    username, old = rotator
    # A crash after CreateAccessKey, before the config was saved.
    created = moto_server.client("iam").create_access_key(UserName=username)
    new_id = created["AccessKey"]["AccessKeyId"]
    put_wal_entry(
        mount,
        {
            "username": username,
            "old_access_key": old.access_key,
            "new_access_key": new_id,
            "started_at": time.time() - 3600,
        },
    )

    mount.request(Operation.ROLLBACK, "")

    assert key_ids(moto_server, username) == [old.access_key]
    assert works(moto_server, old)
    assert list_wal(mount.storage) == []


def test_rollback_deletes_key_never_seen(
    mount: Mount, moto_server: MotoServer, rotator: tuple[str, KeyPair]
) -> None:
    username, old = rotator
    started = time.time()
    # A crash while CreateAccessKey ran: the secret of its key was never seen.
    moto_server.client("iam").create_access_key(UserName=username)
    put_wal_entry(
        mount,
        {"username": username, "old_access_key": old.access_key, "started_at": started},
    )

    mount.request(Operation.ROLLBACK, "")

    assert key_ids(moto_server, username) == [old.access_key]
    assert list_wal(mount.storage) == []


def test_rollback_finishes_saved_rotation(
    mount: Mount, moto_server: MotoServer, rotator: tuple[str, KeyPair]
) -> None:
    username, old = rotator
    created = moto_server.client("iam").create_access_key(UserName=username)
    new = KeyPair(
        created["AccessKey"]["AccessKeyId"], created["AccessKey"]["SecretAccessKey"]
    )
    # A crash after the config was saved, before the old key was deleted.
    mount.write("aws/config/root", access_key=new.access_key, secret_key=new.secret_key)
    put_wal_entry(
        mount,
        {
            "username": username,
            "old_access_key": old.access_key,
            "new_access_key": new.access_key,
            "started_at": time.time() - 3600,
        },
    )

    mount.request(Operation.ROLLBACK, "")

    assert key_ids(moto_server, username) == [new.access_key]
    assert not works(moto_server, old)
    assert works(moto_server, new)


@pytest.mark.parametrize("new_seen", [True, False])
def test_initialize_deletes_cut_rotation_key(
    mount: Mount, moto_server: MotoServer, rotator: tuple[str, KeyPair], new_seen: bool
) -> None:
    """A rotation cut before the save loses its new key when the plugin restarts."""
    username, old = rotator
    started = time.time()
    created = moto_server.client("iam").create_access_key(UserName=username)
    data: dict[str, object] = {
        "username": username,
        "old_access_key": old.access_key,
        "started_at": started,
    }
    if new_seen:
        data["new_access_key"] = created["AccessKey"]["AccessKeyId"]
    # A fresh entry, which the periodic rollback would leave for 10 minutes.
    record = {"kind": "aws-rotate-root", "data": data, "created_at": time.time()}
    mount.storage.put(WAL_PREFIX + "cut-rotation", json.dumps(record).encode())

    mount.backend.initialize(mount.storage)

    deadline = time.monotonic() + 30
    while list_wal(mount.storage) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list_wal(mount.storage) == []
    assert key_ids(moto_server, username) == [old.access_key]
    assert stored_key(mount) == old.access_key
    assert works(moto_server, old)
    # The freed slot lets the next rotation run.
    assert mount.write("aws/config/rotate-root") is not None


def rotate_under_stale_clients(
    mount: Mount, monkeypatch: pytest.MonkeyPatch
) -> list[Clients]:
    """Rotate the root key, and make the next `AwsBackend.clients` call
    return the clients built before the rotation.

    The returned list is empty once that call happened.
    """
    config = load_root(mount.storage)
    assert config is not None
    stale = [Clients(config, iam_client(config), sts_client(config))]
    mount.write("aws/config/rotate-root")
    real_clients = AwsBackend.clients

    def clients_taken_earlier(backend: AwsBackend, storage: Storage) -> Clients:
        if stale:
            return stale.pop()
        return real_clients(backend, storage)

    monkeypatch.setattr(AwsBackend, "clients", clients_taken_earlier)
    return stale


def test_requests_rebuild_stale_clients(
    mount: Mount,
    moto_server: MotoServer,
    rotator: tuple[str, KeyPair],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A creds read and a revoke whose clients predate a rotation both succeed."""
    _, old = rotator
    mount.write("aws/roles/leased", credential_type="iam_user", allowed_agents="dev")
    stale = rotate_under_stale_clients(mount, monkeypatch)
    assert not works(moto_server, old)

    response = aws_creds(mount, "leased", "dev")

    assert stale == []
    keys = KeyPair(response.data["access_key"], response.data["secret_key"])
    assert works(moto_server, keys)
    assert response.secret is not None
    username = response.secret.internal_data["username"]
    stale = rotate_under_stale_clients(mount, monkeypatch)

    mount.request(Operation.REVOKE, "aws/creds/x", secret=response.secret)

    assert stale == []
    iam = moto_server.client("iam")
    assert error_code_of(lambda: iam.get_user(UserName=username)) == "NoSuchEntity"
