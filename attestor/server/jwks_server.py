"""HTTP server for the JWKS and the OpenID discovery document.

Vault's JWT auth fetches `/.well-known/jwks.json` (with `jwks_url`) or the
discovery document (with `oidc_discovery_url`), caches the keys, and fetches
again when a token carries an unknown `kid`. `Cache-Control: max-age` bounds
how long any other cache may keep a JWKS that lacks a newly promoted key.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import ssl
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from attestor.policy.config import TLSFiles
from attestor.signing.keyring import KeyRing

logger = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


class JWKSServer:
    """Serves the key ring's public keys until `stop` is called."""

    def __init__(
        self,
        keyring: KeyRing,
        *,
        host: str,
        port: int,
        max_age: int,
        tls: TLSFiles | None = None,
        issuer: str | None = None,
    ) -> None:
        self.keyring = keyring
        self.max_age = max_age
        self._httpd = _HTTPServer((host, port), _Handler, family=_family(host))
        self._httpd.owner = self
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(tls.cert_file, tls.key_file)
            # The handshake then runs in the request's thread, so a stalled
            # client cannot block the accept loop.
            self._httpd.socket = context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            scheme = "https"
        bound_port = self._httpd.server_address[1]
        self.url = f"{scheme}://{_url_host(host)}:{bound_port}"
        self.issuer = issuer or self.url
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="attestor-jwks", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        logger.info("serving the JWKS at %s%s", self.url, JWKS_PATH)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        logger.info("stopped the JWKS server at %s", self.url)

    def document(self, path: str) -> dict[str, Any] | None:
        """Return the JSON document served at `path`, or None for 404."""
        if path == JWKS_PATH:
            return self.keyring.jwks()
        if path == DISCOVERY_PATH:
            algorithms = sorted(
                {key.algorithm for key in self.keyring.published_keys()}
            )
            return {
                "issuer": self.issuer,
                "jwks_uri": f"{self.url}{JWKS_PATH}",
                "id_token_signing_alg_values_supported": algorithms,
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "claims_supported": ["sub", "aud", "exp", "iat", "nbf", "iss", "jti"],
            }
        return None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: JWKSServer

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        family: socket.AddressFamily,
    ) -> None:
        self.address_family = family
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a client that gave up the
        # TLS handshake or the connection is worth one log line.
        logger.info(
            "JWKS request from %s failed: %s", client_address, sys.exc_info()[1]
        )


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    # Vault and curl close promptly; a stalled client must not hold a thread.
    timeout = 10

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        document = self.server.owner.document(path)
        if document is None:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no document at {path}"})
            return
        self._send(HTTPStatus.OK, document, cache=True)

    def _send(
        self, status: HTTPStatus, body: dict[str, Any], *, cache: bool = False
    ) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        max_age = self.server.owner.max_age if cache else 0
        self.send_header("Cache-Control", f"public, max-age={max_age}")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("jwks %s: " + format, self.address_string(), *args)


def _family(host: str) -> socket.AddressFamily:
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            return socket.AF_INET6
    except ValueError:
        pass
    return socket.AF_INET


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
