"""Translate between the `pb` messages and the `plugin.logical` contract.

Follows Vault's sdk/plugin/pb/translation.go: `data` and `internal_data`
travel as JSON strings, durations as int64 nanoseconds, and a secret's
`issue_time` as a protobuf Timestamp that Vault requires to be valid.
"""

from __future__ import annotations

import json
import time
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from plugin.bridge.pb import backend_pb2
from plugin.logical import (
    Connection,
    ErrorKind,
    LeaseOptions,
    Operation,
    Request,
    Response,
    Secret,
    Storage,
    UnsupportedOperationError,
)

NANOSECONDS = 1_000_000_000

# Vault's pb.ProtoError err_type values (translation.go, iota order).
ERR_UNKNOWN = 0
ERR_USER = 1
ERR_INTERNAL = 2
ERR_CODED = 3
ERR_STATUS_BAD_REQUEST = 4
ERR_UNSUPPORTED_OPERATION = 5
ERR_UNSUPPORTED_PATH = 6
ERR_INVALID_REQUEST = 7
ERR_PERMISSION_DENIED = 8

# Vault returns HTTP 400 for ErrInvalidRequest, 403 for ErrPermissionDenied, 404
# for ErrUnsupportedPath, 405 for ErrUnsupportedOperation and 500 otherwise.
_ERR_TYPES = {
    ErrorKind.BAD_REQUEST: ERR_INVALID_REQUEST,
    ErrorKind.PERMISSION_DENIED: ERR_PERMISSION_DENIED,
    ErrorKind.UNSUPPORTED_PATH: ERR_UNSUPPORTED_PATH,
    ErrorKind.UNSUPPORTED_OPERATION: ERR_UNSUPPORTED_OPERATION,
    ErrorKind.INTERNAL: ERR_UNKNOWN,
}
# Vault rebuilds these kinds from err_type alone and drops err_msg; a
# response with data {"error": message} carries the message to the caller,
# as Go backends do with logical.ErrorResponse. Unsupported path and
# operation stay bare, as Go's framework returns them.
_MESSAGE_IN_RESPONSE = {ErrorKind.BAD_REQUEST, ErrorKind.PERMISSION_DENIED}


def request_from_proto(message: backend_pb2.Request, storage: Storage) -> Request:
    """Build a logical Request; raise UnsupportedOperationError for new operations."""
    try:
        operation = Operation(message.operation)
    except ValueError as err:
        raise UnsupportedOperationError(
            f"operation {message.operation!r} is not supported by this plugin"
        ) from err
    connection = None
    if message.HasField("connection"):
        connection = Connection(
            remote_addr=message.connection.remote_addr,
            remote_port=message.connection.remote_port,
        )
    return Request(
        operation=operation,
        path=message.path,
        storage=storage,
        data=_json_object(message.data, "request data"),
        secret=secret_from_proto(message.secret)
        if message.HasField("secret")
        else None,
        id=message.id,
        mount_point=message.mount_point,
        mount_accessor=message.mount_accessor,
        display_name=message.display_name,
        entity_id=message.entity_id,
        client_token_accessor=message.client_token_accessor,
        connection=connection,
        headers={name: list(value.header) for name, value in message.headers.items()},
    )


def secret_from_proto(message: backend_pb2.Secret) -> Secret:
    lease = message.lease_options
    issue_time = lease.issue_time.seconds + lease.issue_time.nanos / NANOSECONDS
    return Secret(
        lease=LeaseOptions(
            ttl=lease.TTL // NANOSECONDS,
            max_ttl=lease.MaxTTL // NANOSECONDS,
            renewable=lease.renewable,
            increment=lease.increment // NANOSECONDS,
            issue_time=issue_time,
        ),
        internal_data=_json_object(message.internal_data, "secret internal_data"),
        lease_id=message.lease_id,
    )


def secret_to_proto(secret: Secret) -> backend_pb2.Secret:
    lease = secret.lease
    issued = Timestamp()
    # Vault rejects a lease whose issue time is unset; Go backends stamp it
    # when they build the response, so an unset time means "now".
    issued.FromNanoseconds(int((lease.issue_time or time.time()) * NANOSECONDS))
    return backend_pb2.Secret(
        lease_options=backend_pb2.LeaseOptions(
            TTL=lease.ttl * NANOSECONDS,
            MaxTTL=lease.max_ttl * NANOSECONDS,
            renewable=lease.renewable,
            increment=lease.increment * NANOSECONDS,
            issue_time=issued,
        ),
        internal_data=_json_dumps(secret.internal_data),
        lease_id=secret.lease_id,
    )


def response_to_proto(response: Response) -> backend_pb2.Response:
    message = backend_pb2.Response(
        data=_json_dumps(response.data),
        redirect=response.redirect,
        warnings=response.warnings,
    )
    if response.secret is not None:
        message.secret.CopyFrom(secret_to_proto(response.secret))
    return message


def error_to_proto(
    kind: ErrorKind, message: str
) -> tuple[backend_pb2.Response | None, backend_pb2.ProtoError]:
    """Return the response and error that make Vault return the status of `kind`."""
    error = backend_pb2.ProtoError(err_type=_ERR_TYPES[kind], err_msg=message)
    if kind in _MESSAGE_IN_RESPONSE:
        return backend_pb2.Response(data=_json_dumps({"error": message})), error
    return None, error


def _json_object(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} is JSON {type(value).__name__}, expected an object")
    return value


def _json_dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))
