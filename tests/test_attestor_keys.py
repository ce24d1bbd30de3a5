"""Signing keys on disk, their rotation, and what the JWKS server publishes."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestor.policy.config import TLSFiles
from attestor.server.jwks_server import JWKSServer
from attestor.signing.keyring import KeyRing
from attestor.signing.keys import KeyFileError
from attestor.signing.keystore import KeyStore

pytestmark = pytest.mark.timeout(60)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_key_dir_is_private(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"

    keys = KeyStore(str(key_dir), "ES256").load_or_create()

    assert mode_of(key_dir) == 0o700
    assert mode_of(key_dir / f"{keys.current.kid}.key") == 0o600
    assert mode_of(key_dir / f"{keys.next.kid}.key") == 0o600
    assert keys.current.kid != keys.next.kid
    assert keys.current.algorithm == "ES256"


def test_readable_key_dir_is_refused(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    KeyStore(str(key_dir), "ES256").load_or_create()
    key_dir.chmod(0o755)

    with pytest.raises(KeyFileError, match=f"run chmod 700 {key_dir}"):
        KeyStore(str(key_dir), "ES256").load()


def test_readable_private_key_is_refused(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    keys = KeyStore(str(key_dir), "ES256").load_or_create()
    (key_dir / f"{keys.current.kid}.key").chmod(0o644)

    with pytest.raises(KeyFileError, match="readable by others"):
        KeyStore(str(key_dir), "ES256").load()


def test_rotation_promotes_next_and_retires_current(tmp_path: Path) -> None:
    store = KeyStore(str(tmp_path / "keys"), "ES256")
    before = store.load_or_create()

    after = store.rotate(keep_seconds=360)

    assert after.current.kid == before.next.kid
    assert after.next.kid not in (before.current.kid, before.next.kid)
    assert [entry.key.kid for entry in after.retired] == [before.current.kid]
    assert not (tmp_path / "keys" / f"{before.current.kid}.key").exists()
    assert (tmp_path / "keys" / f"{before.current.kid}.pub").exists()


def test_expired_retired_keys_are_pruned(tmp_path: Path) -> None:
    store = KeyStore(str(tmp_path / "keys"), "ES256")
    first = store.load_or_create()

    store.rotate(keep_seconds=-1)  # the retired key is already past its time
    third = store.rotate(keep_seconds=360)

    retired = [entry.key.kid for entry in third.retired]
    assert first.current.kid not in retired
    assert not (tmp_path / "keys" / f"{first.current.kid}.pub").exists()


def test_keyring_publishes_signed_key_until_last_expiry(tmp_path: Path) -> None:
    now = [time.time()]
    store = KeyStore(str(tmp_path / "keys"), "ES256")
    ring = KeyRing(store, clock=lambda: now[0])
    old = ring.signing_key()
    ring.record_issued(old, now[0] + 300)

    store.rotate(keep_seconds=-1)  # the key directory drops the old key at once
    ring.reload()
    published_during = {key.kid for key in ring.published_keys()}
    now[0] += 301
    published_after = {key.kid for key in ring.published_keys()}

    assert ring.signing_key().kid != old.kid
    assert old.kid in published_during
    assert old.kid not in published_after


def test_keyring_notices_rotation_by_mtime(tmp_path: Path) -> None:
    store = KeyStore(str(tmp_path / "keys"), "ES256")
    ring = KeyRing(store, check_interval=0.0)
    before = ring.signing_key()

    rotated = store.rotate(keep_seconds=360)

    assert ring.signing_key().kid == rotated.current.kid != before.kid


def test_keyring_keeps_keys_when_dir_breaks(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    store = KeyStore(str(key_dir), "ES256")
    ring = KeyRing(store, check_interval=0.0)
    before = ring.signing_key()

    (key_dir / "keys.json").write_text("{broken")

    assert ring.signing_key().kid == before.kid


def test_jwks_server_headers_and_documents(tmp_path: Path) -> None:
    ring = KeyRing(KeyStore(str(tmp_path / "keys"), "ES256"))
    server = JWKSServer(ring, host="127.0.0.1", port=0, max_age=45)
    server.start()
    try:
        with urllib.request.urlopen(f"{server.url}/.well-known/jwks.json") as response:  # noqa: S310
            cache_control = response.headers["Cache-Control"]
            jwks = json.load(response)
        with urllib.request.urlopen(  # noqa: S310
            f"{server.url}/.well-known/openid-configuration"
        ) as response:
            discovery = json.load(response)
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{server.url}/keys")  # noqa: S310
    finally:
        server.stop()
    missing.value.close()

    assert cache_control == "public, max-age=45"
    assert [key["kid"] for key in jwks["keys"]] == [
        ring.signing_key().kid,
        ring.published_keys()[1].kid,
    ]
    assert all("d" not in key for key in jwks["keys"])  # no private parts
    assert discovery["issuer"] == server.url
    assert discovery["jwks_uri"] == f"{server.url}/.well-known/jwks.json"
    assert discovery["id_token_signing_alg_values_supported"] == ["ES256"]
    assert missing.value.code == 404


def test_published_jwk_verifies_signature(tmp_path: Path) -> None:
    ring = KeyRing(KeyStore(str(tmp_path / "keys"), "ES384"))
    key = ring.signing_key()
    token = jwt.encode(
        {"sub": "x"}, key.private_key, algorithm="ES384", headers={"kid": key.kid}
    )

    (jwk,) = [k for k in ring.jwks()["keys"] if k["kid"] == key.kid]

    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES384"])["sub"] == "x"
    assert jwk["crv"] == "P-384"


def test_rotation_by_root_keeps_owner(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    store = KeyStore(str(key_dir), "ES256")
    store.load_or_create()
    os.chown(key_dir, 65534, 65534)  # as if the daemon ran as the user nobody (65534)

    rotated = store.rotate(keep_seconds=360)

    assert (key_dir / f"{rotated.next.kid}.key").stat().st_uid == 65534
    assert (key_dir / "keys.json").stat().st_uid == 65534


def write_self_signed(folder: Path) -> tuple[Path, Path]:
    """Write a certificate for 127.0.0.1 and its key; return both paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "jwks.crt", folder / "jwks.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_jwks_server_over_tls(tmp_path: Path) -> None:
    cert_file, key_file = write_self_signed(tmp_path)
    ring = KeyRing(KeyStore(str(tmp_path / "keys"), "ES256"))
    server = JWKSServer(
        ring,
        host="127.0.0.1",
        port=0,
        max_age=60,
        tls=TLSFiles(str(cert_file), str(key_file)),
    )
    server.start()
    context = ssl.create_default_context(cafile=str(cert_file))
    try:
        with urllib.request.urlopen(  # noqa: S310
            f"{server.url}/.well-known/jwks.json", context=context
        ) as response:
            jwks = json.load(response)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"{server.url}/.well-known/jwks.json")  # noqa: S310
    finally:
        server.stop()

    assert server.url.startswith("https://127.0.0.1:")
    assert ring.signing_key().kid in {key["kid"] for key in jwks["keys"]}
