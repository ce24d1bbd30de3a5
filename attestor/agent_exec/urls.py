"""Split a Vault address and percent-encode URL parts, without `urllib.parse`.

`urllib.parse` imports `re` and `ipaddress`, which add about 7 ms to
agent-exec's start-up (Python 3.11). agent-exec needs only the scheme, host
and port of an `http` or `https` address, and `quote` for path and query
parts. A redirect's `Location` still goes through `urllib.parse`.
"""

from __future__ import annotations

DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 unreserved characters, which `urllib.parse.quote` never encodes.
_ALWAYS_SAFE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
)


class BaseUrl:
    """The parts of a `scheme://host[:port]` address; `host` has no brackets."""

    __slots__ = ("host", "netloc", "port", "scheme")

    def __init__(self, scheme: str, host: str, port: int, netloc: str) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.netloc = netloc


def split_base_url(url: str) -> BaseUrl:
    """Split an `http` or `https` address; raise ValueError if it is not one.

    The host is lowercased as `urllib.parse` does, an IPv6 literal loses its
    brackets, and a missing port becomes the scheme's default.
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in DEFAULT_PORTS:
        raise ValueError("the scheme is not http or https")
    netloc = rest
    for end in "/?#":
        netloc = netloc.partition(end)[0]
    host_port = netloc.rpartition("@")[2]

    if host_port.startswith("["):
        host, bracket, port_part = host_port[1:].partition("]")
        if not bracket or (port_part and not port_part.startswith(":")):
            raise ValueError("the IPv6 host has no closing bracket")
        port_text = port_part[1:]
    else:
        host, _, port_text = host_port.partition(":")
    if not host:
        raise ValueError("the host is missing")
    if any(char.isspace() or not char.isprintable() for char in host):
        raise ValueError(f"the host {host!r} contains a space or control character")

    port = DEFAULT_PORTS[scheme]
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()):
            raise ValueError(f"the port {port_text!r} is not a number")
        port = int(port_text)
        if port > 65535:
            raise ValueError(f"the port {port} is above 65535")
    return BaseUrl(scheme=scheme, host=host.lower(), port=port, netloc=host_port)


def check_origin_only(url: str) -> None:
    """Raise ValueError if `url` has user information, a path, a query or a fragment.

    agent-exec sends every request to `/v1/...` on the host, so a path
    prefix such as `/vault` would be dropped, and it never sends credentials
    from the address. A lone `/` path is accepted.
    """
    rest = url.partition("://")[2]
    netloc = rest
    for end in "/?#":
        netloc = netloc.partition(end)[0]
    if "@" in netloc:
        raise ValueError("user information in the address is not supported")
    tail = rest[len(netloc) :]
    if tail not in ("", "/"):
        raise ValueError(
            "a path, query or fragment after the port is not supported, "
            "and a path prefix cannot be used"
        )


def hide_userinfo(url: str) -> str:
    """Return `url` with any `user:password@` before the host replaced by `***@`."""
    scheme, separator, rest = url.partition("://")
    netloc = rest
    for end in "/?#":
        netloc = netloc.partition(end)[0]
    if not separator or "@" not in netloc:
        return url
    host_port = netloc.rpartition("@")[2]
    return f"{scheme}://***@{host_port}{rest[len(netloc) :]}"


def quote(text: str, safe: str = "/") -> str:
    """Percent-encode `text` as UTF-8, as `urllib.parse.quote` does."""
    allowed = _ALWAYS_SAFE | frozenset(safe.encode("ascii"))
    return "".join(
        chr(byte) if byte in allowed else f"%{byte:02X}" for byte in text.encode()
    )
