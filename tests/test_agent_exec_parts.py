"""agent-exec's building blocks, each through its own interface.

The HTTP client talks to real sockets on 127.0.0.1; the renewer talks to the
fake Vault of tests/support/exec_fakes.py.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import math
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestor.agent_exec.audit import decode_claims
from attestor.agent_exec.child import _decode_environment, _encode_environment
from attestor.agent_exec.command import resolve_command
from attestor.agent_exec.env import aws_environ, child_environ, database_environ
from attestor.agent_exec.errors import (
    CommandNotExecutableError,
    CommandNotFoundError,
    DeniedError,
    ExecError,
    UnavailableError,
    UsageError,
    printable,
)
from attestor.agent_exec.http import HttpConnection, HttpError
from attestor.agent_exec.options import parse_options
from attestor.agent_exec.renew import Renewable, Renewer
from attestor.agent_exec.roles import Role, creds_params, parse_role
from attestor.agent_exec.urls import quote, split_base_url
from attestor.agent_exec.vault import VaultClient, _tidy
from attestor.inspection.process import AttestationError
from attestor.json_lite import dumps, loads
from attestor.signing.tokens import validate_asserted
from tests.support.exec_fakes import VaultState, fake_vault, make_jwt

DB_DATA = {
    "username": "v-dev-x",
    "password": "a b@c/d:e%f",
    "host": "db.internal",
    "port": 5432,
    "database": "sales data",
}


def executable(path: Path, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def test_command_found_in_path(tmp_path: Path) -> None:
    tool = executable(tmp_path / "tool")
    assert resolve_command("tool", f"/nonexistent:{tmp_path}") == str(tool)


def test_command_with_slash_used_as_given(tmp_path: Path) -> None:
    tool = executable(tmp_path / "tool")
    assert resolve_command(str(tool), "") == str(tool)


def test_command_not_found(tmp_path: Path) -> None:
    with pytest.raises(CommandNotFoundError, match="'missing' is in no directory"):
        resolve_command("missing", str(tmp_path))


def test_command_later_executable_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    executable(first / "tool", 0o644)
    tool = executable(second / "tool")
    assert resolve_command("tool", f"{first}:{second}") == str(tool)


def test_command_not_executable(tmp_path: Path) -> None:
    executable(tmp_path / "tool", 0o644)
    with pytest.raises(CommandNotExecutableError, match="permission denied"):
        resolve_command("tool", str(tmp_path))


def test_command_directory_not_executable(tmp_path: Path) -> None:
    with pytest.raises(CommandNotExecutableError, match="is a directory"):
        resolve_command(str(tmp_path), "")


def test_command_fifo_not_executable(tmp_path: Path) -> None:
    fifo = tmp_path / "tool"
    os.mkfifo(fifo)
    fifo.chmod(0o755)
    with pytest.raises(CommandNotExecutableError, match="not a regular file"):
        resolve_command(str(fifo), "")


@pytest.mark.parametrize(
    "first_line",
    [b"#!/nonexistent/interpreter", b"#! /bin/sh/x -e", b"#!/bin/sh\r"],
)
def test_command_missing_interpreter(tmp_path: Path, first_line: bytes) -> None:
    script = tmp_path / "tool"
    script.write_bytes(first_line + b"\necho hi\n")
    script.chmod(0o755)
    with pytest.raises(CommandNotFoundError, match=r"its interpreter .* is not found"):
        resolve_command(str(script), "")
    with pytest.raises(CommandNotFoundError, match="its interpreter"):
        resolve_command("tool", str(tmp_path))


def test_command_interpreter_not_executable(tmp_path: Path) -> None:
    interpreter = executable(tmp_path / "interpreter", 0o644)
    script = tmp_path / "tool"
    script.write_text(f"#!{interpreter}\n")
    script.chmod(0o755)
    with pytest.raises(CommandNotExecutableError, match="is not executable"):
        resolve_command(str(script), "")


def test_command_interpreter_with_argument(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text("#! /bin/sh -e\nexit 0\n")
    script.chmod(0o755)
    assert resolve_command(str(script), "") == str(script)


def test_database_environ_encodes_url() -> None:
    env = database_environ(DB_DATA)
    assert env["PGPASSWORD"] == "a b@c/d:e%f"
    assert env["PGPORT"] == "5432"
    assert env["DATABASE_URL"] == (
        "postgresql://v-dev-x:a%20b%40c%2Fd%3Ae%25f@db.internal:5432/sales%20data"
    )


def test_database_environ_brackets_ipv6() -> None:
    env = database_environ({**DB_DATA, "host": "::1"})
    assert env["PGHOST"] == "::1"
    assert "@[::1]:5432/" in env["DATABASE_URL"]


def test_database_environ_missing_field() -> None:
    with pytest.raises(UnavailableError, match="no 'host' field"):
        database_environ({**DB_DATA, "host": ""})


def test_aws_environ_optional_fields() -> None:
    env = aws_environ({"access_key": "AK", "secret_key": "SK", "session_token": None})
    assert env == {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}


def test_aws_environ_region_for_both_sdks() -> None:
    env = aws_environ(
        {"access_key": "AK", "secret_key": "SK", "session_token": "ST", "region": "r1"}
    )
    assert env["AWS_SESSION_TOKEN"] == "ST"
    assert env["AWS_REGION"] == "r1"
    assert env["AWS_DEFAULT_REGION"] == "r1"


def test_child_environ_scrubs_inherited() -> None:
    inherited = {
        "PATH": "/bin",
        "VAULT_TOKEN": "t",
        "BAO_ADDR": "a",
        "PGSERVICE": "s",
        "AWS_PROFILE": "p",
        "DATABASE_URL": "u",
        "AGENT_ATTESTOR_SOCKET": "/s",
    }
    assert child_environ(inherited, []) == {"PATH": "/bin"}
    env = child_environ(inherited, [("database", DB_DATA)])
    assert env["PGUSER"] == "v-dev-x"
    assert "PGSERVICE" not in env


TLS_SETTINGS = {
    "PGSSLMODE": "verify-full",
    "PGSSLROOTCERT": "/etc/ssl/db-ca.pem",
    "PGSSLCRL": "/etc/ssl/db.crl",
    "PGSSLCRLDIR": "/etc/ssl/crl",
    "PGSSLSNI": "1",
    "PGSSLMINPROTOCOLVERSION": "TLSv1.3",
    "PGSSLMAXPROTOCOLVERSION": "TLSv1.3",
    "PGSSLNEGOTIATION": "direct",
    "PGREQUIRESSL": "1",
    "PGGSSENCMODE": "disable",
    "PGCHANNELBINDING": "require",
    "PGREQUIREAUTH": "scram-sha-256",
    "PGCONNECT_TIMEOUT": "5",
}
IDENTITY_SETTINGS = {
    "PGSSLCERT": "/home/u/client.crt",
    "PGSSLKEY": "/home/u/client.key",
    "PGSSLPASSWORD": "key-pw",
    "PGPASSFILE": "/home/u/.pgpass",
    "PGSERVICE": "prod",
    "PGSERVICEFILE": "/home/u/.pg_service.conf",
    "PGUSER": "admin",
    "PGPASSWORD": "admin-pw",
    "PGHOST": "prod.db",
    "AWS_PROFILE": "admin",
    "AWS_SHARED_CREDENTIALS_FILE": "/home/u/.aws/credentials",
}


def test_child_environ_keeps_database_tls() -> None:
    inherited = {**TLS_SETTINGS, **IDENTITY_SETTINGS, "AWS_CA_BUNDLE": "/ca.pem"}
    env = child_environ(inherited, [("database", DB_DATA)])
    for name, value in TLS_SETTINGS.items():
        assert env[name] == value
    for name in ("PGSSLCERT", "PGSSLKEY", "PGSSLPASSWORD", "PGPASSFILE"):
        assert name not in env
    for name in ("PGSERVICE", "PGSERVICEFILE", "AWS_PROFILE", "AWS_CA_BUNDLE"):
        assert name not in env
    assert env["PGUSER"] == "v-dev-x"
    assert env["PGPASSWORD"] == "a b@c/d:e%f"
    assert env["PGHOST"] == "db.internal"
    assert env["DATABASE_URL"].endswith("/sales%20data?sslmode=verify-full")


def test_child_environ_tls_only_with_role() -> None:
    inherited = {**TLS_SETTINGS, "AWS_CA_BUNDLE": "/ca.pem", "PATH": "/bin"}
    assert child_environ(inherited, []) == {"PATH": "/bin"}
    aws_data = {"access_key": "AK", "secret_key": "SK"}
    env = child_environ(inherited, [("aws", aws_data)])
    assert env["AWS_CA_BUNDLE"] == "/ca.pem"
    assert not any(name.startswith("PG") for name in env)


def test_database_environ_url_without_sslmode() -> None:
    env = child_environ({"PGSSLMODE": ""}, [("database", DB_DATA)])
    assert env["PGSSLMODE"] == ""
    assert "?" not in env["DATABASE_URL"]
    assert "?" not in child_environ({}, [("database", DB_DATA)])["DATABASE_URL"]


@pytest.mark.parametrize(
    ("value", "kind", "name"),
    [
        ("demo", "", "demo"),
        ("database/demo", "database", "demo"),
        ("aws/a.b-c", "aws", "a.b-c"),
    ],
)
def test_parse_role_valid(value: str, kind: str, name: str) -> None:
    spec = parse_role(value)
    assert spec.kind == kind
    assert spec.name == name


@pytest.mark.parametrize("value", ["gcp/demo", "database/", "-demo", "a b", "x/y/z"])
def test_parse_role_invalid(value: str) -> None:
    with pytest.raises(UsageError, match="invalid role"):
        parse_role(value)


def test_creds_params_ttl_per_engine() -> None:
    aws = Role(kind="aws", name="deploy", path="agent-creds/aws/creds/deploy")
    database = Role(kind="database", name="ro", path="agent-creds/database/creds/ro")
    assert creds_params(aws, 60) == {"ttl": "60"}
    assert creds_params(database, 60) == {"ttl": "60"}
    assert creds_params(database, None) is None


def test_options_need_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    with pytest.raises(UsageError, match="no command given"):
        parse_options(["--role", "demo", "--"])


def test_options_need_vault_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    monkeypatch.delenv("BAO_ADDR", raising=False)
    with pytest.raises(UsageError) as caught:
        parse_options(["--role", "demo", "--", "true"])
    assert str(caught.value) == (
        "no Vault address: pass --vault-addr, or set VAULT_ADDR or BAO_ADDR"
    )


@pytest.mark.parametrize(
    ("vault_addr", "bao_addr", "source"),
    [("", "ftp://x:1", "BAO_ADDR"), ("ftp://x:1", "http://127.0.0.1:1", "VAULT_ADDR")],
)
def test_options_name_address_source(
    monkeypatch: pytest.MonkeyPatch, vault_addr: str, bao_addr: str, source: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", vault_addr)
    monkeypatch.setenv("BAO_ADDR", bao_addr)
    with pytest.raises(UsageError) as caught:
        parse_options(["--role", "demo", "--", "true"])
    assert f"invalid Vault address 'ftp://x:1' in {source} (" in str(caught.value)


@pytest.mark.parametrize("address", ["banana", "ftp://vault:8200", "http://"])
def test_options_reject_invalid_vault_address(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", address)
    with pytest.raises(UsageError, match="invalid Vault address"):
        parse_options(["--role", "demo", "--", "true"])


@pytest.mark.parametrize(
    "value", ["-1", "1e308", "86400.5", "inf", "nan", "1_0", "\u0661", " 5"]
)
def test_options_reject_out_of_range_timeout(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    with pytest.raises(UsageError, match="must be 0 to 86400 seconds") as caught:
        parse_options(["--role", "d", "--kill-timeout", value, "--", "true"])
    assert caught.value.exit_code == 64


def test_options_accept_day_long_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    options = parse_options(["--role", "d", "--kill-timeout", "86400", "--", "true"])
    assert options.kill_timeout == 86400.0


@pytest.mark.parametrize("option", ["--mount", "--auth-mount"])
@pytest.mark.parametrize(
    "value", ["", "/", "a b", "jwt\r\nX-Injected: 1", "é", "a//b", "../x", "a/./b"]
)
def test_options_reject_invalid_mount(
    monkeypatch: pytest.MonkeyPatch, option: str, value: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    with pytest.raises(UsageError, match=f"invalid {option} value") as caught:
        parse_options(["--role", "d", f"{option}={value}", "--", "true"])
    assert repr(value) in str(caught.value)
    assert caught.value.exit_code == 64


@pytest.mark.parametrize("option", ["--mount", "--auth-mount"])
@pytest.mark.parametrize("value", ["/jwt", "jwt/", "//jwt//"])
def test_options_strip_mount_slashes(
    monkeypatch: pytest.MonkeyPatch, option: str, value: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    options = parse_options(["--role", "d", option, value, "--", "true"])
    assert getattr(options, option[2:].replace("-", "_")) == "jwt"


def test_options_accept_nested_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    mounts = ["--mount", "/team/agent-creds.v2/", "--auth-mount", "j_w-t"]
    options = parse_options(["--role", "d", *mounts, "--", "true"])
    assert options.mount == "team/agent-creds.v2"
    assert options.auth_mount == "j_w-t"


@pytest.mark.parametrize(
    "address",
    [
        "http://127.0.0.1:8200/vault",
        "http://127.0.0.1:8200?namespace=x",
        "http://127.0.0.1:8200#top",
        "http://[::1]:8200/v1",
    ],
)
def test_options_reject_address_path(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", address)
    with pytest.raises(UsageError, match="not supported") as caught:
        parse_options(["--role", "d", "--", "true"])
    assert caught.value.exit_code == 64


def test_options_hide_address_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://admin:s3cret-pw@127.0.0.1:8200")
    with pytest.raises(UsageError, match="user information") as caught:
        parse_options(["--role", "d", "--", "true"])
    assert "s3cret-pw" not in str(caught.value)
    assert "admin" not in str(caught.value)
    assert "http://***@127.0.0.1:8200" in str(caught.value)


def test_options_accept_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:8200/")
    options = parse_options(["--role", "d", "--", "true"])
    assert options.vault_addr == "http://127.0.0.1:8200/"


def test_options_keep_command_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAO_ADDR", "http://127.0.0.1:2")
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    options = parse_options(["--role", "d", "--", "sh", "--json", "-c", "x"])
    assert options.command == ["sh", "--json", "-c", "x"]
    assert options.vault_addr == "http://127.0.0.1:2"
    assert options.json is False


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--tool", "ps\tql", "invalid --tool value 'ps\\tql': it contains a tab"),
        ("--tool", "psql\n", "non-printable character"),
        ("--on-behalf-of", "", "invalid --on-behalf-of value '': give 1 to 256"),
        ("--on-behalf-of", "a" * 257, "it has 257 characters"),
        ("--tool", "\t" * 256, "value '" + "\\t" * 40 + "'...: it contains a tab"),
    ],
)
def test_options_reject_invalid_assertion(
    monkeypatch: pytest.MonkeyPatch, option: str, value: str, message: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    with pytest.raises(UsageError) as caught:
        parse_options(["--role", "d", option, value, "--", "true"])
    assert message in str(caught.value)
    assert caught.value.exit_code == 64


@pytest.mark.parametrize(
    "value",
    [
        "psql",
        "a b@c",
        "",
        "ps\tql",
        "a\x1bb",
        "a\x7fb",
        "a\x85b",
        "a\u2028b",
        "\u200b",
        "\udcff",  # an undecodable byte of argv
        "é" * 256,
        "é" * 257,
    ],
)
@pytest.mark.parametrize(
    ("option", "key"), [("--tool", "tool"), ("--on-behalf-of", "on_behalf_of")]
)
def test_options_assertion_rule_matches_attestor(
    monkeypatch: pytest.MonkeyPatch, option: str, key: str, value: str
) -> None:
    # validate_asserted is the attestor's own check. agent-exec rejects the
    # same values, with 64, before it sends anything.
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    try:
        validate_asserted({key: value})
    except AttestationError:
        attestor_accepts = False
    else:
        attestor_accepts = True
    try:
        parse_options(["--role", "d", f"{option}={value}", "--", "true"])
    except UsageError as err:
        assert not attestor_accepts
        assert str(err).startswith(f"invalid {option} value ")
        assert err.exit_code == 64
    else:
        assert attestor_accepts


@pytest.mark.parametrize("option", ["--tool", "--on-behalf-of"])
def test_options_reject_invalid_utf8(
    monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    value = os.fsdecode(b"ok " + b"\xc3" * 256)  # as Python decodes argv
    with pytest.raises(UsageError) as caught:
        parse_options(["--role", "d", option, value, "--", "true"])
    shown = "ok " + "\\xc3" * 37
    assert str(caught.value) == (
        f"invalid {option} value '{shown}'...: it is not valid UTF-8 "
        "(259 characters); give UTF-8 text"
    )
    assert caught.value.exit_code == 64


def test_options_accept_printable_assertion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    longest = "é" * 256
    options = parse_options(
        ["--role", "d", "--tool", longest, "--on-behalf-of=a b@c", "--", "true"]
    )
    assert options.tool == longest
    assert options.on_behalf_of == "a b@c"


def test_options_flag_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    argv = ["--role=a", "--role", "aws/b", "-vv", "--kill-timeout", "0.5", "--json"]
    options = parse_options([*argv, "cmd", "-v"])
    assert options.roles == ["a", "aws/b"]
    assert options.verbose == 2
    assert options.kill_timeout == 0.5
    assert options.json is True
    assert options.command == ["cmd", "-v"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--t", "x"], "unrecognized arguments: --t"),
        (["--rol", "x"], "unrecognized arguments: --rol"),
        (["--js"], "unrecognized arguments: --js"),
        (["--kill=1"], "unrecognized arguments: --kill"),
        (["--tool"], "argument --tool: expected one argument"),
        (["--tool", "--json"], "argument --tool: expected one argument"),
        (["--json=yes"], "argument --json: ignored explicit argument 'yes'"),
        (["-x"], "unrecognized arguments: -x"),
        (["--ttl", "0"], "argument --ttl: must be at least 1 second, got 0"),
        (
            ["--ttl", "9223372037"],
            "argument --ttl: must be at most 9223372036 seconds, the largest TTL "
            "Vault accepts, got 9223372037",
        ),
        (
            ["--ttl", "9" * 50],
            "argument --ttl: must be at most 9223372036 seconds, the largest TTL "
            f"Vault accepts, got {'9' * 40}...",
        ),
        (
            ["--ttl", "soon"],
            "argument --ttl: invalid number of seconds 'soon': give whole seconds",
        ),
        (
            ["--ttl", "\u0661\u0662"],
            "argument --ttl: invalid number of seconds '\u0661\u0662': give whole "
            "seconds",
        ),
        (
            ["--ttl", "1_0"],
            "argument --ttl: invalid number of seconds '1_0': give whole seconds",
        ),
        (
            ["--ttl= 7"],
            "argument --ttl: invalid number of seconds ' 7': give whole seconds",
        ),
        (
            ["--vault-addr="],
            "argument --vault-addr: empty value; give one, or leave --vault-addr "
            "out to use VAULT_ADDR or BAO_ADDR",
        ),
        (
            ["--attestor-socket", ""],
            "argument --attestor-socket: empty value; give one, or leave "
            "--attestor-socket out to use AGENT_ATTESTOR_SOCKET",
        ),
    ],
)
def test_options_usage_errors(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    with pytest.raises(UsageError) as caught:
        parse_options(["--role", "d", *argv, "--", "true"])
    assert str(caught.value) == f"{message}; see agent-exec --help"


def test_options_accept_max_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    options = parse_options(["--role", "d", "--ttl", "9223372036", "--", "true"])
    assert options.ttl == 9223372036


def test_options_need_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    with pytest.raises(UsageError, match="required: --role"):
        parse_options(["--", "true"])


def test_options_help_lists_every_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as caught:
        parse_options(["--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: agent-exec --role NAME")
    for option in ("--role NAME", "--attestor-socket PATH", "--tool TEXT"):
        assert f"  {option}" in text
    for option in ("--on-behalf-of TEXT", "--ttl SECONDS", "-v, --verbose"):
        assert f"  {option}" in text
    assert "  77  denied" in text
    assert max(len(line) for line in text.splitlines()) <= 78


@pytest.mark.parametrize(
    ("url", "host", "port", "netloc"),
    [
        ("http://127.0.0.1:8200", "127.0.0.1", 8200, "127.0.0.1:8200"),
        ("HTTPS://Vault.Example", "vault.example", 443, "Vault.Example"),
        ("http://[::1]:8200/v1?x#y", "::1", 8200, "[::1]:8200"),
        ("http://user@vault:80/", "vault", 80, "vault:80"),
    ],
)
def test_split_base_url(url: str, host: str, port: int, netloc: str) -> None:
    parts = split_base_url(url)
    assert parts.host == host
    assert parts.port == port
    assert parts.netloc == netloc


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("vault:8200", "the scheme is not http or https"),
        ("ftp://vault", "the scheme is not http or https"),
        ("http://", "the host is missing"),
        ("http://[::1", "the IPv6 host has no closing bracket"),
        ("http://v:99999", "the port 99999 is above 65535"),
        ("http://v:x", "the port 'x' is not a number"),
        (
            "http://ho\x1bst:1",
            "the host 'ho\\x1bst' contains a space or control character",
        ),
        ("http://a b", "the host 'a b' contains a space or control character"),
    ],
)
def test_split_base_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        split_base_url(url)
    assert str(caught.value) == message


@pytest.mark.parametrize("text", ["a b@c/d:e%f", "Zoë ✓/~_.-", "", "\x00+&="])
def test_quote_matches_urllib(text: str) -> None:
    assert quote(text) == urllib.parse.quote(text)
    assert quote(text, safe="") == urllib.parse.quote(text, safe="")


def test_json_lite_matches_json() -> None:
    document = {"a": [1, -2.5, 'x\u00e9\n"', True, None, {"b": False}], "ü": {}}
    text = dumps(document)
    assert text.isascii()
    assert json.loads(text) == document
    assert loads(text) == document
    assert loads(json.dumps(document, indent=2).encode()) == document
    assert math.isnan(loads(" NaN "))


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "[1,]", '"\\q"', "\xff"])
def test_json_lite_rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        loads(text.encode("latin-1"))


@pytest.mark.parametrize("value", [{1: "a"}, float("inf"), {"a": {1, 2}}])
def test_json_lite_rejects_unencodable(value: object) -> None:
    with pytest.raises(TypeError):
        dumps(value)


def test_environment_message_round_trip() -> None:
    env = {
        "PATH": "/bin",
        "PGPASSWORD": "p=ss word",
        "EMPTY": "",
        "SURROGATE": "\udcff",
    }
    decoded = _decode_environment(_encode_environment(env))
    assert decoded == {
        b"PATH": b"/bin",
        b"PGPASSWORD": b"p=ss word",
        b"EMPTY": b"",
        b"SURROGATE": b"\xff",
    }


def test_environment_message_cut_short() -> None:
    message = _encode_environment({"PGPASSWORD": "secret"})
    assert _decode_environment(message[:-1]) is None
    assert _decode_environment(message[:4]) is None
    assert _decode_environment(b"") is None


@pytest.mark.parametrize("env", [{"A=B": "x"}, {"": "x"}, {"A": "x\0y"}])
def test_environment_message_rejects_invalid(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="cannot pass environment variable"):
        _encode_environment(env)


def test_prctl_makes_process_non_dumpable() -> None:
    script = (
        "from attestor.agent_exec.prctl import Prctl, PR_GET_DUMPABLE, "
        "PR_SET_DUMPABLE\n"
        "prctl = Prctl()\n"
        "before = prctl.call(PR_GET_DUMPABLE, 0)\n"
        "prctl.call(PR_SET_DUMPABLE, 0)\n"
        "print(before, prctl.call(PR_GET_DUMPABLE, 0))\n"
        "try:\n"
        "    prctl.call(-1, 0)\n"
        "except OSError as err:\n"
        "    print(err.errno)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["1", "0", "22"]  # EINVAL for option -1


def test_call_path_imports_only_fast_modules() -> None:
    # -S keeps site's own imports (and the editable install's) out of the
    # list, so it shows what agent-exec's modules load.
    modules = [
        "attestor.agent_exec",
        "attestor.agent_exec.vault",
        "attestor.agent_exec.prctl",
        "attestor.agent_exec.watchdog",
        "attestor.agent_exec.child",
        "attestor.agent_exec.env",
        "attestor.agent_exec.renew",
    ]

    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        env={"PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(result.stdout.split())

    assert "attestor.agent_exec.call" in loaded
    slow = {"argparse", "base64", "collections", "contextlib", "ctypes", "enum"}
    slow |= {"functools", "json", "logging", "re", "selectors", "signal", "socket"}
    slow |= {"ssl", "threading", "typing", "urllib.parse"}
    assert loaded & slow == set()


def test_role_spec_equal_values_are_one_role() -> None:
    assert parse_role("demo") == parse_role("demo")
    assert len({parse_role("demo"), parse_role("demo")}) == 1
    assert parse_role("demo") != parse_role("aws/demo")


def test_tidy_flattens_multierror() -> None:
    assert _tidy("2 errors occurred:\n\t* first\n\t* second\n\n") == "first; second"
    assert _tidy("invalid lease") == "invalid lease"


def test_decode_claims_of_jwt() -> None:
    claims = decode_claims(make_jwt({"sub": "dev", "asserted": {"tool": "psql"}}))
    assert claims == {"sub": "dev", "asserted": {"tool": "psql"}}
    assert decode_claims("not-a-jwt") == {}


@contextmanager
def raw_server(responses: list[bytes]) -> Iterator[tuple[str, list[bytes]]]:
    """Serve `responses` in order, one per request, over one connection each time."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        queue = list(responses)
        while queue:
            conn, _ = listener.accept()
            with conn:
                while queue:
                    request = conn.recv(65536)
                    if not request:
                        break
                    received.append(request)
                    reply = queue.pop(0)
                    conn.sendall(reply)
                    if b"Connection: close" in reply:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        listener.close()
        thread.join(timeout=5)


def test_http_reads_chunked_body() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
    )
    fixed = b"HTTP/1.1 204 No Content\r\n\r\n"
    with raw_server([chunked, fixed]) as (url, received):
        connection = HttpConnection(url)
        assert connection.request("GET", "/a", {}, None).body == b"hello, world"
        assert connection.request("PUT", "/b", {}, b"{}").status == 204
        connection.close()
    assert len(received) == 2  # both requests on one kept-alive connection
    assert received[1].startswith(b"PUT /b HTTP/1.1\r\n")


def test_http_reconnects_after_close() -> None:
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"
    with raw_server([first, second]) as (url, _):
        connection = HttpConnection(url)
        assert connection.request("GET", "/", {}, None).body == b"ok"
        assert connection.request("GET", "/", {}, None).body == b"yes"
        connection.close()


def test_http_preconnect_used_by_first_request() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                accepted.append(conn)
                if conn.recv(65536):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    connection = HttpConnection(f"http://127.0.0.1:{listener.getsockname()[1]}")
    connection.connect()
    assert connection.request("GET", "/", {}, None).body == b"ok"
    connection.close()
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
    listener.close()
    thread.join(timeout=5)
    assert len(accepted) == 1
    for conn in accepted:
        conn.close()


def test_http_unreachable_server() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    connection = HttpConnection(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(HttpError, match="failed"):
        connection.request("GET", "/", {}, None)


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\n{}", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n{}", "invalid Content-Length"),
        (CHUNKED + b"zz\r\n{}\r\n0\r\n\r\n", "invalid chunk size"),
        (CHUNKED + b"-2\r\n{}\r\n0\r\n\r\n", "invalid chunk size"),
    ],
)
def test_http_rejects_malformed_response(response: bytes, message: str) -> None:
    with raw_server([response]) as (url, _):
        connection = HttpConnection(url)
        with pytest.raises(HttpError, match=message):
            connection.request("GET", "/", {}, None)
        connection.close()


@contextmanager
def answering_server(
    response: bytes, byte_interval: float = 0.0
) -> Iterator[tuple[str, list[bytes]]]:
    """Read each request on every connection and send `response` to it.

    With `byte_interval` above 0 the response goes out one byte per that many
    seconds. An empty `response` leaves every request unanswered.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    stop = threading.Event()

    def answer(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while request := conn.recv(65536):
                received.append(request)
                if not response:
                    stop.wait()
                    return
                if not byte_interval:
                    conn.sendall(response)
                    continue
                for byte in response:
                    if stop.wait(byte_interval):
                        return
                    conn.sendall(bytes([byte]))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        listener.close()
        thread.join(timeout=5)


def test_http_malformed_response_not_resent() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}"
    with answering_server(response) as (url, received):
        connection = HttpConnection(url)
        connection.connect()  # the first request then counts as a reused connection
        with pytest.raises(HttpError, match="invalid Content-Length"):
            connection.request("POST", "/v1/auth/jwt/login", {}, b"{}")
        connection.close()
    assert len(received) == 1


def test_http_slow_response_times_out() -> None:
    # 40 bytes at 0.2 s each would take 8 s, each byte well within the timeout.
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    with answering_server(response, byte_interval=0.2) as (url, received):
        connection = HttpConnection(url, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(HttpError, match="failed"):
            connection.request("GET", "/", {}, None)
        elapsed = time.monotonic() - started
        connection.close()
    assert elapsed < 4.0
    assert len(received) == 1


def test_http_timeout_not_resent() -> None:
    # After connect(), the first request counts as sent on a reused
    # connection, which a closed connection would make agent-exec send again.
    with answering_server(b"") as (url, received):
        connection = HttpConnection(url, timeout=1.0)
        connection.connect()
        started = time.monotonic()
        with pytest.raises(HttpError, match="timed out"):
            connection.request("POST", "/v1/auth/jwt/login", {}, b"{}")
        elapsed = time.monotonic() - started
        connection.close()
    assert elapsed < 1.8
    assert len(received) == 1


def test_http_rejects_bad_address() -> None:
    with pytest.raises(HttpError, match="invalid Vault address"):
        HttpConnection("127.0.0.1:8200")


def test_renewer_stops_at_max_ttl() -> None:
    state = VaultState(token_ttl=1)
    with fake_vault(state) as addr:
        vault = VaultClient(addr)
        vault.login_jwt("jwt", "dev", "x.e30.x")
        token = Renewable(lease_id="", ttl=3)
        renewer = Renewer(vault, [token])
        renewer.start()
        # The fake returns a 1 s TTL on each renewal, shorter than the 3 s
        # asked for: the first renewal at 2 s already shows the max is reached.
        time.sleep(2.5)
        renewer.stop()
    assert token.renewals == 1
    assert token.at_max_ttl is True
    assert state.renewals == ["token"]


def test_renewer_keeps_renewing_one_second_ttl() -> None:
    # The fake grants the full 1 s requested each time, so the token is not at
    # its max TTL although each renewal moves its expiry by under a second.
    state = VaultState(token_ttl=1)
    with fake_vault(state) as addr:
        vault = VaultClient(addr)
        vault.login_jwt("jwt", "dev", "x.e30.x")
        token = Renewable(lease_id="", ttl=1)
        renewer = Renewer(vault, [token])
        renewer.start()
        time.sleep(2.5)
        renewer.stop()
    assert token.at_max_ttl is False
    assert token.renewals >= 3


def http_response(status: int, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status} Status\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.mark.parametrize(
    ("status", "exit_code", "message"),
    [
        (403, 77, "Vault rejected GET x/creds/r: permission denied"),
        (400, 64, "Vault rejected GET x/creds/r as invalid: bad ttl; check the"),
        (404, 69, "Vault returned status 404 to GET x/creds/r: gone; check"),
        (405, 69, "Vault returned status 405 to GET x/creds/r: gone; check"),
    ],
)
def test_vault_client_error_by_status(
    status: int, exit_code: int, message: str
) -> None:
    detail = {403: "permission denied", 400: "bad ttl"}.get(status, "gone")
    body = json.dumps({"errors": [detail]}).encode()
    with raw_server([http_response(status, body)]) as (url, _):
        vault = VaultClient(url, token="t")
        with pytest.raises(ExecError) as caught:
            vault.read_creds("x/creds/r")
        vault.close()
    assert caught.value.exit_code == exit_code
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("status", [400, 403, 404])
def test_vault_client_error_not_vault(status: int) -> None:
    # Vault's error responses always have an `errors` list.
    body = b'{"error": "no such page"}'
    with raw_server([http_response(status, body)]) as (url, _):
        vault = VaultClient(url, token="t")
        with pytest.raises(ExecError) as caught:
            vault.read_creds("x/creds/r")
        vault.close()
    assert caught.value.exit_code == 69
    assert f"has status {status} and no Vault errors" in str(caught.value)
    assert "is the address of Vault or OpenBao" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, 'role \\"nobody\\" could not be found'),
        (400, "could not load configuration"),
        (403, "permission denied"),
    ],
)
def test_vault_login_rejected_jwt_denied(status: int, error: str) -> None:
    body = b'{"errors": ["' + error.encode() + b'"]}'
    with raw_server([http_response(status, body)]) as (url, _):
        vault = VaultClient(url)
        with pytest.raises(DeniedError) as caught:
            vault.login_jwt("jwt2", "nobody", "x.e30.x")
        vault.close()
    message = str(caught.value)
    assert caught.value.exit_code == 77
    shown = error.replace('\\"', '"')
    assert message.startswith(f"Vault rejected POST auth/jwt2/login: {shown}; ")
    assert "check --auth-mount (the JWT auth mount, now 'jwt2')" in message
    assert "a role named 'nobody'" in message


def test_vault_unknown_namespace_unavailable() -> None:
    state = VaultState(namespaces={"team"})
    with fake_vault(state) as addr:
        vault = VaultClient(addr, namespace="ns1")
        with pytest.raises(UnavailableError) as caught:
            vault.login_jwt("jwt", "dev", "x.e30.x")
        vault.close()
        known = VaultClient(addr, namespace="team")
        login = known.login_jwt("jwt", "dev", "x.e30.x")
        known.close()
    assert login.token.startswith("s.")
    assert caught.value.exit_code == 69
    assert "status 404 to POST auth/jwt/login: namespace not found" in str(caught.value)


def test_no_secret_in_client_repr() -> None:
    state = VaultState()
    with fake_vault(state) as addr:
        vault = VaultClient(addr)
        login = vault.login_jwt("jwt", "dev", "x.e30.x")
        vault.close()
    assert login.token.startswith("s.")
    assert login.token not in repr(login)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """Write a certificate for 127.0.0.1 and its key; return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
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
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def tls_server(
    cert: Path,
    key: Path,
    reply: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntls",
) -> Iterator[str]:
    """Serve TLS on 127.0.0.1; every request gets `reply`, by default 200 `tls`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with (
                    conn,
                    contextlib.suppress(ssl.SSLError),
                    context.wrap_socket(conn, server_side=True) as tls,
                ):
                    while tls.recv(65536):
                        tls.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        # shutdown() wakes the accept() that close() alone leaves blocked.
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)


def test_https_verifies_with_cacert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    with tls_server(cert, key) as url:
        monkeypatch.setenv("VAULT_CACERT", str(cert))
        connection = HttpConnection(url, timeout=5)
        assert connection.request("GET", "/", {}, None).body == b"tls"
        connection.close()

        monkeypatch.delenv("VAULT_CACERT")
        untrusting = HttpConnection(url, timeout=5)
        with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.request("GET", "/", {}, None)


def test_redirect_from_https_to_http_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    plain = socket.create_server(("127.0.0.1", 0))
    plain.settimeout(0.5)
    plain_origin = f"http://127.0.0.1:{plain.getsockname()[1]}"
    reply = (
        f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {plain_origin}"
        "/v1/auth/token/revoke-self\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    monkeypatch.setenv("VAULT_CACERT", str(cert))
    with plain, tls_server(cert, key, reply) as url:
        vault = VaultClient(url)
        vault.token = "s.redirect-secret"
        with pytest.raises(UnavailableError) as raised:
            vault.revoke_self()
        vault.close()
        # The plain listener never got a connection, let alone the token.
        with pytest.raises(TimeoutError):
            plain.accept()
    message = str(raised.value)
    assert f"redirected to {plain_origin}" in message
    assert "without TLS" in message
    assert "s.redirect-secret" not in message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, ünïcode ✓", "plain text, ünïcode ✓"),
        ("/tmp/x\x1b[31mq", "/tmp/x\\x1b[31mq"),
        ("bell\x07 and\nnewline\tand tab", "bell\\x07 and\\nnewline\\tand tab"),
        ("c1 \x9b and nbsp \xa0", "c1 \\x9b and nbsp \\xa0"),
    ],
)
def test_printable_escapes_controls(text: str, shown: str) -> None:
    assert printable(text) == shown


@pytest.mark.parametrize("namespace", ["foo\r\nX-Evil: 1", "a\tb", "équipe"])
def test_options_reject_header_unsafe_namespace(
    monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    monkeypatch.setenv("VAULT_NAMESPACE", namespace)
    with pytest.raises(UsageError) as caught:
        parse_options(["--role", "demo", "--", "true"])
    message = str(caught.value)
    assert message.startswith(f"invalid VAULT_NAMESPACE {namespace!r}")
    assert "\n" not in message


def test_options_keep_namespace_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    monkeypatch.setenv("VAULT_NAMESPACE", "team-a/agents")
    options = parse_options(["--role", "demo", "--", "true"])
    assert options.namespace == "team-a/agents"
