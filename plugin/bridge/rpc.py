"""Typed helpers to serve and call gRPC methods without generated stubs.

The bridge generates only protobuf messages (scripts/gen-proto). Handlers
are registered per service with grpcio's generic handlers, and client calls
are made with `Channel.unary_unary` wrapped in `UnaryCall`, which keeps the
request and response types visible to mypy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeAlias, TypeVar, cast

import grpc
from google.protobuf.message import Message

MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
ServiceHandler: TypeAlias = "grpc.GenericRpcHandler[Any, Any]"
RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)

# Vault's SDK lifts gRPC's 4 MiB message limit to the int32 maximum, and
# storage entries or list replies can exceed 4 MiB.
MAX_MESSAGE_BYTES = 2**31 - 1
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def unary(
    behavior: Callable[[RequestT, grpc.ServicerContext], Message],
    request_type: type[RequestT],
) -> MethodHandler:
    """Return a unary-unary handler that parses `request_type`."""
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=request_type.FromString,
        response_serializer=_serialize,
    )


def unary_stream(
    behavior: Callable[[RequestT, grpc.ServicerContext], Iterator[Message]],
    request_type: type[RequestT],
) -> MethodHandler:
    """Return a unary-stream handler that parses `request_type`."""
    return grpc.unary_stream_rpc_method_handler(
        behavior,
        request_deserializer=request_type.FromString,
        response_serializer=_serialize,
    )


def stream_stream(
    behavior: Callable[[Iterator[RequestT], grpc.ServicerContext], Iterator[Message]],
    request_type: type[RequestT],
) -> MethodHandler:
    """Return a stream-stream handler that parses `request_type`."""
    return grpc.stream_stream_rpc_method_handler(
        behavior,
        request_deserializer=request_type.FromString,
        response_serializer=_serialize,
    )


def service(name: str, methods: dict[str, MethodHandler]) -> ServiceHandler:
    """Return the handler of a service, `name` being `package.Service`."""
    return grpc.method_handlers_generic_handler(name, methods)


class Channel(Protocol):
    """The channel interface `UnaryCall` uses, offered by `grpc.Channel` and
    `h2client.BrokerChannel`."""

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes],
        response_deserializer: Callable[[bytes], Any],
    ) -> Callable[..., Any]: ...


class UnaryCall(Generic[RequestT, ResponseT]):
    """A client method `/package.Service/Method` on one channel."""

    def __init__(
        self, channel: Channel, method: str, response_type: type[ResponseT]
    ) -> None:
        self._call = channel.unary_unary(
            method,
            request_serializer=_serialize,
            response_deserializer=response_type.FromString,
        )

    def __call__(self, request: RequestT, *, timeout: float | None = None) -> ResponseT:
        return cast(ResponseT, self._call(request, timeout=timeout))


def status_code(err: grpc.RpcError) -> grpc.StatusCode | None:
    """Return the status of a failed call, from grpcio or the broker channel."""
    code = getattr(err, "code", None)
    return code() if callable(code) else None


def _serialize(message: Any) -> bytes:
    return cast(bytes, message.SerializeToString())
