"""The daemon's TOML configuration: parse, validate, and name every mistake.

Every error names the file, the agent (when the mistake is inside an
`[[agent]]` table) and the field, so a bad reload can be fixed from the log
line alone. Unknown keys are errors too, because a misspelt selector list or
ttl would otherwise be ignored silently.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from dataclasses import dataclass
from typing import Any

from attestor.policy.agents import Agent, WrapperRule
from attestor.policy.config_fields import Fields
from attestor.policy.selectors import SelectorError, compile_glob, parse_selector

DEFAULT_AUDIENCE = "agent-bridge"
DEFAULT_TTL = 60
MAX_TTL = 300
ALGORITHMS = ("ES256", "ES384")
# Agent names become Vault JWT role and policy names.
_AGENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class ConfigError(Exception):
    """An invalid configuration file; the message names file, agent and field."""


@dataclass(frozen=True)
class RateLimit:
    """Token bucket per uid: `rate` tokens per second, up to `burst` at once."""

    rate: float
    burst: int


@dataclass(frozen=True)
class TLSFiles:
    """Certificate and key (PEM) for the JWKS server on a non-loopback address."""

    cert_file: str
    key_file: str


@dataclass(frozen=True)
class Config:
    """A validated configuration; `issuer` is None until the JWKS port is bound."""

    path: str
    socket_path: str
    socket_mode: int
    socket_group: str | None
    jwks_host: str
    jwks_port: int
    issuer: str | None
    key_dir: str
    algorithm: str
    jwks_max_age: int
    host: str
    max_hash_bytes: int
    max_ancestors: int
    workers: int
    processes: int
    stall_timeout: float
    request_timeout: float
    rate_limit: RateLimit
    tls: TLSFiles | None
    wrappers: WrapperRule
    agents: tuple[Agent, ...]

    @property
    def max_ttl(self) -> int:
        return max((agent.ttl for agent in self.agents), default=DEFAULT_TTL)


def load_config(path: str) -> Config:
    """Read and validate the TOML file at `path`; raise ConfigError."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except OSError as err:
        raise ConfigError(
            f"{path}: cannot read the config file: {err.strerror}"
        ) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from err
    return parse_config(raw, path)


def parse_config(raw: dict[str, Any], path: str) -> Config:
    """Validate an already parsed TOML document; `path` names it in errors."""
    fields = Fields(raw, f"{path}:", ConfigError)
    jwks_host, jwks_port = _parse_address(fields, "jwks_address", "127.0.0.1:8300")
    socket_group = fields.optional_string("socket_group")
    # With a group, only its members (and root) may connect by default.
    default_mode = 0o666 if socket_group is None else 0o660
    socket_mode = fields.integer("socket_mode", default_mode, minimum=0, maximum=0o777)
    tls = _parse_tls(fields, jwks_host)
    rate = fields.table("rate_limit")

    agent_tables = fields.table_list("agent")
    if not agent_tables:
        # An empty file parses as valid TOML: without this check, a config
        # caught half written would silently revoke every agent.
        fields.fail("agent", "no [[agent]] table; define at least one agent")
    default_audience = fields.strings("audience", [DEFAULT_AUDIENCE])
    agents = tuple(
        _parse_agent(table, index, path, default_audience)
        for index, table in enumerate(agent_tables, start=1)
    )
    _check_unique_names(agents, path)

    config = Config(
        path=path,
        socket_path=fields.string("socket_path", "/run/agent-attestor/agent.sock"),
        socket_mode=socket_mode,
        socket_group=socket_group,
        jwks_host=jwks_host,
        jwks_port=jwks_port,
        issuer=fields.optional_string("issuer"),
        key_dir=fields.string("key_dir", "/var/lib/agent-attestor/keys"),
        algorithm=fields.choice("algorithm", "ES256", ALGORITHMS),
        jwks_max_age=fields.integer("jwks_max_age", 60, minimum=0, maximum=300),
        host=fields.string("host", socket.gethostname()),
        max_hash_bytes=fields.integer("max_hash_bytes", 256 * 1024 * 1024, minimum=1),
        max_ancestors=fields.integer("max_ancestors", 32, minimum=1, maximum=1024),
        workers=fields.integer("workers", 1, minimum=1, maximum=64),
        processes=fields.integer("processes", 2, minimum=1, maximum=64),
        stall_timeout=fields.number("stall_timeout", 10.0, minimum=1.0, maximum=3600),
        request_timeout=fields.number("request_timeout", 2.0, minimum=0.05, maximum=60),
        rate_limit=_parse_rate_limit(
            Fields(rate, f"{path}: [rate_limit]", ConfigError)
        ),
        tls=tls,
        wrappers=_parse_wrappers(fields),
        agents=agents,
    )
    fields.reject_unknown()
    return config


def _parse_agent(
    table: dict[str, Any], index: int, path: str, default_audience: list[str]
) -> Agent:
    label = f"agent {table.get('name')!r}" if "name" in table else f"agent #{index}"
    fields = Fields(table, f"{path}: {label}:", ConfigError)
    name = fields.string("name", None)
    if not _AGENT_NAME.fullmatch(name):
        fields.fail(
            "name",
            f"{name!r} must be 1-63 of a-z, 0-9, _ and -, starting "
            "with a letter or digit, because it names a Vault role",
        )

    selectors = []
    for text in fields.strings("selectors", None):
        try:
            selectors.append(parse_selector(text))
        except SelectorError as err:
            fields.fail("selectors", str(err))
    if not any(selector.kind in ("uid", "user") for selector in selectors):
        fields.fail(
            "selectors",
            "needs a uid: or user: selector, because processes of one uid can "
            "read and control each other and so share an identity",
        )

    agent = Agent(
        name=name,
        selectors=tuple(selectors),
        audience=tuple(fields.strings("audience", default_audience)),
        ttl=fields.integer("ttl", DEFAULT_TTL, minimum=1, maximum=MAX_TTL),
    )
    fields.reject_unknown()
    return agent


def _check_unique_names(agents: tuple[Agent, ...], path: str) -> None:
    seen: set[str] = set()
    for agent in agents:
        if agent.name in seen:
            raise ConfigError(
                f"{path}: agent {agent.name!r}: field 'name': defined twice; "
                "give each [[agent]] its own name"
            )
        seen.add(agent.name)


def _parse_address(fields: Fields, key: str, default: str) -> tuple[str, int]:
    text = fields.string(key, default)
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        fields.fail(key, f"{text!r} must read HOST:PORT, e.g. 127.0.0.1:8300")
    return host, int(port_text)


def _parse_tls(fields: Fields, jwks_host: str) -> TLSFiles | None:
    cert_file = fields.optional_string("tls_cert_file")
    key_file = fields.optional_string("tls_key_file")
    if cert_file and key_file:
        return TLSFiles(cert_file=cert_file, key_file=key_file)
    if cert_file or key_file:
        fields.fail(
            "tls_cert_file", "set both tls_cert_file and tls_key_file, or neither"
        )
    if not _is_loopback(jwks_host):
        fields.fail(
            "jwks_address",
            f"{jwks_host} is not a loopback address, so set tls_cert_file and "
            "tls_key_file: Vault must fetch the JWKS over TLS from another host",
        )
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_rate_limit(fields: Fields) -> RateLimit:
    limit = RateLimit(
        rate=fields.number("per_uid_rate", 50.0, minimum=0.001, maximum=1e9),
        burst=fields.integer("burst", 200, minimum=1, maximum=10**9),
    )
    fields.reject_unknown()
    return limit


def _parse_wrappers(fields: Fields) -> WrapperRule:
    patterns = []
    for pattern in fields.strings("wrapper_paths", ["/**/agent-exec"]):
        try:
            patterns.append(compile_glob(pattern))
        except SelectorError as err:
            fields.fail("wrapper_paths", str(err))
    modules = fields.strings("wrapper_modules", ["attestor.agent_exec"])
    return WrapperRule(paths=tuple(patterns), modules=tuple(modules))
