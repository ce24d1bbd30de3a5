"""The go-plugin start-up contract: magic cookie, protocol version, stdout.

Vault reads the first line the plugin writes to stdout as the handshake
`CORE|APP|NETWORK|ADDRESS|PROTOCOL|CERT`. Anything written to stdout before
that line breaks the start, including a stray print in an imported module,
so `guard_stdout` points file descriptor 1 at stderr until the handshake is
written to a saved copy of the real stdout.

This module imports only the standard library, so the entry point can run it
before importing anything else.
"""

from __future__ import annotations

import os
import sys

MAGIC_COOKIE_KEY = "VAULT_BACKEND_PLUGIN"
MAGIC_COOKIE_VALUE = "6669da05-b1c8-4f49-97d9-c8e5bed98e20"
CORE_PROTOCOL_VERSION = 1
APP_PROTOCOL_VERSION = 5
# Versions of Vault's fallback client, which has no AutoMTLS, highest first.
FALLBACK_PROTOCOL_VERSIONS = (4, 3)

_real_stdout_fd: int | None = None


class HandshakeError(Exception):
    """The plugin was started in a way it cannot serve."""


def check_magic_cookie(environ: os._Environ[str] | dict[str, str]) -> None:
    """Raise HandshakeError unless Vault's magic cookie is in the environment."""
    if environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        raise HandshakeError(
            "this program is a Vault/OpenBao plugin and is not meant to be run "
            f"directly: {MAGIC_COOKIE_KEY} is missing or wrong; register it "
            "with `bao plugin register` and let Vault start it"
        )


def negotiate_protocol_version(environ: os._Environ[str] | dict[str, str]) -> int:
    """Return the plugin protocol version to speak: 5, else 4 or 3.

    Vault's v5 client offers 5. When a mount's first start of the plugin
    fails, Vault keeps a fallback client for that mount, which offers 3 and
    4; over gRPC the two are the same protocol (Vault's sdk/plugin/serve.go).
    """
    offered = environ.get("PLUGIN_PROTOCOL_VERSIONS", "")
    versions = {part.strip() for part in offered.split(",") if part.strip()}
    for version in (APP_PROTOCOL_VERSION, *FALLBACK_PROTOCOL_VERSIONS):
        if str(version) in versions:
            return version
    raise HandshakeError(
        f"Vault offered plugin protocol versions {offered!r}, but this plugin "
        "speaks versions 3 to 5 (Vault 1.12+, OpenBao 2.0+)"
    )


def prepare_process() -> None:
    """Exit unless Vault started this process, then guard stdout.

    Call it first thing in an entry point, before importing modules that
    might print; calling it again is harmless.
    """
    try:
        check_magic_cookie(os.environ)
    except HandshakeError as err:
        print(err, file=sys.stderr)
        sys.exit(1)
    guard_stdout()


def guard_stdout() -> None:
    """Redirect file descriptor 1 to stderr, keeping the real stdout aside."""
    global _real_stdout_fd  # noqa: PLW0603 - one stdout per process
    if _real_stdout_fd is not None:
        return
    sys.stdout.flush()
    _real_stdout_fd = os.dup(1)
    os.dup2(2, 1)


def handshake_line(
    address: str, cert_b64: str, version: int = APP_PROTOCOL_VERSION
) -> str:
    """Return the handshake line for a unix socket and a base64 DER cert."""
    return f"{CORE_PROTOCOL_VERSION}|{version}|unix|{address}|grpc|{cert_b64}\n"


def write_handshake(line: str) -> None:
    """Write the handshake line to the real stdout, then close it."""
    global _real_stdout_fd  # noqa: PLW0603 - one stdout per process
    # Output that imported modules buffered in sys.stdout belongs on stderr,
    # where file descriptor 1 points until now.
    sys.stdout.flush()
    fd = _real_stdout_fd if _real_stdout_fd is not None else os.dup(1)
    _real_stdout_fd = None
    data = line.encode()
    while data:
        written = os.write(fd, data)
        data = data[written:]
    # go-plugin discards whatever follows the handshake line on stdout, so
    # the real stdout is closed; later writes to fd 1 go to the stdio stream.
    os.close(fd)
