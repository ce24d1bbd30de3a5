"""Signing keys: generation, PEM files, JWKs and RFC 7638 key ids."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

_CURVES: dict[str, tuple[ec.EllipticCurve, str]] = {
    "ES256": (ec.SECP256R1(), "P-256"),
    "ES384": (ec.SECP384R1(), "P-384"),
}
_ALGORITHM_BY_CURVE = {"secp256r1": "ES256", "secp384r1": "ES384"}


class KeyFileError(Exception):
    """A key file that cannot be read, or that others can read."""


@dataclass(frozen=True)
class PublicKey:
    """A verification key as published in the JWKS."""

    kid: str
    algorithm: str
    jwk: dict[str, str] = field(compare=False)


@dataclass(frozen=True)
class SigningKey:
    """A private key with its key id; only the daemon and `keys rotate` load it."""

    public: PublicKey
    private_key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)

    @property
    def kid(self) -> str:
        return self.public.kid

    @property
    def algorithm(self) -> str:
        return self.public.algorithm


def generate_key(algorithm: str) -> SigningKey:
    curve, _ = _CURVES[algorithm]
    return _wrap(ec.generate_private_key(curve))


def public_jwk(key: ec.EllipticCurvePublicKey, algorithm: str) -> dict[str, str]:
    """Return the JWK of `key` with its RFC 7638 thumbprint as `kid`."""
    _, crv = _CURVES[algorithm]
    size = (key.curve.key_size + 7) // 8
    numbers = key.public_numbers()
    # RFC 7638: the thumbprint covers the required members in lexical order.
    required = {
        "crv": crv,
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(size, "big")),
        "y": _b64url(numbers.y.to_bytes(size, "big")),
    }
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    kid = _b64url(hashlib.sha256(canonical.encode()).digest())
    return {**required, "kid": kid, "alg": algorithm, "use": "sig"}


def private_pem(key: SigningKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PublicKey) -> bytes:
    return jwk_to_public_key(key.jwk).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private(path: str) -> SigningKey:
    """Load a PKCS8 PEM private key; raise KeyFileError if others can read it."""
    data = _read_private_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as err:
        raise KeyFileError(f"{path}: not a PEM private key ({err})") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path}: not an EC private key; only ES256/ES384 are used")
    return _wrap(key)


def load_public(path: str) -> PublicKey:
    try:
        with open(path, "rb") as handle:
            key = serialization.load_pem_public_key(handle.read())
    except (OSError, ValueError) as err:
        raise KeyFileError(f"{path}: cannot load the public key: {err}") from err
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError(f"{path}: not an EC public key")
    algorithm = _ALGORITHM_BY_CURVE[key.curve.name]
    jwk = public_jwk(key, algorithm)
    return PublicKey(kid=jwk["kid"], algorithm=algorithm, jwk=jwk)


def jwk_to_public_key(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    curve, _ = _CURVES[jwk["alg"]]
    x = int.from_bytes(_b64url_decode(jwk["x"]), "big")
    y = int.from_bytes(_b64url_decode(jwk["y"]), "big")
    return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()


def _wrap(private_key: ec.EllipticCurvePrivateKey) -> SigningKey:
    curve_name = private_key.curve.name
    algorithm = _ALGORITHM_BY_CURVE.get(curve_name)
    if algorithm is None:
        raise KeyFileError(f"curve {curve_name} is not supported; use P-256 or P-384")
    jwk = public_jwk(private_key.public_key(), algorithm)
    return SigningKey(
        public=PublicKey(kid=jwk["kid"], algorithm=algorithm, jwk=jwk),
        private_key=private_key,
    )


def _read_private_file(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        raise KeyFileError(
            f"{path}: cannot open the private key: {err.strerror}"
        ) from err
    # The mode is checked on the open descriptor, not the path, so the file
    # cannot be swapped between the check and the read.
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode & 0o777
        if mode & 0o077:
            raise KeyFileError(
                f"{path}: private key has mode {mode:04o}, readable by others; "
                f"run chmod 600 {path} and rotate the keys"
            )
        return handle.read()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
