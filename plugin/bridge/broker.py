"""The go-plugin connection broker, plugin side.

For each mount, Vault starts a gRPC server holding that mount's storage and
system view, gives it a numeric service id, passes the id in `Setup` and
announces the server's address as `ConnInfo{service_id, address}` on the
`plugin.GRPCBroker/StartStream` stream. The announcement may arrive before
or after `Setup`, so announcements are kept by id until a dial takes them.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from plugin.bridge import rpc
from plugin.bridge.h2client import BrokerChannel
from plugin.bridge.pb import go_plugin_pb2

logger = logging.getLogger(__name__)

SERVICE_NAME = "plugin.GRPCBroker"
DIAL_TIMEOUT = 5.0
# go-plugin drops an announcement that no dial took within 5 s. Keeping it
# longer costs nothing and tolerates a slow Setup.
_ANNOUNCEMENT_TTL = 60.0


class BrokerError(Exception):
    """A broker connection could not be made."""


@dataclass
class BrokerConnection:
    """A channel to one of Vault's broker servers."""

    service_id: int
    channel: BrokerChannel


class Broker:
    """Receive broker announcements and open channels to them.

    `tls_context` is the client context that trusts only Vault's
    certificate, or None when Vault passed no certificate.
    """

    def __init__(self, tls_context: ssl.SSLContext | None) -> None:
        self._tls_context = tls_context
        self._announced: dict[int, tuple[go_plugin_pb2.ConnInfo, float]] = {}
        self._changed = threading.Condition()

    def handler(self) -> rpc.ServiceHandler:
        return rpc.service(
            SERVICE_NAME,
            {
                "StartStream": rpc.stream_stream(
                    self._start_stream, go_plugin_pb2.ConnInfo
                )
            },
        )

    def _start_stream(
        self,
        announcements: Iterator[go_plugin_pb2.ConnInfo],
        context: grpc.ServicerContext,
    ) -> Iterator[go_plugin_pb2.ConnInfo]:
        logger.debug("broker stream started")
        for info in announcements:
            self._announce(info)
        logger.debug("broker stream ended")
        # The plugin never offers servers of its own to Vault, so nothing is
        # sent back; the bare yield makes this a generator.
        yield from ()

    def _announce(self, info: go_plugin_pb2.ConnInfo) -> None:
        if info.HasField("knock"):
            logger.warning(
                "ignoring a broker knock: multiplexed broker streams are not supported",
                extra={"service_id": info.service_id},
            )
            return
        logger.debug(
            "broker service announced",
            extra={"service_id": info.service_id, "network": info.network},
        )
        now = time.monotonic()
        with self._changed:
            self._announced = {
                sid: entry
                for sid, entry in self._announced.items()
                if now - entry[1] < _ANNOUNCEMENT_TTL
            }
            self._announced[info.service_id] = (info, now)
            self._changed.notify_all()

    def dial(self, service_id: int, timeout: float = DIAL_TIMEOUT) -> BrokerConnection:
        """Return a channel to the server Vault announced under `service_id`."""
        info = self._wait_for(service_id, timeout)
        if info.network != "unix":
            raise BrokerError(
                f"broker service {service_id} is on network {info.network!r}; "
                "this plugin only dials unix sockets"
            )
        channel = BrokerChannel(info.address, self._tls_context)
        return BrokerConnection(service_id, channel)

    def close(self, connection: BrokerConnection) -> None:
        """Close a broker channel."""
        connection.channel.close()

    def _wait_for(self, service_id: int, timeout: float) -> go_plugin_pb2.ConnInfo:
        deadline = time.monotonic() + timeout
        with self._changed:
            while service_id not in self._announced:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerError(
                        f"timed out after {timeout:.0f} s waiting for Vault to "
                        f"announce broker service {service_id}"
                    )
                self._changed.wait(remaining)
            info, _ = self._announced.pop(service_id)
        return info
