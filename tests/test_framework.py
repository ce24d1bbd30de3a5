"""The path framework: fields, routing, help, warnings, secrets and WAL rollback."""

from __future__ import annotations

from typing import Any

import pytest

from plugin.framework import (
    Extension,
    Field,
    FieldData,
    FieldType,
    FrameworkBackend,
    InMemoryStorage,
    InvalidFieldError,
    MissingFieldError,
    OperationNotSupportedError,
    Path,
    PathNotFoundError,
    SecretType,
    UnknownSecretError,
    WALRollbackError,
    name_group,
    parse_duration,
    put_wal,
)
from plugin.framework.wal import WAL_PREFIX
from plugin.logical import (
    BadRequestError,
    Operation,
    Request,
    Response,
    Secret,
)
from tests.support.database import FakeSystemView


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400)],
)
def test_duration_parses(raw: Any, seconds: int) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["soon", "5x", "-5", True, [1], "\uff15m", "\u0665"])
def test_duration_rejects(raw: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("9223372036", 9223372036),
        (9223372036, 9223372036),
        ("106751d", 106751 * 86400),
        (0, 0),
    ],
)
def test_duration_parses_up_to_go_max(raw: Any, seconds: int) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize(
    "raw", [1e300, "9223372037", 9223372037, "106752d", float("inf"), 2**64]
)
def test_duration_rejects_above_go_max(raw: Any) -> None:
    field = Field(FieldType.DURATION, "Test field; default 0.")

    with pytest.raises(InvalidFieldError) as err:
        field.parse("ttl", raw)

    message = str(err.value)
    assert message.startswith(f"invalid value {raw!r} for field 'ttl'")
    assert message.endswith("at most 9223372036 s (about 292 years)")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (7, 7),
        ("7", 7),
        (" 7 ", 7),
        (3.0, 3),
        (2**63 - 1, 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
    ],
)
def test_int_parses(raw: Any, value: int) -> None:
    assert Field(FieldType.INT, "Test field; default 0.").parse("n", raw) == value


@pytest.mark.parametrize("raw", ["\uff11", "\u0667", "seven", "1.5", 1.5, True])
def test_int_rejects(raw: Any) -> None:
    with pytest.raises(BadRequestError, match="field 'n'"):
        Field(FieldType.INT, "Test field; default 0.").parse("n", raw)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (2**63, "9223372036854775808"),
        ("-9223372036854775809", "'-9223372036854775809'"),
        (1e30, "1e+30"),
        # Values with reprs over 80 characters are shown cut to 77 and "...".
        pytest.param(-(10**400), "-1" + "0" * 75 + "...", id="401-digits"),
    ],
)
def test_int_rejects_outside_int64(raw: Any, shown: str) -> None:
    field = Field(FieldType.INT, "Test field; default 0.")

    with pytest.raises(InvalidFieldError) as err:
        field.parse("max_open_connections", raw)

    assert str(err.value) == (
        f"invalid value {shown} for field 'max_open_connections': expected a "
        "64-bit integer, from -9223372036854775808 to 9223372036854775807"
    )


def test_comma_list_accepts_both_forms() -> None:
    field = Field(FieldType.COMMA_STRING_LIST, "Test field; default empty.")

    assert field.parse("f", "a, b,,c") == ["a", "b", "c"]
    assert field.parse("f", ["a", " b "]) == ["a", "b"]


def test_string_list_keeps_string_whole() -> None:
    field = Field(FieldType.STRING_LIST, "Test field; default empty.")

    assert field.parse("f", "GRANT SELECT, INSERT ON t TO x") == [
        "GRANT SELECT, INSERT ON t TO x"
    ]


def test_invalid_value_names_field_and_value() -> None:
    field = Field(FieldType.INT, "Test field; default 0.")

    with pytest.raises(InvalidFieldError) as err:
        field.parse("count", "many")
    assert str(err.value) == (
        "invalid value 'many' for field 'count': expected a 64-bit integer, "
        "from -9223372036854775808 to 9223372036854775807"
    )


def test_sensitive_value_not_echoed() -> None:
    field = Field(FieldType.INT, "Test field; default 0.", sensitive=True)

    with pytest.raises(InvalidFieldError) as err:
        field.parse("pin", "s3cret")
    assert "s3cret" not in str(err.value)
    assert err.value.__cause__ is None


def test_field_data_defaults_and_require() -> None:
    schema = {
        "n": Field(FieldType.INT, "Count; default 4.", default=4),
        "s": Field(FieldType.STRING, "Name; no default."),
    }
    data = FieldData(schema, {"x": 1})

    assert data.get("n") == 4
    assert data.get_ok("n") == (None, False)
    assert data.get_or("n", 7) == 7
    assert data.unknown == ["x"]
    with pytest.raises(MissingFieldError, match="missing required field 's'"):
        data.require("s")


# Defaults differ from the zero values, so the tests can distinguish them.
NULL_SCHEMA = {
    "s": Field(FieldType.STRING, "Name; default x.", default="x"),
    "i": Field(FieldType.INT, "Count; default 4.", default=4),
    "b": Field(FieldType.BOOL, "Flag; default true.", default=True),
    "d": Field(FieldType.DURATION, "TTL; default 60.", default=60),
    "l": Field(FieldType.STRING_LIST, "Statements; default [a].", default=["a"]),
    "c": Field(FieldType.COMMA_STRING_LIST, "Globs; default a,b.", default="a,b"),
    "m": Field(FieldType.MAP, "Settings; default {k: v}.", default={"k": "v"}),
    "kv": Field(FieldType.KV_PAIRS, "Tags; default {k: v}.", default={"k": "v"}),
}


@pytest.mark.parametrize(
    ("name", "zero"),
    [("s", ""), ("i", 0), ("b", False), ("l", []), ("c", []), ("m", {}), ("kv", {})],
)
def test_null_is_present_zero_value(name: str, zero: Any) -> None:
    data = FieldData(NULL_SCHEMA, {name: None})

    value, present = data.get_ok(name)
    assert present
    assert value == zero
    assert type(value) is type(zero)
    assert data.get(name) == zero
    assert data.get_or(name, "stored") == zero
    assert data.is_null(name)


def test_null_duration_is_absent() -> None:
    data = FieldData(NULL_SCHEMA, {"d": None})

    assert data.get_ok("d") == (None, False)
    assert data.get("d") == 60
    assert data.get_or("d", 5) == 5
    assert data.is_null("d")


def test_is_null_only_for_null() -> None:
    data = FieldData(NULL_SCHEMA, {"s": "", "i": 0})

    assert not data.is_null("s")
    assert not data.is_null("i")
    assert not data.is_null("b")


def echo(request: Request, data: FieldData) -> Response:
    return Response(data={"name": data.get("name"), "ttl": data.get("ttl")})


def make_backend(**extension: Any) -> tuple[FrameworkBackend, InMemoryStorage]:
    path = Path(
        pattern="things/" + name_group("name"),
        fields={
            "name": Field(FieldType.STRING, "Name; no default."),
            "ttl": Field(FieldType.DURATION, "TTL; default 60.", default=60),
        },
        operations={Operation.READ: echo, Operation.UPDATE: echo},
        existence_check=lambda request, data: data.get("name") == "present",
        help_synopsis="Manage things.",
        help_description="Things are managed here.",
    )
    backend = FrameworkBackend("A test backend.")
    backend.register(Extension(paths=[path], **extension))
    backend.setup({}, FakeSystemView())
    return backend, InMemoryStorage()


def call(
    backend: FrameworkBackend,
    storage: InMemoryStorage,
    operation: Operation,
    path: str,
    data: dict[str, Any] | None = None,
    *,
    secret: Secret | None = None,
) -> Response | None:
    request = Request(operation, path, storage, data or {}, secret=secret)
    return backend.handle_request(request)


def test_route_captures_and_parses() -> None:
    backend, storage = make_backend()

    response = call(backend, storage, Operation.UPDATE, "things/a.b-c", {"ttl": "5m"})

    assert response is not None
    assert response.data == {"name": "a.b-c", "ttl": 300}
    assert response.warnings == []


def test_invalid_field_is_bad_request() -> None:
    backend, storage = make_backend()

    with pytest.raises(BadRequestError, match="'later' for field 'ttl'"):
        call(backend, storage, Operation.UPDATE, "things/a", {"ttl": "later"})


def test_unknown_and_replaced_fields_warn() -> None:
    backend, storage = make_backend()

    response = call(
        backend, storage, Operation.UPDATE, "things/a", {"name": "b", "extra": 1}
    )

    assert response is not None
    assert response.data["name"] == "a"
    assert response.warnings[0] == (
        "Endpoint ignored these unrecognized parameters: ['extra']"
    )
    assert "captured from the endpoint's path: ['name']" in response.warnings[1]


def test_unsupported_path_and_operation() -> None:
    backend, storage = make_backend()

    with pytest.raises(PathNotFoundError):
        call(backend, storage, Operation.READ, "nothing/here")
    with pytest.raises(OperationNotSupportedError, match="supported operations: read"):
        call(backend, storage, Operation.DELETE, "things/a")


@pytest.mark.parametrize("path", ["things/\u00e9", "things/a\u0661", "things/a\n"])
def test_path_names_ascii_to_end(path: str) -> None:
    """Go's `\\w` is ASCII and its `$` is the end: Vault would route none of these."""
    backend, storage = make_backend()

    with pytest.raises(PathNotFoundError):
        call(backend, storage, Operation.READ, path)


def test_path_help_lists_fields() -> None:
    backend, storage = make_backend()

    response = call(backend, storage, Operation.HELP, "things/a")

    assert response is not None
    text = response.data["help"]
    assert text.startswith("Request:        things/a\nMatching Route: ^things/")
    assert "Manage things." in text
    assert "    ttl (duration)" in text
    assert "TTL; default 60." in text
    assert "## DESCRIPTION\n\nThings are managed here." in text


def test_root_help_lists_paths() -> None:
    backend, storage = make_backend()

    response = call(backend, storage, Operation.HELP, "")

    assert response is not None
    assert "A test backend." in response.data["help"]
    assert "Manage things." in response.data["help"]


def test_resolve_path_returns_request_path() -> None:
    backend, storage = make_backend()

    response = call(backend, storage, Operation.RESOLVE_PATH, "things/a")

    assert response is not None
    assert response.data["path"] == "things/a"
    assert response.data["pattern"].startswith("^things/")
    with pytest.raises(PathNotFoundError):
        call(backend, storage, Operation.RESOLVE_PATH, "other")


def test_existence_check() -> None:
    backend, storage = make_backend()

    def check(path: str) -> tuple[bool, bool]:
        return backend.handle_existence_check(Request(Operation.UPDATE, path, storage))

    assert check("things/present") == (True, True)
    assert check("things/absent") == (True, False)


def test_secret_dispatch() -> None:
    revoked: list[str] = []

    def revoke(request: Request) -> None:
        assert request.secret is not None
        revoked.append(request.secret.internal_data["id"])

    kind = SecretType("thing", revoke=revoke)
    backend, storage = make_backend(secrets=[kind])
    issued = kind.response({}, {"id": "t1"}, ttl=30, max_ttl=60)
    assert issued.secret is not None
    assert issued.secret.internal_data["secret_type"] == "thing"

    call(backend, storage, Operation.REVOKE, "things/a", secret=issued.secret)
    assert revoked == ["t1"]
    with pytest.raises(BadRequestError, match="not renewable"):
        call(backend, storage, Operation.RENEW, "things/a", secret=issued.secret)
    stranger = Secret(internal_data={"secret_type": "other"})
    with pytest.raises(UnknownSecretError):
        call(backend, storage, Operation.REVOKE, "things/a", secret=stranger)


def test_wal_rollback_respects_min_age() -> None:
    rolled: list[dict[str, Any]] = []

    def undo(request: Request, data: dict[str, Any]) -> None:
        rolled.append(data)

    backend, storage = make_backend(wal_rollback={"thing": undo})
    put_wal(storage, "thing", {"id": 1})

    call(backend, storage, Operation.ROLLBACK, "")
    assert rolled == []

    backend.wal_min_age = 0
    call(backend, storage, Operation.ROLLBACK, "")
    assert rolled == [{"id": 1}]
    assert storage.list(WAL_PREFIX) == []


def test_failed_rollback_keeps_entry() -> None:
    def undo(request: Request, data: dict[str, Any]) -> None:
        raise RuntimeError("server down")

    backend, storage = make_backend(wal_rollback={"thing": undo})
    entry_id = put_wal(storage, "thing", {"id": 1})

    with pytest.raises(WALRollbackError, match="server down"):
        call(backend, storage, Operation.ROLLBACK, "", {"immediate": True})
    assert storage.list(WAL_PREFIX) == [entry_id]
