"""TLS with a P-521 peer certificate, as Vault's go-plugin makes.

grpcio cannot do this handshake, which is why the bridge does TLS with
Python's ssl. `vault_identity` serves the tests of the plugin's own gRPC
server and client, and the benchmark.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plugin.bridge import tls
from plugin.bridge.grpc_server import GrpcServer
from tests.plugin_fixtures.folders import socket_folder

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


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield from socket_folder(tmp_path, "bridge-tls")


def test_server_selects_alpn_h2_for_vault(folder: Path) -> None:
    vault = vault_identity()
    plugin = tls.generate_identity()
    server = GrpcServer(
        [],
        max_workers=2,
        tls_context=tls.server_context(plugin, vault.cert_pem.decode(), folder),
    )
    server.start(str(folder / "plugin.sock"))
    context = vault_context(ssl.PROTOCOL_TLS_CLIENT, vault, plugin, folder)
    try:
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(str(folder / "plugin.sock"))
            with context.wrap_socket(raw, server_hostname="localhost") as conn:
                # grpc-go refuses a connection whose server selected no ALPN.
                assert conn.selected_alpn_protocol() == "h2"
                assert conn.version() == "TLSv1.3"
    finally:
        server.stop(0.5)
