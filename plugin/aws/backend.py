"""The AWS backend's shared state: cached IAM and STS clients, and locks.

One `AwsBackend` serves the `aws/` paths of a mount. Clients are built on
first use and rebuilt when `aws/config/root` changes, because boto3 client
creation costs tens of milliseconds and clients are thread-safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plugin.aws.client import iam_client, sts_client
from plugin.aws.config import ROOT_KEY, RootConfig, require_root
from plugin.logical import Storage, SystemView

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_sts import STSClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clients:
    """IAM and STS clients built from one root config."""

    config: RootConfig
    iam: IAMClient
    sts: STSClient


class AwsBackend:
    """Client cache and the lock for read-modify-write updates of one mount."""

    def __init__(self, system: Callable[[], SystemView]) -> None:
        self._system = system
        self._clients: tuple[str, Clients] | None = None
        self._clients_lock = threading.Lock()
        # Serialises config and role updates, which merge with stored values,
        # and root rotation, which must not race a config write.
        self.write_lock = threading.RLock()

    @property
    def system(self) -> SystemView:
        return self._system()

    def clients(self, storage: Storage) -> Clients:
        """Return clients for the stored root config, building them when it changed."""
        config = require_root(storage)
        # The fingerprint covers the secret key, so it is hashed, never kept.
        fingerprint = hashlib.sha256(
            json.dumps(dataclasses.asdict(config), sort_keys=True).encode()
        ).hexdigest()
        with self._clients_lock:
            if self._clients is not None and self._clients[0] == fingerprint:
                return self._clients[1]
        built = Clients(config, iam_client(config), sts_client(config))
        with self._clients_lock:
            self._clients = (fingerprint, built)
        logger.debug("aws clients built: region=%s", config.effective_region())
        return built

    def reset_clients(self) -> None:
        with self._clients_lock:
            self._clients = None

    def invalidate(self, key: str) -> None:
        """Drop cached clients when another node changed the root config."""
        if key == ROOT_KEY:
            self.reset_clients()
