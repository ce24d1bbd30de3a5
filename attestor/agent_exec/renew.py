"""Keep the call's token and leases alive while the command runs.

The JWT role gives the token a short TTL, and a token's expiry revokes every
lease created with it, so a command that runs longer than the token TTL
would lose its credentials. A background thread renews the token and each
renewable lease once two thirds of its TTL have passed, as Vault's own
lifetime watcher does. Each renewal requests the TTL that the item had at
login or mint. Vault grants less only when the item's max TTL would
otherwise be passed, so renewal of an item stops once a grant is shorter
than the request. The max TTL therefore bounds the call.

The thread comes from `_thread`, the low-level module under `threading`:
`threading` imports `functools` and `collections`, which add about 3 ms to
agent-exec's start-up (Python 3.11).
"""

from __future__ import annotations

import _thread
import time

from attestor.agent_exec.errors import ExecError
from attestor.agent_exec.logs import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from attestor.agent_exec.vault import VaultClient

log = get_logger(__name__)

RETRY_DELAY = 2.0  # seconds between attempts after a failed renewal
STOP_TIMEOUT = 15.0  # seconds `stop` waits for a renewal in flight


class Renewable:
    """The token (empty `lease_id`) or one lease, with its TTL in seconds."""

    def __init__(self, lease_id: str, ttl: int) -> None:
        self.lease_id = lease_id
        self.ttl = ttl
        self.expires_at = 0.0
        self.due_at = 0.0
        self.renewals = 0
        self.at_max_ttl = False

    @property
    def label(self) -> str:
        return f"lease_id={self.lease_id}" if self.lease_id else "token"


class Renewer:
    """A background thread that renews `items` through its own Vault connection.

    Like a daemon thread, it does not keep the process alive.
    """

    def __init__(self, vault: VaultClient, items: list[Renewable]) -> None:
        self._vault = vault
        self.items = items
        self.failures = 0
        self._stopped = False
        # Held until `stop`: the thread sleeps by waiting to acquire it.
        self._stop_signal = _thread.allocate_lock()
        self._stop_signal.acquire()
        # Held while the thread runs, so `stop` can wait for its end.
        self._running = _thread.allocate_lock()
        now = time.monotonic()
        for item in items:
            _schedule(item, item.ttl, now)

    def start(self) -> None:
        self._running.acquire()
        try:
            _thread.start_new_thread(self._main, ())
        except BaseException:
            self._running.release()
            raise

    def stop(self) -> None:
        """Stop the thread, wait for a renewal in flight, close the connection."""
        if not self._stopped:
            self._stopped = True
            self._stop_signal.release()
        # A renewal in flight ends within the HTTP timeout.
        if self._running.acquire(timeout=STOP_TIMEOUT):
            self._running.release()
        self._vault.close()

    def run(self) -> None:
        """Renew each item when it is due, until `stop` or every item is at max TTL."""
        while not self._stopped:
            waiting = [item for item in self.items if not item.at_max_ttl]
            if not waiting:
                return
            next_item = min(waiting, key=lambda item: item.due_at)
            if self._wait_for_stop(next_item.due_at - time.monotonic()):
                return
            self._renew(next_item)

    def _main(self) -> None:
        try:
            self.run()
        finally:
            self._running.release()

    def _wait_for_stop(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return True as soon as `stop` was called."""
        timeout = min(max(seconds, 0.0), _thread.TIMEOUT_MAX)
        if self._stop_signal.acquire(timeout=timeout):
            self._stop_signal.release()
            return True
        return False

    def _renew(self, item: Renewable) -> None:
        try:
            if item.lease_id:
                ttl = self._vault.renew_lease(item.lease_id, item.ttl)
            else:
                ttl = self._vault.renew_self(item.ttl)
        except ExecError as err:
            self.failures += 1
            log.warning("renewal failed %s error=%s; retrying", item.label, err)
            item.due_at = time.monotonic() + min(RETRY_DELAY, _remaining(item) / 3)
            return

        now = time.monotonic()
        item.renewals += 1
        # A short TTL that Vault grants in full each time is not at its cap,
        # even though the expiry moves by less than a second per renewal.
        if ttl < item.ttl:
            item.at_max_ttl = True
            log.warning(
                "%s reached its max TTL and expires in %d s; "
                "the command's credentials end then",
                item.label,
                ttl,
            )
        _schedule(item, ttl, now)
        log.debug("renewed %s ttl=%d", item.label, ttl)


def _schedule(item: Renewable, ttl: int, now: float) -> None:
    item.expires_at = now + ttl
    item.due_at = now + ttl * 2 / 3


def _remaining(item: Renewable) -> float:
    return max(item.expires_at - time.monotonic(), 0.0)
