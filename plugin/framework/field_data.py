"""The parsed parameters of one request, checked against a path's fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugin.framework.errors import FrameworkError, MissingFieldError
from plugin.framework.fields import Field


class FieldData:
    """Request parameters of one path, parsed up front.

    Construction parses every known parameter, so an invalid value fails
    the request before its handler runs. Parameters the path does not
    declare are collected in `unknown`, and the backend reports them as a
    warning the way Vault does.

    A JSON null counts as present with the type's zero value (not the
    field's default), so an update with null clears a stored value, as in
    Vault. Terraform sends null for an optional attribute a user removed.
    A null duration counts as absent, as Vault's framework treats it.
    """

    def __init__(
        self,
        schema: Mapping[str, Field],
        raw: Mapping[str, Any],
        captures: Mapping[str, str] | None = None,
    ) -> None:
        self.schema = schema
        self.raw: dict[str, Any] = dict(raw)
        # Values captured from the URL path win over body values of the
        # same name, as in Vault.
        self.replaced = sorted(k for k in (captures or {}) if k in self.raw)
        self.raw.update(captures or {})
        self.unknown = sorted(k for k in self.raw if k not in schema)
        self._parsed: dict[str, Any] = {}
        for name, value in self.raw.items():
            field = schema.get(name)
            if field is None:
                continue
            if value is not None:
                self._parsed[name] = field.parse(name, value)
            elif not field.null_is_absent():
                self._parsed[name] = field.zero_value()

    def get_ok(self, name: str) -> tuple[Any, bool]:
        """Return the parsed value and whether the request contained it."""
        self._field(name)
        if name in self._parsed:
            return self._parsed[name], True
        return None, False

    def is_null(self, name: str) -> bool:
        """Return whether the request sent `name` as JSON null."""
        self._field(name)
        return name in self.raw and self.raw[name] is None

    def get(self, name: str) -> Any:
        """Return the request's value, or the field's default when absent."""
        value, present = self.get_ok(name)
        return value if present else self._field(name).default_value()

    def get_or(self, name: str, current: Any) -> Any:
        """Return the request's value, or `current` when absent.

        Updates use this to keep stored values of fields the request
        leaves out.
        """
        value, present = self.get_ok(name)
        return value if present else current

    def require(self, name: str, hint: str = "") -> Any:
        """Return the request's value, raising MissingFieldError when empty."""
        value = self.get(name)
        if value in (None, "", [], {}):
            raise MissingFieldError(name, hint)
        return value

    def _field(self, name: str) -> Field:
        field = self.schema.get(name)
        if field is None:
            # A handler asked for a field its path never declared.
            raise FrameworkError(f"field {name!r} is not declared on this path")
        return field
