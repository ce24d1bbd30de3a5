"""Run one mount's requests through its backend and encode the outcome.

A `LogicalError` from the backend becomes the Vault error of its kind. Any
other exception is logged with its stack and reaches the caller only as a
500 naming the request id, because its text may contain details (host
names, SQL) that the caller should not see.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from plugin.bridge import convert
from plugin.bridge.pb import backend_pb2
from plugin.logical import Backend, ErrorKind, LogicalError, Storage

logger = logging.getLogger(__name__)


class Dispatcher:
    """Call a backend for one mount; safe to use from many threads at once."""

    def __init__(self, backend: Backend, storage: Storage) -> None:
        self.backend = backend
        self.storage = storage

    def initialize(self) -> backend_pb2.InitializeReply:
        try:
            self.backend.initialize(self.storage)
        except LogicalError as err:
            logger.error("backend initialization failed", extra={"error": str(err)})
            _, error = convert.error_to_proto(err.kind, str(err))
            return backend_pb2.InitializeReply(err=error)
        except Exception:
            logger.exception("backend initialization failed")
            _, error = convert.error_to_proto(
                ErrorKind.INTERNAL, "backend initialization failed; see the Vault log"
            )
            return backend_pb2.InitializeReply(err=error)
        return backend_pb2.InitializeReply()

    def handle_request(
        self,
        message: backend_pb2.Request,
        is_active: Callable[[], bool] | None = None,
    ) -> backend_pb2.HandleRequestReply:
        """Run one request; `is_active` reports whether Vault still awaits the reply."""
        started = time.perf_counter()
        try:
            request = convert.request_from_proto(message, self.storage)
            if is_active is not None:
                request.is_cancelled = lambda: not is_active()
            response = self.backend.handle_request(request)
            reply = backend_pb2.HandleRequestReply()
            if response is not None:
                reply.response.CopyFrom(convert.response_to_proto(response))
        except LogicalError as err:
            # An expected outcome (a user error, a missing path): the caller
            # gets the message, and Vault logs the request as it sees fit.
            reply = _error_reply(err.kind, str(err))
        except Exception:
            logger.exception(
                "request failed",
                extra={
                    "request_id": message.id,
                    "operation": message.operation,
                    "path": message.path,
                },
            )
            reply = _error_reply(
                ErrorKind.INTERNAL,
                f"internal error in the agent-bridge plugin (request id "
                f"{message.id}); the Vault server log has the details",
            )
        if logger.isEnabledFor(logging.DEBUG):
            _log_request(message, reply, time.perf_counter() - started)
        return reply

    def existence_check(
        self, message: backend_pb2.Request
    ) -> backend_pb2.HandleExistenceCheckReply:
        """Ask the backend whether the path of a write already exists."""
        try:
            request = convert.request_from_proto(message, self.storage)
            found, exists = self.backend.handle_existence_check(request)
        except LogicalError as err:
            _, error = convert.error_to_proto(err.kind, str(err))
            return backend_pb2.HandleExistenceCheckReply(err=error)
        except Exception:
            logger.exception("existence check failed", extra={"path": message.path})
            _, error = convert.error_to_proto(
                ErrorKind.INTERNAL, "existence check failed; see the Vault log"
            )
            return backend_pb2.HandleExistenceCheckReply(err=error)
        return backend_pb2.HandleExistenceCheckReply(
            check_found=bool(found), exists=bool(exists)
        )


def _log_request(
    message: backend_pb2.Request, reply: backend_pb2.HandleRequestReply, seconds: float
) -> None:
    logger.debug(
        "request handled",
        extra={
            "operation": message.operation,
            "path": message.path,
            "error": reply.err.err_msg if reply.HasField("err") else "",
            "seconds": round(seconds, 6),
        },
    )


def _error_reply(kind: ErrorKind, message: str) -> backend_pb2.HandleRequestReply:
    response, error = convert.error_to_proto(kind, message)
    reply = backend_pb2.HandleRequestReply(err=error)
    if response is not None:
        reply.response.CopyFrom(response)
    return reply
