"""Turn a loaded module and its variables into ordered resource instances.

The planner resolves input variables, orders resource blocks by their
references and `depends_on`, expands `for_each` and `count`, and evaluates
each instance's arguments against the resource schema. References to other
resources read the instances evaluated before; attributes Vault computes are
`UNKNOWN` until `record_applied` stores the real values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lark import Token, Tree

from devstack.tfapply_errors import ConfigError, ExprError
from devstack.tfapply_expr import Context, evaluate, references
from devstack.tfapply_hcl import Attribute, Body, Module, Resource, Variable
from devstack.tfapply_resources import RESOURCE_TYPES
from devstack.tfapply_schema import (
    Attrs,
    ResourceType,
    convert_arguments,
    convert_block,
)
from devstack.tfapply_types import ANY, convert, parse_type
from devstack.tfapply_values import UNKNOWN, contains_unknown


@dataclass
class Instance:
    address: str
    resource: Resource
    type: ResourceType
    attrs: Attrs
    key: str | int | None = None
    computed: dict[str, Any] = field(default_factory=dict)

    def value(self) -> dict[str, Any]:
        """Return the object other expressions see as this instance."""
        blocks = {
            name: [block.values for block in found]
            for name, found in self.attrs.blocks.items()
        }
        computed = self.computed or dict.fromkeys(self.type.computed, UNKNOWN)
        return {**self.attrs.values, **blocks, **computed}


def resolve_variables(module: Module, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check `values` against the module's variable declarations and types."""
    undeclared = sorted(set(values) - set(module.variables))
    if undeclared:
        raise ConfigError(
            f"variable {undeclared[0]!r} is not declared in {module.directory}"
        )
    resolved = {}
    for name, variable in module.variables.items():
        try:
            spec = parse_type(variable.type_expr) if variable.type_expr else ANY
            default = (
                evaluate(variable.default.expr, Context({}))
                if variable.default
                else None
            )
        except ExprError as err:
            raise ConfigError(f"variable {name!r}: {err}", variable.location) from err
        given = name in values
        if not given and variable.default is None:
            raise ConfigError(f"variable {name!r} is required: give it a value")
        value = convert(values[name] if given else default, spec, f"var.{name}")
        if value is None and not variable.nullable:
            raise ConfigError(f"variable {name!r} must not be null")
        check_validations(variable, value)
        resolved[name] = value
    return resolved


def check_validations(variable: Variable, value: Any) -> None:
    """Raise ConfigError with the message of each validation rule `value` breaks.

    As in Terraform before 1.9, a rule can refer only to its own variable.
    Terraform 1.15 evaluates error_message even when the condition is true, so
    a message that cannot be evaluated (a null in a template) fails here too.
    """
    context = Context({"var": {variable.name: value}})
    messages = []
    for rule in variable.validations:
        where = f"variable {variable.name!r}: validation"
        try:
            satisfied = evaluate(rule.condition.expr, context)
            message = evaluate(rule.error_message.expr, context)
        except ExprError as err:
            raise ConfigError(f"{where}: {err}", rule.location) from err
        if not isinstance(satisfied, bool):
            raise ConfigError(
                f"{where}: condition must be true or false, not {satisfied!r}",
                rule.location,
            )
        if not satisfied:
            messages.append(f"{rule.location}: {message}")
    if messages:
        raise ConfigError(
            f"invalid value for variable {variable.name!r}: " + " ".join(messages)
        )


class Planner:
    def __init__(self, module: Module, variables: Mapping[str, Any]) -> None:
        self.module = module
        self.variables = resolve_variables(module, variables)
        self.instances: dict[str, list[Instance]] = {}
        self._locals: dict[str, Any] = {}
        self._locals_in_progress: set[str] = set()
        for resource in module.resources.values():
            if resource.type not in RESOURCE_TYPES:
                raise ConfigError(
                    f"resource type {resource.type} is not supported by the applier "
                    f"(supported: {', '.join(sorted(RESOURCE_TYPES))})",
                    resource.location,
                )

    # -- ordering ---------------------------------------------------------

    def dependencies(self, resource: Resource) -> set[str]:
        """Return the addresses of the resource blocks `resource` depends on."""
        found: set[str] = set()
        for ref in resource.depends_on:
            if ref not in self.module.resources:
                raise ConfigError(
                    f"{resource.address}: depends_on names unknown resource {ref}",
                    resource.location,
                )
            found.add(ref)
        for expr in _expressions(resource):
            found |= self._expression_dependencies(expr, set())
        found.discard(resource.address)
        return found

    def _expression_dependencies(self, expr: Tree[Token], seen: set[str]) -> set[str]:
        found = set()
        for root, name in references(expr):
            address = f"{root}.{name}"
            if address in self.module.resources:
                found.add(address)
            elif root == "local" and name in self.module.locals and name not in seen:
                seen.add(name)
                local_expr = self.module.locals[name].expr
                found |= self._expression_dependencies(local_expr, seen)
        return found

    def order(self, targets: Iterable[str] | None = None) -> list[Resource]:
        """Return resource blocks in dependency order.

        With `targets`, keep those blocks and the blocks they depend on.
        """
        graph = self._graph()
        selected = set(graph)
        if targets is not None:
            selected = _closure(graph, _target_blocks(targets, graph), reverse=False)
        ordered: list[str] = []
        while len(ordered) < len(selected):
            ready = [
                address
                for address in graph
                if address in selected
                and address not in ordered
                and graph[address] & selected <= set(ordered)
            ]
            if not ready:
                cycle = sorted(selected - set(ordered))
                raise ConfigError(f"dependency cycle between {', '.join(cycle)}")
            ordered.append(ready[0])
        return [self.module.resources[address] for address in ordered]

    def dependents(self, targets: Iterable[str]) -> set[str]:
        """Return the target blocks and every block that depends on them."""
        graph = self._graph()
        return _closure(graph, _target_blocks(targets, graph), reverse=True)

    def _graph(self) -> dict[str, set[str]]:
        return {
            address: self.dependencies(resource)
            for address, resource in self.module.resources.items()
        }

    # -- evaluation -------------------------------------------------------

    def context(self, bindings: Mapping[str, Any] | None = None) -> Context:
        roots: dict[str, Any] = {"var": self.variables, "local": _Locals(self)}
        for type_name in {r.type for r in self.module.resources.values()}:
            roots[type_name] = _ResourceType(self, type_name)
        return Context({**roots, **(bindings or {})})

    def evaluate(self, attribute: Attribute, context: Context, where: str) -> Any:
        try:
            return evaluate(attribute.expr, context)
        except ExprError as err:
            message = f"{where}: argument {attribute.name!r}: {err}"
            raise ConfigError(message, attribute.location) from err

    def local(self, name: str) -> Any:
        if name in self._locals:
            return self._locals[name]
        if name not in self.module.locals:
            raise ExprError(f"local value {name!r} is not declared")
        if name in self._locals_in_progress:
            raise ExprError(f"local value {name!r} refers to itself")
        self._locals_in_progress.add(name)
        try:
            attribute = self.module.locals[name]
            value = self.evaluate(attribute, self.context(), f"local.{name}")
        finally:
            self._locals_in_progress.discard(name)
        if not contains_unknown(value):
            self._locals[name] = value
        return value

    def expand(self, resource: Resource) -> list[Instance]:
        """Evaluate every instance of `resource` and remember them."""
        rtype = RESOURCE_TYPES[resource.type]
        instances = []
        for key, bindings in self._instance_keys(resource):
            address = resource.address + ("" if key is None else f"[{json.dumps(key)}]")
            context = self.context(bindings)
            try:
                attrs = self._attrs(rtype, resource.body, context, address)
            except ConfigError as err:
                if err.location is not None:
                    raise
                raise ConfigError(str(err), resource.location) from err
            try:
                rtype.validate(attrs)
            except ConfigError as err:
                raise ConfigError(f"{address}: {err}", resource.location) from err
            instances.append(Instance(address, resource, rtype, attrs, key))
        self.instances[resource.address] = instances
        return instances

    def record_applied(self, instance: Instance, computed: Mapping[str, Any]) -> None:
        instance.computed = {
            name: computed.get(name) for name in instance.type.computed
        }

    def _instance_keys(
        self, resource: Resource
    ) -> list[tuple[str | int | None, dict[str, Any]]]:
        where = resource.address
        if resource.for_each is not None:
            collection = self.evaluate(resource.for_each, self.context(), where)
            if isinstance(collection, list) and all(
                isinstance(k, str) for k in collection
            ):
                collection = {k: k for k in collection}
            if not isinstance(collection, dict) or contains_unknown(list(collection)):
                raise ConfigError(
                    f"{where}: for_each needs a map or a set of strings known "
                    "before apply",
                    resource.for_each.location,
                )
            return [
                (k, {"each": {"key": k, "value": v}})
                for k, v in sorted(collection.items())
            ]
        if resource.count is not None:
            count = self.evaluate(resource.count, self.context(), where)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ConfigError(
                    f"{where}: count must be a whole number known before apply",
                    resource.count.location,
                )
            return [(i, {"count": {"index": i}}) for i in range(count)]
        return [(None, {})]

    def _attrs(
        self, rtype: ResourceType, body: Body, context: Context, where: str
    ) -> Attrs:
        values = {
            name: self.evaluate(attr, context, where)
            for name, attr in body.attributes.items()
        }
        attrs = convert_arguments(rtype, values, where)
        for block in body.blocks:
            schema = rtype.blocks.get(block.type)
            if schema is None or block.labels:
                raise ConfigError(
                    f"{where}: unsupported block {block.type!r}", block.location
                )
            block_values = {
                n: self.evaluate(a, context, where)
                for n, a in block.body.attributes.items()
            }
            if block.body.blocks:
                raise ConfigError(
                    f"{where}: nested blocks inside {block.type} are not supported",
                    block.location,
                )
            converted = convert_block(schema, block_values, f"{where}: {block.type}")
            attrs.blocks.setdefault(block.type, []).append(converted)
        return attrs


class _Locals:
    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    def attribute(self, name: str) -> Any:
        return self.planner.local(name)


class _ResourceType:
    """The root `TYPE` in `TYPE.NAME.attr`: resolves to evaluated instances."""

    def __init__(self, planner: Planner, type_name: str) -> None:
        self.planner = planner
        self.type_name = type_name

    def attribute(self, name: str) -> Any:
        address = f"{self.type_name}.{name}"
        resource = self.planner.module.resources.get(address)
        if resource is None:
            raise ExprError(f"resource {address} is not declared")
        instances = self.planner.instances.get(address)
        if instances is None:
            raise ExprError(
                f"resource {address} is not part of this run: add it to the targets"
            )
        if resource.for_each is not None:
            return {str(i.key): i.value() for i in instances}
        if resource.count is not None:
            return [i.value() for i in instances]
        return instances[0].value()


def _expressions(resource: Resource) -> list[Tree[Token]]:
    exprs = [a.expr for a in resource.body.attributes.values()]
    for block in resource.body.blocks:
        exprs += [a.expr for a in block.body.attributes.values()]
    for meta in (resource.for_each, resource.count):
        if meta is not None:
            exprs.append(meta.expr)
    if resource.lifecycle is not None:
        exprs += [a.expr for a in resource.lifecycle.body.attributes.values()]
    return exprs


def _target_blocks(targets: Iterable[str], graph: Mapping[str, set[str]]) -> set[str]:
    blocks = set()
    for target in targets:
        block = target.split("[", 1)[0]
        if block not in graph:
            raise ConfigError(f"target {target} is not a resource of the module")
        blocks.add(block)
    return blocks


def _closure(
    graph: Mapping[str, set[str]], start: set[str], *, reverse: bool
) -> set[str]:
    edges = graph
    if reverse:
        edges = {a: {b for b, deps in graph.items() if a in deps} for a in graph}
    result = set(start)
    pending = list(start)
    while pending:
        for neighbour in edges[pending.pop()]:
            if neighbour not in result:
                result.add(neighbour)
                pending.append(neighbour)
    return result
