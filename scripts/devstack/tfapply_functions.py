"""The Terraform built-in functions and operators the applier implements."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from devstack.tfapply_errors import ExprError
from devstack.tfapply_values import type_name


def to_template_string(value: Any) -> Any:
    """Convert an interpolated value to text as Terraform's templates do."""
    from devstack.tfapply_values import UNKNOWN

    if value is UNKNOWN or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number_text(value)
    raise ExprError(f"cannot interpolate {type_name(value)} into a string")


def _number_text(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def jsonencode(value: Any) -> str:
    # Terraform encodes with Go's encoding/json: object keys sorted, no
    # spaces, and <, > and & escaped for safe embedding in HTML.
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def merge(*maps: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in maps:
        if item is None:
            continue
        if not isinstance(item, dict):
            raise ExprError(f"merge() takes maps or objects, not {type_name(item)}")
        result.update(item)
    return result


def contains(collection: Any, value: Any) -> bool:
    if not isinstance(collection, list):
        raise ExprError(f"contains() takes a list, not {type_name(collection)}")
    return value in collection


def keys(mapping: Any) -> list[str]:
    if not isinstance(mapping, dict):
        raise ExprError(f"keys() takes a map or object, not {type_name(mapping)}")
    return sorted(mapping)


def sort(values: Any) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ExprError("sort() takes a list of strings")
    return sorted(values)


def length(value: Any) -> int:
    if not isinstance(value, list | dict | str):
        raise ExprError(
            f"length() takes a collection or string, not {type_name(value)}"
        )
    return len(value)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "contains": contains,
    "jsonencode": jsonencode,
    "keys": keys,
    "length": length,
    "merge": merge,
    "sort": sort,
}


def binary_operation(operator: str, left: Any, right: Any) -> Any:
    """Apply an HCL binary operator to two known values."""
    if operator in ("==", "!="):
        return (left == right) == (operator == "==")
    if operator in ("&&", "||"):
        if not (isinstance(left, bool) and isinstance(right, bool)):
            raise ExprError(f"operator {operator} needs two bools")
        return (left and right) if operator == "&&" else (left or right)
    numbers = [_number(left, operator), _number(right, operator)]
    return _ARITHMETIC[operator](*numbers)


def _number(value: Any, operator: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExprError(f"operator {operator} needs numbers, not {type_name(value)}")
    return value


def _divide(left: float, right: float) -> float:
    if right == 0:
        raise ExprError("division by zero")
    quotient = left / right
    return int(quotient) if quotient.is_integer() else quotient


_ARITHMETIC: dict[str, Callable[[float, float], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
    "%": lambda a, b: a % b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}
