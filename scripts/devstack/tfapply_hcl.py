"""Load a Terraform root module into plain Python objects for the applier.

python-hcl2 parses each `.tf` file into a Lark tree. This module keeps the
argument expressions as Lark trees (evaluated later, once their references
are known) and turns the block structure into `Module`, rejecting every
top-level block kind and meta-argument the applier does not implement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import hcl2
from lark import Token, Tree
from lark.exceptions import LarkError

from devstack.tfapply_errors import ConfigError, Location

SUPPORTED_TOP_LEVEL = ("terraform", "variable", "locals", "resource", "output")
RESOURCE_META_ARGUMENTS = ("count", "for_each", "depends_on", "provider")


@dataclass(frozen=True)
class Attribute:
    name: str
    expr: Tree[Token]
    location: Location


@dataclass
class Body:
    attributes: dict[str, Attribute] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def blocks_of(self, kind: str) -> list[Block]:
        return [block for block in self.blocks if block.type == kind]


@dataclass
class Block:
    type: str
    labels: tuple[str, ...]
    body: Body
    location: Location


@dataclass(frozen=True)
class Validation:
    """One `validation` block of a variable: the rule and its error message."""

    condition: Attribute
    error_message: Attribute
    location: Location


@dataclass
class Variable:
    name: str
    type_expr: Tree[Token] | None
    default: Attribute | None
    sensitive: bool
    nullable: bool
    location: Location
    validations: list[Validation] = field(default_factory=list)


@dataclass
class Resource:
    """One `resource` block; `body` excludes meta-arguments and meta-blocks."""

    type: str
    name: str
    body: Body
    location: Location
    count: Attribute | None = None
    for_each: Attribute | None = None
    depends_on: list[str] = field(default_factory=list)
    provisioners: list[Block] = field(default_factory=list)
    lifecycle: Block | None = None
    # Argument names listed in `lifecycle { ignore_changes = [...] }`.
    ignore_changes: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.type}.{self.name}"


@dataclass
class Module:
    directory: Path
    variables: dict[str, Variable] = field(default_factory=dict)
    locals: dict[str, Attribute] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    outputs: dict[str, Attribute] = field(default_factory=dict)


def load_module(directory: Path) -> Module:
    """Parse every `*.tf` file of `directory` (not subfolders) into a `Module`."""
    files = sorted(directory.glob("*.tf"))
    if not files:
        raise ConfigError(f"no .tf files in {directory}: pass the module directory")
    module = Module(directory)
    for path in files:
        body = parse_body(path.read_text(), str(path))
        for attribute in body.attributes.values():
            raise ConfigError("a module file contains only blocks", attribute.location)
        for block in body.blocks:
            _add_block(module, block)
    return module


def parse_body(text: str, filename: str) -> Body:
    """Parse HCL text (a `.tf` or `.tfvars` file) into its top-level `Body`."""
    try:
        tree = hcl2.parses_to_tree(text)
    except LarkError as err:
        raise ConfigError(f"invalid HCL in {filename}: {err}") from err
    return _body(subtrees(tree)[0], filename)


def parse_expression(text: str, what: str) -> Tree[Token]:
    """Parse one HCL expression, for example a TF_VAR_ value of complex type."""
    body = parse_body(f"value = {text}\n", what)
    return body.attributes["value"].expr


def _label_text(tree: Tree[Token]) -> str:
    tokens = [str(child) for child in tree.scan_values(lambda v: isinstance(v, Token))]
    if tree.data == "string":
        return "".join(tokens[1:-1])
    return "".join(tokens)


def subtrees(tree: Tree[Token]) -> list[Tree[Token]]:
    """Return the sub-trees of `tree`, without tokens and comments."""
    return [
        child
        for child in tree.children
        if isinstance(child, Tree) and child.data != "new_line_or_comment"
    ]


def _body(tree: Tree[Token], filename: str) -> Body:
    body = Body()
    for child in subtrees(tree):
        location = Location(filename, getattr(child.meta, "line", 0))
        if child.data == "attribute":
            name_tree, expr = subtrees(child)
            name = _label_text(name_tree)
            if name in body.attributes:
                raise ConfigError(f"argument {name!r} is set twice", location)
            body.attributes[name] = Attribute(name, expr, location)
        elif child.data == "block":
            *labels, inner = subtrees(child)
            kind, *rest = (_label_text(label) for label in labels)
            block = Block(kind, tuple(rest), _body(inner, filename), location)
            body.blocks.append(block)
    return body


def _add_block(module: Module, block: Block) -> None:
    if block.type not in SUPPORTED_TOP_LEVEL:
        raise ConfigError(
            f"{block.type!r} blocks are not supported by the applier "
            f"(supported: {', '.join(SUPPORTED_TOP_LEVEL)})",
            block.location,
        )
    if block.type == "variable":
        variable = _variable(block)
        module.variables[variable.name] = variable
    elif block.type == "locals":
        module.locals.update(block.body.attributes)
    elif block.type == "resource":
        resource = _resource(block)
        if resource.address in module.resources:
            raise ConfigError(f"resource {resource.address} is declared twice")
        module.resources[resource.address] = resource
    elif block.type == "output":
        (name,) = block.labels
        module.outputs[name] = _require(block, "value")
    else:
        _check_terraform_block(block)


def _variable(block: Block) -> Variable:
    (name,) = block.labels
    attrs = block.body.attributes
    unknown = set(attrs) - {"type", "default", "description", "sensitive", "nullable"}
    nested = [b.type for b in block.body.blocks if b.type != "validation"]
    if unknown or nested:
        extra = sorted(unknown) or nested
        raise ConfigError(
            f"variable {name!r}: {', '.join(extra)} is not supported by the applier",
            block.location,
        )
    type_attr = attrs.get("type")
    return Variable(
        name=name,
        type_expr=type_attr.expr if type_attr else None,
        default=attrs.get("default"),
        sensitive=_literal_bool(attrs.get("sensitive"), default=False),
        nullable=_literal_bool(attrs.get("nullable"), default=True),
        location=block.location,
        validations=[_validation(b, name) for b in block.body.blocks],
    )


def _validation(block: Block, variable: str) -> Validation:
    attrs = block.body.attributes
    if set(attrs) != {"condition", "error_message"} or block.body.blocks:
        raise ConfigError(
            f"variable {variable!r}: a validation block needs condition and "
            "error_message, and takes nothing else",
            block.location,
        )
    return Validation(attrs["condition"], attrs["error_message"], block.location)


def _resource(block: Block) -> Resource:
    kind, name = block.labels
    body = Body(dict(block.body.attributes), [])
    resource = Resource(kind, name, body, block.location)
    resource.count = body.attributes.pop("count", None)
    resource.for_each = body.attributes.pop("for_each", None)
    if resource.count and resource.for_each:
        raise ConfigError(f"{resource.address}: set count or for_each, not both")
    if "provider" in body.attributes:
        raise ConfigError(f"{resource.address}: provider aliases are not supported")
    depends_on = body.attributes.pop("depends_on", None)
    if depends_on is not None:
        resource.depends_on = [
            _label_text(ref) for ref in subtrees(subtrees(depends_on.expr)[0])
        ]
    for nested in block.body.blocks:
        if nested.type == "provisioner":
            resource.provisioners.append(nested)
        elif nested.type == "lifecycle":
            resource.lifecycle = nested
            ignored = nested.body.attributes.get("ignore_changes")
            if ignored is not None:
                resource.ignore_changes = [
                    _label_text(name) for name in subtrees(subtrees(ignored.expr)[0])
                ]
        else:
            body.blocks.append(nested)
    return resource


def _check_terraform_block(block: Block) -> None:
    allowed = {"required_version"}
    for name, attribute in block.body.attributes.items():
        if name not in allowed:
            raise ConfigError(
                f"terraform.{name} is not supported by the applier", attribute.location
            )
    for nested in block.body.blocks:
        if nested.type != "required_providers":
            raise ConfigError(
                f"terraform {{ {nested.type} }} is not supported by the applier",
                nested.location,
            )
        providers = set(nested.body.attributes)
        if providers - {"vault"}:
            raise ConfigError(
                f"only the vault provider is supported, not {sorted(providers)}",
                nested.location,
            )


def _require(block: Block, name: str) -> Attribute:
    try:
        return block.body.attributes[name]
    except KeyError:
        raise ConfigError(
            f"{block.type} {' '.join(block.labels)}: argument {name!r} is required",
            block.location,
        ) from None


def _literal_bool(attribute: Attribute | None, *, default: bool) -> bool:
    if attribute is None:
        return default
    text = _label_text(attribute.expr)
    if text not in ("true", "false"):
        raise ConfigError(f"{attribute.name} must be true or false", attribute.location)
    return text == "true"


def bare_word(attribute: Attribute) -> str:
    """Return the keyword an argument names, such as `destroy` in `when = destroy`."""
    return _label_text(attribute.expr)
