"""`agent-attestor serve`: start the servers, reload on SIGHUP, stop cleanly.

A reload re-reads the config file and the key directory. Agents, selectors,
wrapper rules and rate limits change at once, without dropping connections;
a config that fails validation is logged and the previous one stays in force.
Settings bound to open sockets (paths, addresses, TLS, workers) take effect at
the next restart, and the reload says so in the log.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import fields
from types import FrameType

from attestor.config import Config, ConfigError, load_config
from attestor.hashing import HashCache
from attestor.inspector import Inspector, Peer
from attestor.jwks_server import JWKSServer
from attestor.keyring import KeyRing
from attestor.keys import KeyFileError
from attestor.keystore import KeyStore
from attestor.procfs import ProcFS
from attestor.ratelimit import RateLimiter
from attestor.service import Policy, Service
from attestor.socket_server import SocketServer
from attestor.tokens import TokenIssuer

logger = logging.getLogger(__name__)

# Config fields that a reload applies at once; the others need a restart.
_RELOADABLE = frozenset({"path", "agents", "wrappers", "rate_limit"})


class Daemon:
    """The running attestor: key ring, JWKS server and socket server.

    `procfs` and `after_read` are test seams, passed on to the Inspector.
    """

    def __init__(
        self,
        config_path: str,
        *,
        procfs: ProcFS | None = None,
        after_read: Callable[[Peer], None] | None = None,
    ) -> None:
        self.config_path = config_path
        self.config: Config = load_config(config_path)
        config = self.config

        self.keystore = KeyStore(config.key_dir, config.algorithm)
        self.keyring = KeyRing(self.keystore)
        self.jwks = JWKSServer(
            self.keyring,
            host=config.jwks_host,
            port=config.jwks_port,
            max_age=config.jwks_max_age,
            tls=config.tls,
            issuer=config.issuer,
        )
        self.inspector = Inspector(
            hashes=HashCache(max_bytes=config.max_hash_bytes),
            procfs=procfs,
            max_depth=config.max_ancestors,
            after_read=after_read,
        )
        self.service = Service(
            inspector=self.inspector,
            issuer=TokenIssuer(self.keyring, issuer=self.jwks.issuer, host=config.host),
            policy=_policy(config),
            reload=self.reload,
        )
        self.socket_server = SocketServer(
            path=config.socket_path,
            mode=config.socket_mode,
            group=config.socket_group,
            inspector=self.inspector,
            service=self.service,
            workers=config.workers,
            request_timeout=config.request_timeout,
        )
        self._stop = threading.Event()
        self._reload_requested = threading.Event()

    @property
    def issuer(self) -> str:
        return self.jwks.issuer

    def start(self) -> None:
        self.jwks.start()
        try:
            self.socket_server.start()
        except BaseException:
            self.jwks.stop()
            raise
        logger.info(
            "agent-attestor started: issuer %s, %d agents, signing key %s",
            self.issuer,
            len(self.config.agents),
            self.keyring.signing_key().kid,
        )

    def stop(self) -> None:
        self.socket_server.stop()
        self.jwks.stop()
        logger.info("agent-attestor stopped")

    def reload(self) -> str | None:
        """Re-read config and keys; return None, or why the old ones stay."""
        try:
            config = load_config(self.config_path)
        except ConfigError as err:
            logger.error("reload failed, keeping the previous config: %s", err)
            return f"reload failed, keeping the previous config: {err}"
        try:
            self.keyring.reload()
        except (KeyFileError, OSError) as err:
            logger.error("reload failed, keeping the previous keys: %s", err)
            return f"reload failed, keeping the previous keys: {err}"

        pending = [
            field.name
            for field in fields(Config)
            if field.name not in _RELOADABLE
            and getattr(config, field.name) != getattr(self.config, field.name)
        ]
        if pending:
            logger.warning(
                "%s changed in %s; restart the daemon to apply them",
                ", ".join(pending),
                self.config_path,
            )
        limiter = self.service.policy.limiter
        if config.rate_limit != self.config.rate_limit:
            limiter = _limiter(config)
        self.service.policy = Policy(config.agents, config.wrappers, limiter)
        self.config = config
        logger.info("reloaded %s: %d agents", self.config_path, len(config.agents))
        return None

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP reloads."""
        signal.signal(signal.SIGHUP, self._on_hangup)
        signal.signal(signal.SIGTERM, self._on_terminate)
        signal.signal(signal.SIGINT, self._on_terminate)
        self.start()
        try:
            while not self._stop.is_set():
                # Signal handlers only set flags; the reload runs here, outside
                # the handler, where it may take locks.
                if self._reload_requested.wait(timeout=1.0):
                    self._reload_requested.clear()
                    self.reload()
        finally:
            self.stop()

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_requested.set()

    def _on_terminate(self, signum: int, frame: FrameType | None) -> None:
        logger.info("received signal %d, stopping", signum)
        self._stop.set()
        self._reload_requested.set()


def _policy(config: Config) -> Policy:
    return Policy(config.agents, config.wrappers, _limiter(config))


def _limiter(config: Config) -> RateLimiter:
    return RateLimiter(rate=config.rate_limit.rate, burst=config.rate_limit.burst)
