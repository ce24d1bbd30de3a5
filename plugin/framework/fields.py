"""Field schemas: the typed parameters a path accepts.

Each `FieldType` has one parser that turns what Vault sends (JSON values,
or strings from query parameters and `-field=value` CLI arguments) into a
Python value, or raises `InvalidFieldError` naming the field, the value
and what is accepted.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plugin.framework.errors import InvalidFieldError

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
# Vault's int fields are Go ints, 64 bits wide on amd64 and arm64.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Vault's durations are Go time.Durations: int64 nanoseconds, about 292 years.
MAX_DURATION_SECONDS = INT_MAX // 10**9
_TRUE_WORDS = frozenset({"true", "t", "1", "yes", "y", "on"})
_FALSE_WORDS = frozenset({"false", "f", "0", "no", "n", "off", ""})


class FieldType(enum.Enum):
    """Value types, named after Vault's `framework.FieldType`."""

    STRING = "string"
    INT = "int"
    BOOL = "bool"
    DURATION = "duration"  # seconds, from 90, "90", "90s", "5m", "1h30m"
    STRING_LIST = "slice"  # a list, or one string kept whole
    COMMA_STRING_LIST = "comma_string_slice"  # a list, or "a,b,c"
    MAP = "map"
    KV_PAIRS = "kv_pairs"  # a map of strings to strings


@dataclass(frozen=True)
class Field:
    """One parameter of a path.

    `description` is one sentence that states the default. `sensitive`
    fields are never echoed back in error messages.
    """

    type: FieldType
    description: str
    default: Any = None
    required: bool = False
    sensitive: bool = False

    def default_value(self) -> Any:
        """Return the default, or the zero value of the type when none is set."""
        if self.default is not None:
            return parse_value(self.type, self.default, "default")
        return self.zero_value()

    def zero_value(self) -> Any:
        """Return the zero value of the type: "", 0, false, or an empty list or map."""
        return _ZERO[self.type]()

    def null_is_absent(self) -> bool:
        """Return whether a JSON null for this field counts as leaving it out.

        Vault's framework (sdk/framework/field_data.go, getPrimitive) decodes
        null as present with the type's zero value, except for durations,
        which it treats as absent.
        """
        return self.type is FieldType.DURATION

    def parse(self, name: str, raw: Any) -> Any:
        """Parse a raw request value for this field."""
        try:
            return parse_value(self.type, raw, name)
        except InvalidFieldError:
            if self.sensitive:
                # The chained error would carry the secret value: drop it.
                raise InvalidFieldError(
                    name, "<redacted>", _ACCEPTED[self.type]
                ) from None
            raise


def parse_value(kind: FieldType, raw: Any, name: str) -> Any:
    """Convert `raw` to the Python value of `kind`, or raise InvalidFieldError."""
    try:
        return _PARSERS[kind](raw)
    except (TypeError, ValueError) as err:
        raise InvalidFieldError(name, raw, _ACCEPTED[kind]) from err


def parse_duration(raw: Any) -> int:
    """Parse a duration to whole seconds: 90, "90", "90s", "5m", "1h30m"."""
    if isinstance(raw, bool):
        raise TypeError("a boolean is not a duration")
    if isinstance(raw, int | float):
        seconds = float(raw)
    elif isinstance(raw, str):
        seconds = _parse_duration_text(raw.strip())
    else:
        raise TypeError(f"unsupported duration type {type(raw).__name__}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    # The comparison also catches infinity, which int() would raise on.
    if not seconds <= MAX_DURATION_SECONDS:
        raise ValueError("a duration above the range of Go's time.Duration")
    return int(seconds)


def _parse_duration_text(text: str) -> float:
    if text == "":
        return 0.0
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"cannot parse duration {text!r}")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _parse_string(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    # Vault's string fields accept numbers and booleans and render them.
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return str(raw)
    raise TypeError("not a string")


def _parse_int(raw: Any) -> int:
    value = _to_int(raw)
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError("an integer outside the 64-bit range")
    return value


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        text = raw.strip()
        # Python's int() also reads digits of other scripts, such as U+FF11.
        if not text.isascii():
            raise ValueError("an integer is written in ASCII digits")
        return int(text, 10)
    raise TypeError("not an integer")


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError("not a boolean")


def _parse_string_list(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw] if raw else []
    return _parse_list_items(raw)


def _parse_comma_list(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return [item.strip() for item in _parse_list_items(raw) if item.strip()]


def _parse_list_items(raw: Any) -> list[str]:
    if not isinstance(raw, list | tuple):
        raise TypeError("not a list")
    return [_parse_string(item) for item in raw]


def _parse_map(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        # Query parameters and CLI arguments carry maps as JSON text.
        raw = json.loads(raw) if raw.strip() else {}
    if not isinstance(raw, dict):
        raise TypeError("not a map")
    return dict(raw)


def _parse_kv_pairs(raw: Any) -> dict[str, str]:
    return {str(key): _parse_string(value) for key, value in _parse_map(raw).items()}


_PARSERS: dict[FieldType, Callable[[Any], Any]] = {
    FieldType.STRING: _parse_string,
    FieldType.INT: _parse_int,
    FieldType.BOOL: _parse_bool,
    FieldType.DURATION: parse_duration,
    FieldType.STRING_LIST: _parse_string_list,
    FieldType.COMMA_STRING_LIST: _parse_comma_list,
    FieldType.MAP: _parse_map,
    FieldType.KV_PAIRS: _parse_kv_pairs,
}

_ACCEPTED = {
    FieldType.STRING: "a string",
    FieldType.INT: f"a 64-bit integer, from {INT_MIN} to {INT_MAX}",
    FieldType.BOOL: "a boolean (true or false)",
    FieldType.DURATION: (
        "a non-negative duration in seconds (90) or with units (90s, 5m, 1h), "
        f"at most {MAX_DURATION_SECONDS} s (about 292 years)"
    ),
    FieldType.STRING_LIST: "a list of strings, or one string",
    FieldType.COMMA_STRING_LIST: "a list of strings or a comma-separated string",
    FieldType.MAP: "a JSON object",
    FieldType.KV_PAIRS: "a JSON object of string values",
}

_ZERO: dict[FieldType, Callable[[], Any]] = {
    FieldType.STRING: str,
    FieldType.INT: int,
    FieldType.BOOL: bool,
    FieldType.DURATION: int,
    FieldType.STRING_LIST: list,
    FieldType.COMMA_STRING_LIST: list,
    FieldType.MAP: dict,
    FieldType.KV_PAIRS: dict,
}


def accepted_values(kind: FieldType) -> str:
    """Describe the values a field type accepts, for help texts and errors."""
    return _ACCEPTED[kind]
