"""Terraform values in Python, and the marker for values known only after apply.

Values are plain Python: None (null), bool, int or float (number), str,
list (list, set and tuple) and dict (map and object).
"""

from __future__ import annotations

from typing import Any, Final


class _Unknown:
    """A value Vault computes during apply, such as a mount's accessor."""

    def __repr__(self) -> str:
        return "(known after apply)"


UNKNOWN: Final = _Unknown()


def contains_unknown(value: Any) -> bool:
    if value is UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(contains_unknown(item) for item in value.values())
    if isinstance(value, list):
        return any(contains_unknown(item) for item in value)
    return False


# bool before number: bool is a subclass of int in Python.
TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "bool"),
    (int, "number"),
    (float, "number"),
    (str, "string"),
    (list, "list"),
    (dict, "object"),
)


def type_name(value: Any) -> str:
    """Return the Terraform name of `value`'s type, for error messages."""
    if value is None:
        return "null"
    for python_type, name in TYPE_NAMES:
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def is_set(value: Any) -> bool:
    """Return whether a provider's `GetOk` would see `value` as set.

    The Terraform plugin SDK treats null and the zero value of a type (0,
    false, "", empty list or map) as not set.
    """
    return value is not None and value is not UNKNOWN and value not in (0, "", [], {})
