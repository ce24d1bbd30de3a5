"""Typed reads of one TOML table, with errors that name the table and the key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn


class Fields:
    """Reads keys of `table`; every failure raises `error` prefixed by `where`.

    Each getter records its key, so `reject_unknown` can report the keys no
    getter asked for (usually misspellings).
    """

    def __init__(
        self, table: dict[str, Any], where: str, error: type[Exception]
    ) -> None:
        self.values = table
        self.where = where
        self.error = error
        self.used: set[str] = set()

    def fail(self, key: str, problem: str) -> NoReturn:
        raise self.error(f"{self.where} field {key!r}: {problem}")

    def string(self, key: str, default: str | None) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def optional_string(self, key: str) -> str | None:
        if self.values.get(key) is None:
            self.used.add(key)
            return None
        return self.string(key, None)

    def strings(self, key: str, default: Sequence[str] | None) -> list[str]:
        """Read a string or a non-empty list of strings, always as a list."""
        value = self._get(key, list(default) if default is not None else None)
        if isinstance(value, str):
            value = [value]
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str) and item for item in value)
        ):
            self.fail(
                key, f"must be a non-empty list of non-empty strings, got {value!r}"
            )
        return list(value)

    def integer(
        self, key: str, default: int | None, *, minimum: int, maximum: int | None = None
    ) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"must be an integer, got {value!r}")
        self._check_range(key, value, minimum, maximum)
        return value

    def number(
        self, key: str, default: float, *, minimum: float, maximum: float
    ) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number, got {value!r}")
        self._check_range(key, value, minimum, maximum)
        return float(value)

    def choice(self, key: str, default: str, allowed: Sequence[str]) -> str:
        value = self.string(key, default)
        if value not in allowed:
            self.fail(
                key, f"{value!r} is not supported; use one of {', '.join(allowed)}"
            )
        return value

    def table(self, key: str) -> dict[str, Any]:
        value = self._get(key, {})
        if not isinstance(value, dict):
            self.fail(key, f"must be a table ([{key}]), got {value!r}")
        return value

    def table_list(self, key: str) -> list[dict[str, Any]]:
        value = self._get(key, [])
        if not isinstance(value, list) or not all(
            isinstance(item, dict) for item in value
        ):
            self.fail(key, f"must be an array of tables ([[{key}]])")
        return value

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.values) - self.used)
        if unknown:
            self.fail(unknown[0], "unknown setting; check its spelling")

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        value = self.values.get(key, default)
        if value is None:
            self.fail(key, "missing; it has no default")
        return value

    def _check_range(
        self, key: str, value: float, minimum: float, maximum: float | None
    ) -> None:
        if value < minimum or (maximum is not None and value > maximum):
            upper = "" if maximum is None else f" and at most {maximum}"
            self.fail(key, f"must be at least {minimum}{upper}, got {value}")
