"""Terraform type constraints of input variables, and conversion to them.

Conversion follows Terraform where it is lenient: numbers and bools become
strings, numeric strings become numbers, and `optional()` attributes get
their defaults. It is stricter in one place. An object attribute the type
does not declare is an error instead of being dropped, so a misspelt key in
the agents map fails the apply instead of silently taking a default.
Error messages name the variable path and types, never a value, because a
variable may be sensitive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lark import Token, Tree

from devstack.tfapply_errors import ConfigError, ExprError
from devstack.tfapply_hcl import subtrees
from devstack.tfapply_values import type_name

PRIMITIVES = ("string", "number", "bool", "any")
COLLECTIONS = ("list", "set", "map")


@dataclass
class TypeSpec:
    kind: str
    element: TypeSpec | None = None
    attributes: dict[str, AttributeSpec] = field(default_factory=dict)


@dataclass
class AttributeSpec:
    type: TypeSpec
    optional: bool = False
    default: Any = None


ANY = TypeSpec("any")


def parse_type(tree: Tree[Token]) -> TypeSpec:
    """Read a type constraint expression such as `map(object({a = string}))`."""
    node = _unwrap(tree)
    if node.data == "identifier":
        name = _name(node)
        if name not in PRIMITIVES:
            raise ExprError(f"unknown type {name!r}")
        return TypeSpec(name)
    if node.data != "function_call":
        raise ExprError(f"invalid type constraint ({node.data})")
    name_tree, *rest = subtrees(node)
    name = _name(name_tree)
    args = subtrees(rest[0]) if rest else []
    if name in COLLECTIONS and len(args) == 1:
        return TypeSpec(name, element=parse_type(args[0]))
    if name == "object" and len(args) == 1:
        attributes = {}
        for element in subtrees(_unwrap(args[0])):
            key_tree, value_tree = subtrees(element)
            attributes[_name(_unwrap(key_tree))] = _attribute_spec(value_tree)
        return TypeSpec("object", attributes=attributes)
    if name == "optional":
        raise ExprError("optional() is allowed only on an object attribute")
    raise ExprError(f"type {name}() is not supported")


def _attribute_spec(tree: Tree[Token]) -> AttributeSpec:
    from devstack.tfapply_expr import Context, evaluate

    node = _unwrap(tree)
    if node.data == "function_call" and _name(subtrees(node)[0]) == "optional":
        args = subtrees(subtrees(node)[1])
        spec = parse_type(args[0])
        default = None
        if len(args) == 2:
            raw = evaluate(args[1], Context({}))
            default = convert(raw, spec, "optional() default")
        return AttributeSpec(spec, optional=True, default=default)
    return AttributeSpec(parse_type(tree))


def convert(value: Any, spec: TypeSpec, where: str) -> Any:
    """Return `value` converted to `spec`; raise ConfigError naming `where`."""
    if value is None or spec.kind == "any":
        return value
    converter = _CONVERTERS[spec.kind]
    return converter(value, spec, where)


def _to_string(value: Any, _spec: TypeSpec, where: str) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise _mismatch(where, "string", value)


def _to_number(value: Any, _spec: TypeSpec, where: str) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            return float(value)
        except ValueError:
            raise _mismatch(where, "number", value) from None
    raise _mismatch(where, "number", value)


def _to_bool(value: Any, _spec: TypeSpec, where: str) -> Any:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _mismatch(where, "bool", value)


def _to_list(value: Any, spec: TypeSpec, where: str) -> Any:
    if not isinstance(value, list | tuple):
        raise _mismatch(where, spec.kind, value)
    element = spec.element or ANY
    items = [convert(item, element, f"{where}[{i}]") for i, item in enumerate(value)]
    if spec.kind == "set":
        unique = {repr(item): item for item in items}
        return [unique[key] for key in sorted(unique)]
    return items


def _to_map(value: Any, spec: TypeSpec, where: str) -> Any:
    if not isinstance(value, dict):
        raise _mismatch(where, "map", value)
    element = spec.element or ANY
    return {
        key: convert(item, element, f'{where}["{key}"]') for key, item in value.items()
    }


def _to_object(value: Any, spec: TypeSpec, where: str) -> Any:
    if not isinstance(value, dict):
        raise _mismatch(where, "object", value)
    unknown = sorted(set(value) - set(spec.attributes))
    if unknown:
        raise ConfigError(
            f"{where}: unknown attribute {unknown[0]!r} "
            f"(allowed: {', '.join(sorted(spec.attributes))})"
        )
    result = {}
    for name, attribute in spec.attributes.items():
        item = value.get(name)
        if item is None and attribute.optional:
            result[name] = attribute.default
        elif item is None:
            raise ConfigError(f"{where}: attribute {name!r} is required")
        else:
            result[name] = convert(item, attribute.type, f"{where}.{name}")
    return result


_CONVERTERS = {
    "string": _to_string,
    "number": _to_number,
    "bool": _to_bool,
    "list": _to_list,
    "set": _to_list,
    "map": _to_map,
    "object": _to_object,
}


def _mismatch(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {expected}, got {type_name(value)}")


def _unwrap(tree: Tree[Token]) -> Tree[Token]:
    while tree.data in ("expr_term", "object_elem_key"):
        (tree,) = subtrees(tree)
    return tree


def _name(tree: Tree[Token]) -> str:
    return "".join(str(c) for c in tree.children if isinstance(c, Token))
