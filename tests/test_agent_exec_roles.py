"""agent-exec's `--role` values: the message of each error, and which error wins.

Malformed values and two prefixed roles of one engine exit 64 before any
request. After the capabilities lookup, an ambiguous bare name and two
roles of one engine exit 64 before a denied role exits 77. Vault and the
attestor are the fakes of tests/support/exec_fakes.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestor.agent_exec.errors import DeniedError, UsageError
from attestor.agent_exec.roles import parse_role, parse_roles, resolve_roles
from attestor.agent_exec.vault import VaultClient
from plugin.framework.path import NAME_PATTERN
from tests.support.exec_fakes import (
    MOUNT,
    AttestorState,
    VaultState,
    fake_attestor,
    fake_vault,
)
from tests.test_agent_exec_flow import AWS_ROLE, DB_ROLE, Fakes, assert_all_revoked

# The fake Vault grants read on demo-readonly and second as database roles,
# on deploy as an AWS role, and on both as either. Nothing grants `other`.
READABLE = {
    DB_ROLE,
    AWS_ROLE,
    "database/creds/second",
    "database/creds/both",
    "aws/creds/both",
}
PREFIX_ERROR = "the prefix must be 'database/' or 'aws/'"
# Values with a valid prefix and an invalid name, with the error they get.
PREFIXED_INVALID_NAMES = [
    ("database/x/", "the name 'x/' after 'database/' contains '/'"),
    ("database//x", "the name '/x' after 'database/' contains '/'"),
    ("aws/a/b", "the name 'a/b' after 'aws/' contains '/'"),
    ("database/", "the name after 'database/' is empty"),
]


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Fakes]:
    vault = VaultState(readable=set(READABLE))
    attestor = AttestorState()
    with fake_vault(vault) as addr, fake_attestor(attestor, tmp_path) as sock:
        yield Fakes(vault, attestor, addr, sock, tmp_path)


def role_options(roles: list[str]) -> list[str]:
    return [option for role in roles for option in ("--role", role)]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        *PREFIXED_INVALID_NAMES,
        ("aws/-x", "the name '-x' after 'aws/' starts with '-'"),
        ("database/a b", "the name 'a b' after 'database/' contains ' '"),
        ("x.", "the name ends with '.'"),
        ("ps\tql", "the name contains '\\t'"),
        ("", "the name is empty"),
    ],
)
def test_parse_role_names_invalid_part(value: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_role(value)
    message = str(caught.value)
    assert message.startswith(f"invalid role {value!r}: {problem}; ")
    assert "a role name has ASCII letters, digits" in message
    assert "prefix" not in message
    assert caught.value.exit_code == 64


@pytest.mark.parametrize("value", ["foo/x", "/x", "x/y/z", "Database/x", "gcp/"])
def test_parse_role_unknown_prefix(value: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_role(value)
    assert str(caught.value) == f"invalid role {value!r}: {PREFIX_ERROR}"
    assert caught.value.exit_code == 64


@pytest.mark.parametrize(
    "name", ["a", "_x_", "a.b-c", "A9", "x-", "-x", ".x", "x.", "a/b", "a b", "a+b"]
)
def test_parse_role_matches_plugin_names(name: str) -> None:
    # NAME_PATTERN is Vault's GenericNameRegex, and Go's regexp, which Vault
    # compiles it with, matches `\w` as ASCII only.
    plugin_accepts = re.fullmatch(NAME_PATTERN, name, re.ASCII) is not None
    try:
        spec = parse_role(f"database/{name}")
    except UsageError:
        assert not plugin_accepts
    else:
        assert plugin_accepts
        assert spec.name == name


@pytest.mark.parametrize(
    "values",
    [
        ["database/a", "database/b"],
        ["aws/a", "demo", "aws/b"],
        ["database/a", "database/a", "database/b"],
    ],
)
def test_parse_roles_rejects_same_prefix(values: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse_roles(values)
    kind = values[-1].split("/")[0]
    message = str(caught.value)
    assert message.startswith(f"roles {kind}/a and {kind}/b are both {kind} roles")
    assert caught.value.exit_code == 64


def test_parse_roles_keeps_repeated_role() -> None:
    specs = parse_roles(["database/a", "a", "database/a", "aws/a"])
    assert [str(spec) for spec in specs] == ["database/a", "a", "database/a", "aws/a"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        *PREFIXED_INVALID_NAMES,
        ("foo/x", PREFIX_ERROR),
        ("/x", PREFIX_ERROR),
    ],
)
def test_invalid_role_sends_nothing(fakes: Fakes, value: str, problem: str) -> None:
    result = fakes.run("--role", "demo-readonly", "--role", value, "--", "true")
    assert result.returncode == 64
    assert f"agent-exec: invalid role {value!r}: {problem}" in result.stderr
    assert fakes.attestor.requests == []
    assert fakes.vault.requests == []


def test_invalid_role_before_command_lookup(fakes: Fakes) -> None:
    result = fakes.run("--role", "database/x/", "--", "no-such-command-4c1d")
    assert result.returncode == 64
    assert "command not found" not in result.stderr


@pytest.mark.parametrize(
    "roles",
    [
        ["database/other", "database/demo-readonly"],
        ["aws/other", "aws/deploy"],
        ["database/demo-readonly", "demo-readonly", "database/second"],
    ],
)
def test_same_prefix_twice_sends_nothing(fakes: Fakes, roles: list[str]) -> None:
    # `database/other` is denied, but two roles of one engine are a usage
    # error whatever the policy grants, so the attestor is never asked.
    result = fakes.run(*role_options(roles), "--", "true")
    assert result.returncode == 64
    assert f"roles {roles[0]} and {roles[-1]} are both" in result.stderr
    assert "not allowed" not in result.stderr
    assert fakes.attestor.requests == []
    assert fakes.vault.requests == []


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        (["other", "both"], "role 'both' is ambiguous"),
        (["database/other", "both"], "role 'both' is ambiguous"),
        (["database/other", "second"], "roles database/other and database/second"),
        (["other", "demo-readonly", "second"], "roles database/demo-readonly and"),
        (["aws/other", "deploy"], "roles aws/other and aws/deploy are both"),
    ],
)
def test_usage_error_wins_over_denial(
    fakes: Fakes, roles: list[str], message: str
) -> None:
    result = fakes.run("--json", *role_options(roles), "--", "true")
    assert result.returncode == 64
    assert message in result.stderr
    assert "not allowed" not in result.stderr
    assert fakes.vault.minted() == []
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["exit_code"] == 64
    assert record["policy"]["decision"] != "denied"
    assert_all_revoked(fakes)


@pytest.mark.parametrize(
    "roles",
    [["other"], ["database/other", "deploy"], ["demo-readonly", "aws/other"]],
)
def test_denied_role_mints_nothing(fakes: Fakes, roles: list[str]) -> None:
    result = fakes.run("--json", *role_options(roles), "--", "true")
    assert result.returncode == 77
    assert "other is not allowed for this agent" in result.stderr
    assert fakes.vault.minted() == []
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["policy"]["decision"] == "denied"
    assert_all_revoked(fakes)


def test_role_unknown_to_plugin_is_usage(fakes: Fakes) -> None:
    # The policy grants the path, but the plugin has no such role and
    # returns 400. That is not a denial, so the call exits 64.
    fakes.vault.missing_roles.add("aws/creds/deploy")
    result = fakes.run("--json", "--role", "deploy", "--", "true")
    assert result.returncode == 64, result.stderr
    assert "as invalid: unknown role 'deploy'" in result.stderr
    assert "allowed_agents" not in result.stderr
    record = json.loads(result.stderr.strip().splitlines()[-1])
    assert record["exit_code"] == 64
    assert record["policy"]["decision"] != "denied"
    assert_all_revoked(fakes)


@pytest.mark.parametrize(
    ("roles", "error"),
    [
        (["other", "both"], UsageError),
        (["database/other", "second"], UsageError),
        (["other", "deploy", "aws/both"], UsageError),
        (["other", "deploy"], DeniedError),
        (["deploy", "database/other"], DeniedError),
    ],
)
def test_resolve_roles_error_order(roles: list[str], error: type[Exception]) -> None:
    vault_state = VaultState(readable=set(READABLE))
    with fake_vault(vault_state) as addr:
        vault = VaultClient(addr)
        vault.login_jwt("jwt", "dev", "x.e30.x")
        with pytest.raises(error) as caught:
            resolve_roles(vault, MOUNT, parse_roles(roles))
        vault.close()
    assert type(caught.value) is error
    assert vault_state.requests.count(("POST", "sys/capabilities-self")) == 1
    assert vault_state.minted() == []


def test_resolve_roles_merges_same_role() -> None:
    vault_state = VaultState(readable=set(READABLE))
    with fake_vault(vault_state) as addr:
        vault = VaultClient(addr)
        vault.login_jwt("jwt", "dev", "x.e30.x")
        specs = parse_roles(["deploy", "database/demo-readonly", "demo-readonly"])
        roles = resolve_roles(vault, MOUNT, specs)
        vault.close()
    assert [str(role) for role in roles] == ["aws/deploy", "database/demo-readonly"]
    assert [role.path for role in roles] == [
        f"{MOUNT}/{AWS_ROLE}",
        f"{MOUNT}/{DB_ROLE}",
    ]


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("r" * 64, f"{MOUNT}/database/creds/{'r' * 64} or "),
        ("r" * 65, f"{MOUNT}/database/creds/<role> or {MOUNT}/aws/creds/<role>;"),
    ],
)
def test_denial_prints_long_name_once(name: str, shown: str) -> None:
    vault_state = VaultState(readable=set(READABLE))
    with fake_vault(vault_state) as addr:
        vault = VaultClient(addr)
        vault.login_jwt("jwt", "dev", "x.e30.x")
        with pytest.raises(DeniedError) as caught:
            resolve_roles(vault, MOUNT, parse_roles([name]))
        vault.close()
    message = str(caught.value)
    assert message.startswith(f"role {name} is not allowed for this agent")
    assert shown in message
    assert message.count(name) == (3 if len(name) <= 64 else 1)
