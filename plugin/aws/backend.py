"""The AWS backend's shared state: cached IAM and STS clients, and locks.

One `AwsBackend` serves the `aws/` paths of a mount. Clients are built on
first use and rebuilt when `aws/config/root` changes, because boto3 client
creation costs tens of milliseconds and clients are thread-safe. The
backend also runs the calls deferred until after a response.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from plugin.aws.client import AUTH_FAILURE_CODES, error_code, iam_client, sts_client
from plugin.aws.config import ROOT_KEY, RootConfig, require_root
from plugin.logical import Storage, SystemView

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_sts import STSClient

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# Seconds a deferred call waits, so that the plugin has sent the response it
# follows to Vault before the call runs. NOTE: an estimate, not a guarantee:
# the bridge has no hook that runs once a response is sent, so a response
# still unsent after this delay loses that order.
DEFER_DELAY = 2.0


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
        # Calls run by `_run_deferred`, oldest first, each with its due time.
        self._deferred: deque[tuple[float, Callable[..., object], tuple[Any, ...]]]
        self._deferred = deque()
        self._deferred_changed = threading.Condition()
        self._deferred_running = False
        self._flushing = 0
        self._deferred_worker: threading.Thread | None = None

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

    def with_clients(self, storage: Storage, call: Callable[[Clients], _T]) -> _T:
        """Run `call` with the cached clients, and once more if their key is gone.

        A root rotation deletes the old key once the new one is stored, so a
        call that took its clients before the rotation fails with an
        authentication error. The retry builds clients from the stored root
        config again.
        """
        try:
            return call(self.clients(storage))
        except Exception as err:
            code = _auth_failure_code(err)
            if not code:
                raise
            logger.warning("aws root key rejected, clients rebuilt: error=%s", code)
        self.reset_clients()
        return call(self.clients(storage))

    def defer(self, call: Callable[..., object], *args: Any) -> None:
        """Run `call(*args)` `DEFER_DELAY` seconds after now; a failure is logged.

        A process that dies first never runs it.
        """
        with self._deferred_changed:
            due = time.monotonic() + DEFER_DELAY
            self._deferred.append((due, call, args))
            if self._deferred_worker is None:
                self._deferred_worker = threading.Thread(
                    target=self._run_deferred, name="aws-deferred", daemon=True
                )
                self._deferred_worker.start()
            self._deferred_changed.notify_all()

    def finish_deferred(self) -> None:
        """Run every deferred call now and wait until all of them have finished."""
        with self._deferred_changed:
            self._flushing += 1
            self._deferred_changed.notify_all()
            while self._deferred or self._deferred_running:
                self._deferred_changed.wait()
            self._flushing -= 1

    def _run_deferred(self) -> None:
        while True:
            with self._deferred_changed:
                call, args = self._next_deferred()
                self._deferred_running = True
            try:
                call(*args)
            except Exception as err:
                logger.warning(
                    "deferred call failed: call=%s error=%s", call.__name__, err
                )
            finally:
                with self._deferred_changed:
                    self._deferred_running = False
                    self._deferred_changed.notify_all()

    def _next_deferred(self) -> tuple[Callable[..., object], tuple[Any, ...]]:
        """Wait for the oldest deferred call to be due; the caller holds the lock."""
        while True:
            if not self._deferred:
                self._deferred_changed.wait()
                continue
            due, call, args = self._deferred[0]
            remaining = due - time.monotonic()
            if remaining <= 0 or self._flushing:
                self._deferred.popleft()
                return call, args
            self._deferred_changed.wait(remaining)

    def reset_clients(self) -> None:
        with self._clients_lock:
            self._clients = None

    def invalidate(self, key: str) -> None:
        """Drop cached clients when another node changed the root config."""
        if key == ROOT_KEY:
            self.reset_clients()


def _auth_failure_code(err: BaseException) -> str:
    """Return the AWS code of an authentication failure in `err` or its causes."""
    cause: BaseException | None = err
    while cause is not None:
        code = error_code(cause)
        if code in AUTH_FAILURE_CODES:
            return code
        cause = cause.__cause__
    return ""
