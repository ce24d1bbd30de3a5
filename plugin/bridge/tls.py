"""Mutual TLS between Vault and the plugin (go-plugin "AutoMTLS").

Vault passes its client certificate in `PLUGIN_CLIENT_CERT`. The plugin
generates its own certificate at start and sends its DER form, base64
without padding, in the handshake line. Each side trusts exactly the other's
self-signed certificate. Vault's certificate is ECDSA P-521, which the TLS
library bundled with grpcio does not accept, so the bridge's own HTTP/2
server and client (grpc_server, h2client) do TLS with Python's `ssl`
module (OpenSSL).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import secrets
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# go-plugin verifies the plugin's certificate against this name.
SERVER_NAME = "localhost"
ALPN_PROTOCOLS = ["h2"]
_VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class Identity:
    """The plugin's own certificate and private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def cert_b64(self) -> str:
        """Return the DER certificate as base64 without padding."""
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        der = cert.public_bytes(serialization.Encoding.DER)
        return base64.b64encode(der).decode().rstrip("=")


def generate_identity() -> Identity:
    """Create a self-signed ECDSA P-256 certificate for `localhost`.

    Like go-plugin's own, it is a CA certificate (the peer uses it as its
    only trust anchor) with both client and server usage, because the plugin
    is the TLS server for Vault's calls and the TLS client on the broker.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    usage, extended_usage = _usages()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(127) + 1)
        .not_valid_before(now - datetime.timedelta(seconds=30))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(usage, critical=True)
        .add_extension(extended_usage, critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Identity(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _usages() -> tuple[x509.KeyUsage, x509.ExtendedKeyUsage]:
    # The key usages of go-plugin's certificates, so Go's checks pass alike.
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    extended_usage = x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    )
    return usage, extended_usage


def _load_identity(context: ssl.SSLContext, identity: Identity, work_dir: Path) -> None:
    # ssl can only load a key from a file: write it into the private 0700
    # work folder for the moment of loading, then remove it.
    key_path = work_dir / f"key-{secrets.token_hex(8)}.pem"
    cert_path = work_dir / f"cert-{secrets.token_hex(8)}.pem"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as key_file:
            key_file.write(identity.key_pem)
        cert_path.write_bytes(identity.cert_pem)
        context.load_cert_chain(cert_path, key_path)
    finally:
        key_path.unlink(missing_ok=True)
        cert_path.unlink(missing_ok=True)


def _base_context(
    purpose: ssl._SSLMethod, identity: Identity, peer_cert_pem: str, work_dir: Path
) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cadata=peer_cert_pem)
    except ssl.SSLError as err:
        raise ValueError(
            "PLUGIN_CLIENT_CERT does not hold a PEM certificate; Vault sets it "
            "when it starts a plugin with automatic mutual TLS"
        ) from err
    _load_identity(context, identity, work_dir)
    # grpc-go refuses a TLS connection on which ALPN did not select h2.
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


def server_context(
    identity: Identity, peer_cert_pem: str, work_dir: Path
) -> ssl.SSLContext:
    """Return a TLS server context that requires Vault's certificate."""
    return _base_context(ssl.PROTOCOL_TLS_SERVER, identity, peer_cert_pem, work_dir)


def client_context(
    identity: Identity, peer_cert_pem: str, work_dir: Path
) -> ssl.SSLContext:
    """Return a TLS client context for Vault's broker servers."""
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT, identity, peer_cert_pem, work_dir)
    context.check_hostname = True
    return context


def unwrap_identity(token: str, cafile: str = "", timeout: float = 30.0) -> Identity:
    """Fetch the certificate and key that Vault wrapped for a protocol 4 start.

    Without AutoMTLS, Vault generates one self-signed ECDSA P-521 certificate
    for both ends, wraps it with its key in a response-wrapping token passed
    as BAO_UNWRAP_TOKEN (VAULT_UNWRAP_TOKEN), and names its API address in
    the token's `addr` claim. The plugin unwraps it over that API, trusting
    `cafile` (else the system's CAs) for an https address.
    """
    address = _wrapping_token_address(token)
    url = address.rstrip("/") + "/v1/sys/wrapping/unwrap"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the wrapping token's addr {address!r} is not http(s)")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=b"{}", method="PUT", headers={"X-Vault-Token": token}
    )
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=cafile or None)
    try:
        with urllib.request.urlopen(  # noqa: S310 - the scheme is checked above
            request, timeout=timeout, context=context
        ) as response:
            data = json.loads(response.read())["data"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"unwrapping the plugin's TLS certificate at {url} failed: {err}"
        ) from err
    cert = x509.load_der_x509_certificate(base64.b64decode(data["ServerCert"]))
    key = serialization.load_der_private_key(
        base64.b64decode(data["ServerKey"]), password=None
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Identity(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def _wrapping_token_address(token: str) -> str:
    """Return the `addr` claim of a wrapping token, a JWT, without verifying it.

    Vault's own plugin TLS provider (api/plugin_helpers.go) reads it the
    same way. The token comes from the environment Vault gave the process.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("the wrapping token is not a JWT; Vault sets it as one")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, TypeError) as err:
        raise ValueError("the wrapping token's claims are not JSON") from err
    address = claims.get("addr") if isinstance(claims, dict) else None
    if not isinstance(address, str) or not address:
        raise ValueError("the wrapping token has no addr claim")
    return address


def pinned_client_context(identity: Identity, work_dir: Path) -> ssl.SSLContext:
    """Return a broker client context that trusts only `identity`'s certificate.

    Under protocol 4 both ends use the one certificate Vault generated. Its
    name is a random UUID, so the name is not checked: the pinned certificate
    is the only trust anchor.
    """
    peer = identity.cert_pem.decode()
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT, identity, peer, work_dir)
    context.check_hostname = False
    return context
