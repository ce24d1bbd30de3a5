"""The daemon's view of the key directory: the signing key and the JWKS.

`agent-attestor keys rotate` rewrites the key directory while the daemon runs.
The daemon notices within `check_interval` seconds (it compares keys.json's
inode and mtime), on SIGHUP, or on a `reload` request, and from then on signs
with the promoted key. A verifier that fetched the JWKS since the previous
rotation has that key already, because the JWKS published it as the next key.

A key the daemon signed with stays in the JWKS until the last token it signed
has expired, even when the key directory retired it earlier.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from attestor.signing.keys import KeyFileError, PublicKey, SigningKey
from attestor.signing.keystore import KeySet, KeyStore

logger = logging.getLogger(__name__)


class KeyRing:
    """Thread-safe holder of the current key set, reloaded on change."""

    def __init__(
        self,
        store: KeyStore,
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.check_interval = check_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet = store.load_or_create()
        self._stamp = store.state_stamp()
        self._next_check = time.monotonic() + check_interval
        # kid -> (public key, latest expiry of a token signed with it)
        self._signed: dict[str, tuple[PublicKey, float]] = {}

    def signing_key(self) -> SigningKey:
        self._reload_if_due()
        return self._keys.current

    def record_issued(self, key: SigningKey, expires_at: float) -> None:
        with self._lock:
            previous = self._signed.get(key.kid)
            if previous is None or previous[1] < expires_at:
                self._signed[key.kid] = (key.public, expires_at)

    def reload(self) -> None:
        """Re-read the key directory; on failure keep the loaded keys and raise."""
        keys = self.store.load()
        with self._lock:
            old = self._keys
            self._keys = keys
            self._stamp = self.store.state_stamp()
        if old.current.kid != keys.current.kid:
            logger.info(
                "signing key changed from %s to %s; next key %s",
                old.current.kid,
                keys.current.kid,
                keys.next.kid,
            )

    def published_keys(self) -> list[PublicKey]:
        """Return the keys a verifier needs now: current, next, and unexpired old."""
        self._reload_if_due()
        now = self.clock()
        keys = self._keys
        with self._lock:
            self._signed = {
                kid: entry for kid, entry in self._signed.items() if entry[1] > now
            }
            signed = [public for public, _ in self._signed.values()]
        candidates = [
            keys.current.public,
            keys.next.public,
            *(entry.key for entry in keys.retired if entry.retire_after > now),
            *signed,
        ]
        unique: dict[str, PublicKey] = {}
        for key in candidates:
            unique.setdefault(key.kid, key)
        return list(unique.values())

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk for key in self.published_keys()]}

    def _reload_if_due(self) -> None:
        if time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + self.check_interval
        if self.store.state_stamp() == self._stamp:
            return
        try:
            self.reload()
        except (KeyFileError, OSError) as err:
            logger.error(
                "cannot reload keys from %s, still signing with %s: %s",
                self.store.key_dir,
                self._keys.current.kid,
                err,
            )
