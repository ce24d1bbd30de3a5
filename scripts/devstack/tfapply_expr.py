"""Evaluate the subset of Terraform expressions that vault-config/ uses.

Supported: literals, string templates with `${...}` interpolation, heredocs,
tuples and objects, references (`var.x`, `local.x`, `each.key`,
`count.index`, `self.x`, `TYPE.NAME.attr`, indexing), arithmetic, comparison
and logical operators, conditionals, `for` expressions with `if`, and the
functions in `tfapply_functions`. Everything else (splats, template
directives, provider functions, grouping `...`) raises `ExprError` naming
the construct. Values computed by Vault that are not known yet evaluate to
`UNKNOWN`, which propagates through every operation as in Terraform's plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from lark import Token, Tree

from devstack.tfapply_errors import ExprError
from devstack.tfapply_functions import FUNCTIONS, to_template_string
from devstack.tfapply_hcl import parse_expression, subtrees
from devstack.tfapply_values import UNKNOWN, contains_unknown, type_name

ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


class Namespace(Protocol):
    """A root whose attributes are resolved on access, such as `local`."""

    def attribute(self, name: str) -> Any: ...


class Context:
    """The names an expression can reference, by root identifier."""

    def __init__(self, roots: Mapping[str, Any]) -> None:
        self.roots = dict(roots)

    def with_bindings(self, bindings: Mapping[str, Any]) -> Context:
        return Context({**self.roots, **bindings})

    def root(self, name: str) -> Any:
        if name not in self.roots:
            raise ExprError(f"unknown reference {name!r}")
        return self.roots[name]


def evaluate(tree: Tree[Token], context: Context) -> Any:
    """Return the value of the expression `tree` in `context`."""
    handler = _HANDLERS.get(tree.data)
    if handler is None:
        raise ExprError(f"{tree.data.replace('_', ' ')} is not supported")
    return handler(tree, context)


def references(tree: Tree[Token]) -> set[tuple[str, str]]:
    """Return each `root.name` pair `tree` mentions, such as ("var", "agents")."""
    found: set[tuple[str, str]] = set()
    for node in tree.iter_subtrees():
        if node.data != "get_attr_expr_term":
            continue
        base, attr = subtrees(node)
        inner = subtrees(base)
        if len(inner) == 1 and inner[0].data == "identifier":
            found.add((_token_text(inner[0]), _token_text(subtrees(attr)[0])))
    return found


def _tokens(tree: Tree[Token]) -> list[Token]:
    return [child for child in tree.children if isinstance(child, Token)]


def _token_text(tree: Tree[Token]) -> str:
    return "".join(str(token) for token in _tokens(tree))


def _expr_term(tree: Tree[Token], context: Context) -> Any:
    # A term is one sub-expression, possibly wrapped in parentheses.
    (inner,) = subtrees(tree)
    return evaluate(inner, context)


def _literal(tree: Tree[Token], _context: Context) -> Any:
    text = _token_text(tree)
    if tree.data == "int_lit":
        return int(text)
    if tree.data == "float_lit":
        return float(text)
    return {"true": True, "false": False, "null": None}[text]


def _identifier(tree: Tree[Token], context: Context) -> Any:
    return context.root(_token_text(tree))


def _string(tree: Tree[Token], context: Context) -> Any:
    parts: list[Any] = []
    for part in subtrees(tree):
        (piece,) = part.children
        if isinstance(piece, Token):
            parts.append(_unescape(piece))
        elif piece.data == "interpolation":
            parts.append(to_template_string(evaluate(subtrees(piece)[0], context)))
        else:
            raise ExprError("template directives (%{...}) are not supported")
    if any(part is UNKNOWN for part in parts):
        return UNKNOWN
    return "".join(parts)


def _unescape(token: Token) -> str:
    text = str(token)
    if token.type in ("ESCAPED_INTERPOLATION", "ESCAPED_DIRECTIVE"):
        return text[1:]
    out: list[str] = []
    chars = iter(range(len(text)))
    for i in chars:
        if text[i] != "\\":
            out.append(text[i])
            continue
        code = text[i + 1]
        if code == "u":
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            for _ in range(5):
                next(chars)
            continue
        if code not in ESCAPES:
            raise ExprError(f"invalid escape sequence \\{code} in a string")
        out.append(ESCAPES[code])
        next(chars)
    return "".join(out)


def _heredoc(tree: Tree[Token], context: Context) -> Any:
    # A heredoc body is a template without escapes: re-parse it as a quoted
    # string whose backslashes, quotes and newlines are escaped.
    # NOTE: quotes inside a ${...} of a heredoc are escaped too and then fail
    # to parse; vault-config/ evaluates no such heredoc.
    first, *lines = _token_text(tree).split("\n")
    body = lines[:-2]
    if tree.data == "heredoc_template_trim":
        indents = [len(line) - len(line.lstrip()) for line in body if line.strip()]
        trim = min(indents, default=0)
        body = [line[trim:] for line in body]
    text = "".join(f"{line}\n" for line in body)
    quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return evaluate(parse_expression(f'"{quoted}"', first), context)


def _tuple(tree: Tree[Token], context: Context) -> Any:
    return [evaluate(item, context) for item in subtrees(tree)]


def _object(tree: Tree[Token], context: Context) -> Any:
    result: dict[str, Any] = {}
    for element in subtrees(tree):
        key_tree, value_tree = subtrees(element)
        key = _object_key(key_tree, context)
        if key is UNKNOWN:
            return UNKNOWN
        result[key] = evaluate(value_tree, context)
    return result


def _object_key(tree: Tree[Token], context: Context) -> Any:
    (expr,) = subtrees(tree) or [tree]
    inner = subtrees(expr)
    # A bare identifier as key is the key's literal name, as in Terraform.
    if expr.data == "expr_term" and len(inner) == 1 and inner[0].data == "identifier":
        return _token_text(inner[0])
    if expr.data == "keyword":
        return _token_text(expr)
    key = evaluate(expr, context)
    if key is not UNKNOWN and not isinstance(key, str):
        raise ExprError(f"object keys must be strings, not {type_name(key)}")
    return key


def _get_attr(tree: Tree[Token], context: Context) -> Any:
    base_tree, attr_tree = subtrees(tree)
    name = _token_text(subtrees(attr_tree)[0])
    return get_attribute(evaluate(base_tree, context), name)


def get_attribute(base: Any, name: str) -> Any:
    """Return `base.name` for a namespace, an object or an unknown value."""
    if base is UNKNOWN:
        return UNKNOWN
    if isinstance(base, dict):
        if name not in base:
            raise ExprError(f"object has no attribute {name!r}")
        return base[name]
    if hasattr(base, "attribute"):
        return base.attribute(name)
    raise ExprError(f"cannot read attribute {name!r} of {type_name(base)}")


def _index(tree: Tree[Token], context: Context) -> Any:
    base_tree, index_tree = subtrees(tree)
    base = evaluate(base_tree, context)
    if index_tree.data == "short_index":
        key: Any = int(_token_text(index_tree)[1:])
    else:
        key = evaluate(subtrees(index_tree)[0], context)
    if base is UNKNOWN or key is UNKNOWN:
        return UNKNOWN
    if isinstance(base, list) and isinstance(key, int) and 0 <= key < len(base):
        return base[key]
    if isinstance(base, dict) and isinstance(key, str) and key in base:
        return base[key]
    raise ExprError(f"index {key!r} not found in {type_name(base)}")


def _function_call(tree: Tree[Token], context: Context) -> Any:
    if any(token.type == "COLONS" for token in _tokens(tree)):
        raise ExprError("provider-defined functions are not supported")
    name_tree, *rest = subtrees(tree)
    name = _token_text(name_tree)
    if name not in FUNCTIONS:
        raise ExprError(
            f"function {name}() is not supported (supported: {', '.join(FUNCTIONS)})"
        )
    args = []
    if rest:
        if any(token.type == "ELLIPSIS" for token in _tokens(rest[0])):
            raise ExprError("expanding arguments with ... is not supported")
        args = [evaluate(arg, context) for arg in subtrees(rest[0])]
    if any(contains_unknown(arg) for arg in args):
        return UNKNOWN
    return FUNCTIONS[name](*args)


def _conditional(tree: Tree[Token], context: Context) -> Any:
    condition, if_true, if_false = subtrees(tree)
    chosen = evaluate(condition, context)
    if chosen is UNKNOWN:
        return UNKNOWN
    if not isinstance(chosen, bool):
        raise ExprError(f"condition must be a bool, not {type_name(chosen)}")
    return evaluate(if_true if chosen else if_false, context)


def _binary_op(tree: Tree[Token], context: Context) -> Any:
    from devstack.tfapply_functions import binary_operation

    left_tree, term = subtrees(tree)
    operator_tree, right_tree = subtrees(term)
    left = evaluate(left_tree, context)
    right = evaluate(right_tree, context)
    if left is UNKNOWN or right is UNKNOWN:
        return UNKNOWN
    return binary_operation(_token_text(operator_tree), left, right)


def _unary_op(tree: Tree[Token], context: Context) -> Any:
    (operator,) = _tokens(tree)
    value = evaluate(subtrees(tree)[0], context)
    if value is UNKNOWN:
        return UNKNOWN
    if str(operator) == "!" and isinstance(value, bool):
        return not value
    if str(operator) == "-" and isinstance(value, int | float):
        return -value
    raise ExprError(f"operator {operator} cannot apply to {type_name(value)}")


def _for_expr(tree: Tree[Token], context: Context) -> Any:
    if any(token.type == "ELLIPSIS" for token in _tokens(tree)):
        raise ExprError(
            "grouping results with ... in a for expression is not supported"
        )
    intro, *bodies = subtrees(tree)
    condition = bodies.pop() if bodies[-1].data == "for_cond" else None
    *names, collection_tree = subtrees(intro)
    collection = evaluate(collection_tree, context)
    if collection is UNKNOWN:
        return UNKNOWN
    is_object = tree.data == "for_object_expr"
    results: dict[str, Any] | list[Any] = {} if is_object else []
    for key, value in _iterate(collection):
        names_to_values = [key, value] if len(names) == 2 else [value]
        bindings = {
            _token_text(n): v for n, v in zip(names, names_to_values, strict=True)
        }
        inner = context.with_bindings(bindings)
        if condition is not None and not _keep(condition, inner):
            continue
        if isinstance(results, dict):
            out_key = evaluate(bodies[0], inner)
            if out_key in results:
                raise ExprError(f"duplicate key {out_key!r} in a for expression")
            results[out_key] = evaluate(bodies[1], inner)
        else:
            results.append(evaluate(bodies[0], inner))
    return results


def _keep(condition: Tree[Token], context: Context) -> bool:
    value = evaluate(subtrees(condition)[0], context)
    if not isinstance(value, bool):
        raise ExprError(f"for expression condition must be a bool, not {value!r}")
    return value


def _iterate(collection: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(collection, dict):
        for key in sorted(collection):
            yield key, collection[key]
    elif isinstance(collection, list):
        yield from enumerate(collection)
    else:
        raise ExprError(f"cannot iterate over {type_name(collection)}")


_HANDLERS: dict[str, Callable[[Tree[Token], Context], Any]] = {
    "expr_term": _expr_term,
    "int_lit": _literal,
    "float_lit": _literal,
    "literal_value": _literal,
    "identifier": _identifier,
    "string": _string,
    "heredoc_template": _heredoc,
    "heredoc_template_trim": _heredoc,
    "tuple": _tuple,
    "object": _object,
    "get_attr_expr_term": _get_attr,
    "index_expr_term": _index,
    "function_call": _function_call,
    "conditional": _conditional,
    "binary_op": _binary_op,
    "unary_op": _unary_op,
    "for_tuple_expr": _for_expr,
    "for_object_expr": _for_expr,
}
