"""`agent-attestor serve`: start the servers, reload on SIGHUP, stop cleanly.

A reload re-reads the config file and the key directory. Agents, selectors,
wrapper rules and rate limits change at once, without dropping connections.
A config that fails validation is logged, and the previous one stays in
force. Settings bound to open sockets (paths, addresses, TLS, workers) take
effect at the next restart, and the reload logs a warning naming them.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import fields

from attestor.inspection.hashing import HashCache
from attestor.inspection.inspector import Inspector, Peer
from attestor.inspection.procfs import ProcFS
from attestor.policy.config import Config, ConfigError, load_config
from attestor.server.jwks_server import JWKSServer
from attestor.server.ratelimit import RateLimiter
from attestor.server.service import Policy, Service
from attestor.server.socket_server import SocketServer
from attestor.signing.keyring import KeyRing
from attestor.signing.keys import KeyFileError
from attestor.signing.keystore import KeyStore
from attestor.signing.tokens import TokenIssuer

logger = logging.getLogger(__name__)

# Config fields that a reload applies at once; the others need a restart.
_RELOADABLE = frozenset({"path", "agents", "wrappers", "rate_limit"})
PARTS = ("jwks", "socket")
_CONTROL_SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


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
        # Runs after a reload requested over the socket; a pre-forked worker
        # uses it to have the parent pass the reload on to its siblings.
        self.after_reload: Callable[[], None] | None = None

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
            reload=self._reload_requested_by_client,
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

    @property
    def issuer(self) -> str:
        return self.jwks.issuer

    def start(self, parts: tuple[str, ...] = PARTS) -> None:
        """Start the servers named in `parts` ("jwks", "socket").

        With "socket" alone the socket must already be bound (`bind()` of
        the socket server), as in a pre-forked worker.
        """
        if "jwks" in parts:
            self.jwks.start()
        try:
            if "socket" in parts and "jwks" not in parts:
                self.socket_server.serve()
            elif "socket" in parts:
                self.socket_server.start()
        except BaseException:
            if "jwks" in parts:
                self.jwks.stop()
            raise
        logger.info(
            "agent-attestor started %s: issuer %s, %d agents, signing key %s",
            " and ".join(parts),
            self.issuer,
            len(self.config.agents),
            self.keyring.signing_key().kid,
        )

    def stop(
        self, parts: tuple[str, ...] = PARTS, *, remove_socket: bool = True
    ) -> None:
        if "socket" in parts:
            self.socket_server.stop(remove_socket=remove_socket)
        if "jwks" in parts:
            self.jwks.stop()
        logger.info("agent-attestor stopped %s", " and ".join(parts))

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
            limiter = _limiter(config, self.config.processes)
        self.service.policy = Policy(config.agents, config.wrappers, limiter)
        self.config = config
        logger.info("reloaded %s: %d agents", self.config_path, len(config.agents))
        return None

    def serve_forever(
        self, parts: tuple[str, ...] = PARTS, *, remove_socket: bool = True
    ) -> None:
        """Run `parts` until SIGTERM or SIGINT; SIGHUP reloads."""
        block_control_signals()
        self.start(parts)
        try:
            while True:
                signum = wait_for_signal(timeout=1.0)
                if signum == signal.SIGHUP:
                    self.reload()
                elif signum is not None:
                    logger.info("received signal %d, stopping", signum)
                    return
        finally:
            self.stop(parts, remove_socket=remove_socket)

    def _reload_requested_by_client(self) -> str | None:
        problem = self.reload()
        if problem is None and self.after_reload is not None:
            self.after_reload()
        return problem


def block_control_signals() -> None:
    """Block SIGHUP, SIGTERM and SIGINT, to be taken by `wait_for_signal`.

    Threads started afterwards inherit the mask, so the signals stay pending
    for the main thread. Handlers are avoided on purpose: a Python handler
    runs between two bytecodes of the main thread, and setting a
    threading.Event there deadlocks if that thread holds the Event's lock.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _CONTROL_SIGNALS)


def wait_for_signal(timeout: float) -> int | None:
    """Return the next control signal, or None after `timeout` seconds."""
    info = signal.sigtimedwait(_CONTROL_SIGNALS, timeout)
    # When SIGSTOP and SIGCONT interrupt the wait after its timeout passed,
    # CPython returns an uninitialised siginfo with an arbitrary si_signo
    # (seen with 3.11.7), and no signal was taken. Any value but a control
    # signal is ignored, so a stopped and continued daemon keeps running.
    if info is None or info.si_signo not in _CONTROL_SIGNALS:
        return None
    return info.si_signo


def _policy(config: Config) -> Policy:
    return Policy(config.agents, config.wrappers, _limiter(config, config.processes))


def _limiter(config: Config, processes: int) -> RateLimiter:
    """Return a limiter for one process's share of each uid's rate.

    Pre-forked workers keep separate buckets, so each one allows 1/N of the
    configured rate and burst (rounded up). One uid's overall limit then lies
    between that share and the full rate, depending on which workers accept
    its connections.
    """
    return RateLimiter(
        rate=config.rate_limit.rate / processes,
        burst=-(-config.rate_limit.burst // processes),
    )
