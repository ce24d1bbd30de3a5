"""The mount's storage, reached through Vault's `pb.Storage` broker service.

Implements `plugin.logical.Storage`. Vault reports storage failures in the
reply's `err` string, and transport failures arrive as gRPC errors. Both
raise `StorageError`, which the bridge turns into a 500 unless the backend
handles it.
"""

from __future__ import annotations

import logging
from typing import Protocol, TypeVar, cast

import grpc
from google.protobuf.message import Message

from plugin.bridge.pb import backend_pb2
from plugin.bridge.rpc import Channel, UnaryCall, status_code
from plugin.logical import ErrorKind, LogicalError

logger = logging.getLogger(__name__)

_SERVICE = "/pb.Storage/"
# A storage call that takes longer than this is treated as failed, so a
# wedged Vault cannot hold a request thread forever.
CALL_TIMEOUT = 60.0


class StorageError(LogicalError):
    """Vault's storage refused or failed a call."""

    kind = ErrorKind.INTERNAL


class GrpcStorage:
    """`logical.Storage` over one broker channel; safe to share across threads."""

    def __init__(self, channel: Channel) -> None:
        self._get = UnaryCall[backend_pb2.StorageGetArgs, backend_pb2.StorageGetReply](
            channel, _SERVICE + "Get", backend_pb2.StorageGetReply
        )
        self._put = UnaryCall[backend_pb2.StoragePutArgs, backend_pb2.StoragePutReply](
            channel, _SERVICE + "Put", backend_pb2.StoragePutReply
        )
        self._delete = UnaryCall[
            backend_pb2.StorageDeleteArgs, backend_pb2.StorageDeleteReply
        ](channel, _SERVICE + "Delete", backend_pb2.StorageDeleteReply)
        self._list = UnaryCall[
            backend_pb2.StorageListArgs, backend_pb2.StorageListReply
        ](channel, _SERVICE + "List", backend_pb2.StorageListReply)
        self._list_page = UnaryCall[
            backend_pb2.StorageListPageArgs, backend_pb2.StorageListReply
        ](channel, _SERVICE + "ListPage", backend_pb2.StorageListReply)

    def get(self, key: str) -> bytes | None:
        reply = _invoke(self._get, backend_pb2.StorageGetArgs(key=key), "get", key)
        return reply.entry.value if reply.HasField("entry") else None

    def put(self, key: str, value: bytes) -> None:
        entry = backend_pb2.StorageEntry(key=key, value=value)
        _invoke(self._put, backend_pb2.StoragePutArgs(entry=entry), "put", key)

    def delete(self, key: str) -> None:
        _invoke(self._delete, backend_pb2.StorageDeleteArgs(key=key), "delete", key)

    def list_page(self, prefix: str, after: str, limit: int) -> list[str]:
        request = backend_pb2.StorageListPageArgs(
            prefix=prefix, after=after, limit=limit
        )
        return list(_invoke(self._list_page, request, "list", prefix).keys)

    def list(self, prefix: str) -> list[str]:
        request = backend_pb2.StorageListArgs(prefix=prefix)
        return list(_invoke(self._list, request, "list", prefix).keys)


class _Reply(Protocol):
    err: str


_RequestT = TypeVar("_RequestT", bound=Message)
_ReplyT = TypeVar("_ReplyT", bound=Message)


def _invoke(
    call: UnaryCall[_RequestT, _ReplyT], request: _RequestT, operation: str, key: str
) -> _ReplyT:
    try:
        reply = call(request, timeout=CALL_TIMEOUT)
    except grpc.RpcError as err:
        raise _transport_error(operation, key, err) from err
    error = cast(_Reply, reply).err
    if error:
        raise StorageError(f"storage {operation} of {key!r} failed: {error}")
    return reply


def _transport_error(operation: str, key: str, err: grpc.RpcError) -> StorageError:
    code = status_code(err)
    logger.warning(
        "storage call to Vault failed",
        extra={"operation": operation, "key": key, "code": str(code)},
    )
    return StorageError(
        f"storage {operation} of {key!r} failed: Vault's storage service is "
        f"unreachable ({code}); retry, and check the Vault server log"
    )
