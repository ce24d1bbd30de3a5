"""JSON encoding and decoding for agent-exec's call path, without `json`.

`json` compiles regular expressions at import, and `re` brings `enum`,
`functools` and `collections` with it. That adds about 6.5 ms to
agent-exec's start-up, against 0.3 ms for `_json` (Python 3.11). Decoding
here runs the C scanner that `json.loads` itself uses (`_json.make_scanner`)
with the same settings. Encoding covers the types that requests contain. An
interpreter without the `_json` accelerator gets the `json` module instead.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

try:
    from _json import encode_basestring_ascii as _quote
    from _json import make_scanner as _make_scanner
except ImportError:  # pragma: no cover - CPython always builds _json
    _quote = None  # type: ignore[assignment]
    _make_scanner = None  # type: ignore[assignment,misc]

WHITESPACE = " \t\n\r"
_INFINITY = float("inf")
_CONSTANTS = {"NaN": float("nan"), "Infinity": _INFINITY, "-Infinity": -_INFINITY}


class _ScannerSettings:
    """The attributes `_json.make_scanner` reads, set as `json.loads` sets them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan: Callable[[str, int], tuple[Any, int]] | None = (
    # typeshed types the argument as a scanner, but any object with the
    # attributes of _ScannerSettings works.
    _make_scanner(_ScannerSettings())  # type: ignore[arg-type]
    if _make_scanner is not None
    else None
)


def loads(data: str | bytes) -> Any:
    """Decode one JSON document, as `json.loads` does for UTF-8 input.

    Raises ValueError (or its subclass `json.JSONDecodeError`) for invalid
    JSON or bytes that are not UTF-8.
    """
    text = data.decode() if isinstance(data, bytes) else data
    if _scan is None:  # pragma: no cover
        import json

        return json.loads(text)
    text = text.strip(WHITESPACE)
    try:
        value, end = _scan(text, 0)
    except StopIteration as err:
        raise ValueError(f"invalid JSON: no value at character {err.value}") from None
    if end != len(text):
        raise ValueError(f"invalid JSON: extra data at character {end}")
    return value


def dumps(value: object) -> str:
    """Encode `value` compactly, with non-ASCII characters escaped.

    It takes dicts with string keys, lists, tuples, strings, integers, finite
    floats, booleans and None, and raises TypeError for anything else.
    """
    if _quote is None:  # pragma: no cover
        import json

        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _encode(value: object, parts: list[str]) -> None:
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, str):
        parts.append(_quote(value))
    elif isinstance(value, int):
        parts.append(int.__repr__(value))
    elif isinstance(value, float):
        if not -_INFINITY < value < _INFINITY:  # also false for NaN
            raise TypeError(f"{value!r} has no JSON form")
        parts.append(float.__repr__(value))
    elif isinstance(value, dict):
        _encode_object(value, parts)
    elif isinstance(value, list | tuple):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _encode(item, parts)
        parts.append("]")
    else:
        raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


def _encode_object(value: dict[object, object], parts: list[str]) -> None:
    parts.append("{")
    for index, (key, item) in enumerate(value.items()):
        if not isinstance(key, str):
            raise TypeError(f"JSON object keys must be strings, got {key!r}")
        if index:
            parts.append(",")
        parts.append(_quote(key))
        parts.append(":")
        _encode(item, parts)
    parts.append("}")
