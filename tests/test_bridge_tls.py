"""The outbound TLS relay with a P-521 peer certificate, as Vault's go-plugin makes.

grpcio cannot do this handshake, which is why the relay exists. These tests
drive it with Python ssl peers and plain echo servers on unix sockets.
`vault_identity` also serves the tests of the plugin's own gRPC server.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plugin.bridge import tls
from plugin.bridge.tlsproxy import TlsProxy

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)


def vault_identity() -> tls.Identity:
    """Return a certificate shaped like go-plugin's: P-521, CA, localhost."""
    key = ec.generate_private_key(ec.SECP521R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            False,
        )
        .sign(key, hashes.SHA512())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return tls.Identity(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def vault_context(
    purpose: ssl._SSLMethod, vault: tls.Identity, plugin: tls.Identity, folder: Path
) -> ssl.SSLContext:
    """Return the Vault side's context, trusting only the plugin's certificate."""
    context = ssl.SSLContext(purpose)
    context.load_verify_locations(cadata=plugin.cert_pem.decode())
    (folder / "vault.crt").write_bytes(vault.cert_pem)
    (folder / "vault.key").write_bytes(vault.key_pem)
    context.load_cert_chain(folder / "vault.crt", folder / "vault.key")
    context.set_alpn_protocols(["h2"])
    if purpose == ssl.PROTOCOL_TLS_SERVER:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def serve_unix(path: Path, wrap: Callable[[socket.socket], socket.socket]) -> None:
    """Echo every byte back on each connection to `path`, in threads."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()

    def echo(conn: socket.socket) -> None:
        try:
            peer = wrap(conn)
        except OSError:
            conn.close()
            return
        with peer:
            try:
                while data := peer.recv(65536):
                    peer.sendall(data)
            except OSError:
                return

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def exchange(sock: socket.socket, payload: bytes) -> bytes:
    """Send `payload` from a thread while reading the same number of bytes."""
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    received = bytearray()
    while len(received) < len(payload):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    sender.join()
    return bytes(received)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be long.
    path = Path(f"/tmp/bridge-tls-{os.getpid()}-{tmp_path.name[-8:]}")
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def proxy(folder: Path) -> Iterator[tuple[TlsProxy, tls.Identity, tls.Identity]]:
    vault = vault_identity()
    plugin = tls.generate_identity()
    relay = TlsProxy(tls.client_context(plugin, vault.cert_pem.decode(), folder))
    relay.start()
    yield relay, vault, plugin
    relay.stop()
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


def test_outbound_plaintext_relays_to_tls(
    proxy: tuple[TlsProxy, tls.Identity, tls.Identity], folder: Path
) -> None:
    relay, vault, plugin = proxy
    server_context = vault_context(ssl.PROTOCOL_TLS_SERVER, vault, plugin, folder)
    serve_unix(
        folder / "vault.sock",
        lambda conn: server_context.wrap_socket(conn, server_side=True),
    )
    relay.dial_tls(str(folder / "relay.sock"), str(folder / "vault.sock"))

    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(folder / "relay.sock"))
        assert exchange(conn, PAYLOAD) == PAYLOAD


def test_removed_listener_deletes_socket(
    proxy: tuple[TlsProxy, tls.Identity, tls.Identity], folder: Path
) -> None:
    relay, _, _ = proxy
    relay.dial_tls(str(folder / "relay.sock"), str(folder / "nowhere.sock"))
    assert (folder / "relay.sock").exists()

    relay.remove_listener(str(folder / "relay.sock"))

    relay.stop()
    assert not (folder / "relay.sock").exists()
