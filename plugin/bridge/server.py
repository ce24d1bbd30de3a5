"""Start the plugin process the way Vault expects, serve, and stop cleanly.

Order matters. The magic cookie is checked before anything else runs. The
gRPC server is listening before the handshake line gives Vault the
address. Every socket lives in one private folder that is removed on every
exit path the process controls.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from plugin.bridge import handshake, hclog, lifecycle, tls
from plugin.bridge.backend_service import BackendService
from plugin.bridge.broker import Broker
from plugin.bridge.grpc_server import GrpcServer
from plugin.bridge.services import HousekeepingServices
from plugin.bridge.version import plugin_version
from plugin.logical import Backend

logger = logging.getLogger(__name__)

# Long-lived streams (broker, stdio) hold a worker each; the rest serve
# requests, which Vault sends concurrently (revokes in particular).
MAX_WORKERS = 64
STOP_GRACE_SECONDS = 1.0


@dataclass
class _Running:
    server: GrpcServer
    backends: BackendService
    housekeeping: HousekeepingServices


def serve(factory: Callable[[], Backend]) -> NoReturn:
    """Serve backends made by `factory` to Vault until a stop request, then exit."""
    handshake.prepare_process()
    hclog.configure()
    try:
        version = handshake.negotiate_protocol_version(os.environ)
    except handshake.HandshakeError as err:
        logger.error("plugin cannot start", extra={"error": str(err)})
        sys.exit(1)

    life = lifecycle.Lifecycle()
    life.install_signal_handlers()
    work_dir = lifecycle.make_work_dir(os.environ.get("PLUGIN_UNIX_SOCKET_DIR") or None)
    code = 1
    try:
        running = _start(factory, work_dir, life, version)
        reason = life.wait()
        _stop(running)
        logger.info("plugin stopped", extra={"reason": reason})
        code = 0
    except Exception:
        logger.exception("plugin failed")
    finally:
        lifecycle.remove_work_dir(work_dir)
        logging.shutdown()
    # Worker threads may still sit in a backend call that never returns; the
    # process must exit anyway, because no one else will stop it.
    os._exit(code)


def _start(
    factory: Callable[[], Backend],
    work_dir: Path,
    life: lifecycle.Lifecycle,
    protocol: int,
) -> _Running:
    advertised = str(work_dir / "plugin.sock")
    mtls = _mutual_tls(work_dir)
    broker = Broker(None if mtls is None else mtls.client)
    version = plugin_version()
    backends = BackendService(factory, broker, version)
    housekeeping = HousekeepingServices(life.request_stop)
    server = GrpcServer(
        [broker.handler(), *backends.handlers(), *housekeeping.handlers()],
        max_workers=MAX_WORKERS,
        tls_context=None if mtls is None else mtls.server,
        run_inline=backends.runs_inline,
    )
    server.start(advertised)
    _set_socket_group(advertised, work_dir)

    cert_b64 = "" if mtls is None else mtls.cert_b64
    handshake.write_handshake(handshake.handshake_line(advertised, cert_b64, protocol))
    housekeeping.capture_stdout()
    logger.info(
        "plugin started",
        extra={
            "address": advertised,
            "pid": os.getpid(),
            "version": version,
            "protocol": protocol,
        },
    )
    return _Running(server, backends, housekeeping)


@dataclass
class _MutualTls:
    server: ssl.SSLContext
    client: ssl.SSLContext
    cert_b64: str  # the plugin's certificate for the handshake line


def _mutual_tls(work_dir: Path) -> _MutualTls | None:
    """Return the TLS contexts that trust only Vault's certificate, if it has one.

    Protocol 5 (AutoMTLS) passes Vault's certificate in PLUGIN_CLIENT_CERT.
    Protocol 4 passes a wrapping token for a certificate both ends share,
    except in metadata mode, where Vault only reads the plugin's paths and
    type over a plaintext connection.
    """
    peer_cert = os.environ.get("PLUGIN_CLIENT_CERT", "")
    if peer_cert:
        identity = tls.generate_identity()
        return _MutualTls(
            server=tls.server_context(identity, peer_cert, work_dir),
            client=tls.client_context(identity, peer_cert, work_dir),
            cert_b64=identity.cert_b64(),
        )
    if _vault_env("PLUGIN_METADATA_MODE") == "true":
        logger.info("metadata mode: serving without TLS")
        return None
    token = _vault_env("UNWRAP_TOKEN")
    if token:
        shared = tls.unwrap_identity(token, cafile=_vault_env("CACERT"))
        return _MutualTls(
            server=tls.server_context(shared, shared.cert_pem.decode(), work_dir),
            client=tls.pinned_client_context(shared, work_dir),
            cert_b64="",
        )
    logger.warning("no PLUGIN_CLIENT_CERT or unwrap token is set; serving without TLS")
    return None


def _vault_env(suffix: str) -> str:
    """Return OpenBao's BAO_ variable of that name, else Vault's VAULT_ one."""
    return os.environ.get(f"BAO_{suffix}") or os.environ.get(f"VAULT_{suffix}", "")


def _stop(running: _Running) -> None:
    running.housekeeping.stopping.set()
    running.server.stop(STOP_GRACE_SECONDS)
    running.backends.cleanup_all()


def _set_socket_group(socket_path: str, work_dir: Path) -> None:
    """Let a group reach the socket when Vault names one, as go-plugin does."""
    group = os.environ.get("PLUGIN_UNIX_SOCKET_GROUP", "")
    if not group:
        return
    import grp

    gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    for path, mode in ((str(work_dir), 0o710), (socket_path, 0o660)):
        os.chown(path, -1, gid)
        os.chmod(path, mode)
