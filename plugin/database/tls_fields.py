"""Write-time checks of the PEM fields of a connection config.

libpq reads `tls_ca`, `tls_certificate` and `private_key` only when it
connects, so without these checks a config written with
`verify_connection=false` would store PEM text that fails every request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugin.database.errors import InvalidConfigError

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

    from plugin.database.config import DatabaseConfig

_SHOWN_CHARS = 40


def check_tls_fields(config: DatabaseConfig) -> None:
    """Raise InvalidConfigError unless the config's PEM fields can be used.

    `tls_ca` and `tls_certificate` must contain PEM certificates, and
    `private_key` an unencrypted PEM key that matches the first certificate
    of `tls_certificate`. The certificate and the key come together.
    """
    if bool(config.tls_certificate) != bool(config.private_key):
        given, missing = (
            ("tls_certificate", "private_key")
            if config.tls_certificate
            else ("private_key", "tls_certificate")
        )
        raise InvalidConfigError(
            f"missing {missing}: {given} is set, and TLS client authentication "
            "needs both the certificate and its key; set both or neither"
        )
    if config.tls_ca:
        _load_certificates("tls_ca", config.tls_ca)
    if config.tls_certificate:
        certificates = _load_certificates("tls_certificate", config.tls_certificate)
        _check_key(config.private_key, certificates[0])


def _load_certificates(field_name: str, text: str) -> list[Certificate]:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise InvalidConfigError(
            f"invalid {field_name} {_describe(text)}: expected one or more PEM "
            "certificates, each from -----BEGIN CERTIFICATE----- to "
            "-----END CERTIFICATE-----"
        ) from None


def _describe(text: str) -> str:
    """Return a short form of `text` that shows no key material.

    A PEM value shows its first BEGIN line only, because the text may be a
    private key given in the wrong field.
    """
    begin = next((line for line in text.splitlines() if "-----BEGIN" in line), "")
    if begin:
        return f"starting {begin.strip()!r}"
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"of {len(text)} characters without a -----BEGIN line"


def _check_key(text: str, certificate: Certificate) -> None:
    """Raise InvalidConfigError unless `text` is the key of `certificate`.

    The messages never contain the key.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except TypeError:
        raise InvalidConfigError(
            "invalid private_key: the key is encrypted; give it unencrypted "
            "(openssl pkey -in KEY -out PLAIN)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidConfigError(
            "invalid private_key: expected an unencrypted PEM private key, from "
            "-----BEGIN PRIVATE KEY----- (or RSA or EC PRIVATE KEY) to its END line"
        ) from None

    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    certified = certificate.public_key().public_bytes(*spki)
    if key.public_key().public_bytes(*spki) != certified:
        raise InvalidConfigError(
            "invalid private_key: it is not the key of the first certificate in "
            f"tls_certificate ({certificate.subject.rfc4514_string()}); give the "
            "key that belongs to that certificate"
        )
