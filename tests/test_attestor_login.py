"""`vault_login` against HTTP servers that are not Vault, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from attestor.login import LoginError, vault_login
from tests.support.exec_fakes import serve_http


@contextmanager
def http_server(status: int, content_type: str, body: bytes) -> Iterator[str]:
    """Serve `body` with `status` to every POST; yield the server's address."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serve_http(Handler) as address:
        yield address


@pytest.mark.parametrize(
    ("status", "content_type", "body", "problem"),
    [
        (501, "text/html", b"<h1>Unsupported method</h1>", "HTTP 501 and no JSON"),
        (500, "text/html", b"<h1>Internal Server Error</h1>", "HTTP 500 and no JSON"),
        (418, "text/plain", b"teapot", "an HTTP error status and no JSON"),
        (200, "application/json", b"<html>not json</html>", "response is not JSON"),
    ],
)
def test_login_names_non_vault_server(
    status: int, content_type: str, body: bytes, problem: str
) -> None:
    with (
        http_server(status, content_type, body) as address,
        pytest.raises(LoginError) as caught,
    ):
        vault_login(address, jwt="x.e30.x", role="dev")

    message = str(caught.value)
    assert message.startswith(f"the server at {address} is not Vault")
    assert problem in message
    assert "check --address or VAULT_ADDR" in message
    assert "<" not in message


def test_login_keeps_vault_error_message() -> None:
    body = b'{"errors": ["role \\"dev\\" could not be found"]}'
    with (
        http_server(400, "application/json", body) as address,
        pytest.raises(LoginError) as caught,
    ):
        vault_login(address, jwt="x.e30.x", role="dev")

    message = str(caught.value)
    assert f"Vault at {address} rejected the login to auth/jwt as role 'dev'" in message
    assert 'role "dev" could not be found' in message
