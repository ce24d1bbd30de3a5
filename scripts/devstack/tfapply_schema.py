"""Resource schemas and the base class of the applier's resource types.

Each resource type lists the provider arguments it implements, with the
provider schema's kind and default, and maps them to Vault API calls the way
terraform-provider-vault does. Arguments outside the list are rejected, so a
typo or an unimplemented provider feature fails before anything is written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from devstack.tfapply_errors import ConfigError
from devstack.tfapply_values import UNKNOWN, is_set, type_name
from devstack.tfapply_vault import VaultClient

# Marker that `ResourceType.refresh` returns for an object missing from Vault.
ABSENT = "(absent from Vault)"


@dataclass(frozen=True)
class Arg:
    """One argument: kind is string, int, bool, list or set or map (of
    strings), or any (a value passed through unchanged)."""

    kind: str
    required: bool = False
    default: Any = None
    sensitive: bool = False


@dataclass(frozen=True)
class BlockSchema:
    arguments: Mapping[str, Arg]


@dataclass
class Attrs:
    """A resource instance's arguments after evaluation and conversion.

    `values` contains every schema argument, with unset ones as their default
    or None. `blocks` contains the nested blocks. `configured` names the
    arguments the configuration set to a non-null value.
    """

    values: dict[str, Any]
    configured: frozenset[str] = frozenset()
    blocks: dict[str, list[Attrs]] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def get_ok(self, name: str) -> Any:
        """Return the value if the provider's `GetOk` reports it as set, else None."""
        value = self.values.get(name)
        return value if is_set(value) else None

    def exists(self, name: str) -> bool:
        """Mirror `GetOkExists`: set in the configuration or given a default."""
        return name in self.configured or self.values.get(name) is not None

    def block(self, name: str) -> Attrs | None:
        found = self.blocks.get(name) or []
        return found[0] if found else None


class ResourceType(ABC):
    name: ClassVar[str]
    arguments: ClassVar[Mapping[str, Arg]]
    blocks: ClassVar[Mapping[str, BlockSchema]] = {}
    # Attributes Vault computes, unknown until the object is applied.
    computed: ClassVar[tuple[str, ...]] = ("id",)

    def validate(self, attrs: Attrs) -> None:  # noqa: B027 - most types have no rule
        """Raise ConfigError for combinations the provider rejects at plan time."""

    @abstractmethod
    def apply(
        self, client: VaultClient, attrs: Attrs, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        """Create or update the object; return the attributes Vault computed.

        `sensitive_changed` names sensitive arguments whose value differs from
        the last apply (all of them when no state records that apply).
        """

    @abstractmethod
    def delete(self, client: VaultClient, attrs: Attrs) -> None: ...

    def refresh(self, client: VaultClient, attrs: Attrs) -> list[str] | None:
        """Read the object back; return the arguments whose value in Vault differs.

        This is the provider's Read before a plan, reduced to the comparison
        the plan then makes: a returned name is a change the plan would show.
        A missing object returns [ABSENT]. None means the applier does not
        implement the read of this type.
        """
        return None

    def skips_unchanged(self, attrs: Attrs) -> bool:
        """Return whether an apply skips the object when its arguments are unchanged.

        Terraform writes what differs from the state it refreshed from
        Vault. The applier cannot refresh, so it writes every object, except
        those that Terraform does not refresh either, and only when their
        arguments equal those of the recorded apply.
        """
        return False

    def sensitive_arguments(self) -> list[str]:
        names = [name for name, arg in self.arguments.items() if arg.sensitive]
        for block_name, block in self.blocks.items():
            names += [
                f"{block_name}.{n}" for n, a in block.arguments.items() if a.sensitive
            ]
        return names


class PathResource(ResourceType):
    """A resource that is one Vault path: written whole, removed with DELETE."""

    method: ClassVar[str] = "POST"
    # Whether the payload differs between create and update, which costs a
    # read of the path before each write.
    create_differs: ClassVar[bool] = False

    @abstractmethod
    def path(self, attrs: Attrs) -> str: ...

    @abstractmethod
    def payload(
        self, attrs: Attrs, *, create: bool, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]: ...

    def apply(
        self, client: VaultClient, attrs: Attrs, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        path = self.path(attrs)
        create = self.create_differs and client.read(path) is None
        body = self.payload(attrs, create=create, sensitive_changed=sensitive_changed)
        client.request(self.method, path, body)
        return {"id": path}

    def delete(self, client: VaultClient, attrs: Attrs) -> None:
        client.delete(self.path(attrs))


def convert_arguments(
    resource: ResourceType, values: Mapping[str, Any], where: str
) -> Attrs:
    """Check evaluated arguments against the schema and convert their kinds."""
    return _convert(resource.arguments, values, where)


def _convert(schema: Mapping[str, Arg], values: Mapping[str, Any], where: str) -> Attrs:
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise ConfigError(
            f"{where}: unsupported argument {unknown[0]!r} "
            f"(supported: {', '.join(sorted(schema))})"
        )
    result: dict[str, Any] = {}
    configured = set()
    for name, arg in schema.items():
        value = values.get(name)
        if value is None:
            if arg.required:
                raise ConfigError(f"{where}: argument {name!r} is required")
            result[name] = arg.default
            continue
        configured.add(name)
        result[name] = convert_kind(value, arg.kind, f"{where}: argument {name!r}")
    return Attrs(result, frozenset(configured))


def convert_block(schema: BlockSchema, values: Mapping[str, Any], where: str) -> Attrs:
    return _convert(schema.arguments, values, where)


def convert_kind(value: Any, kind: str, where: str) -> Any:
    """Convert `value` to a provider schema kind, as the plugin SDK would."""
    if value is UNKNOWN or kind == "any":
        return value
    converted = _KIND_CONVERTERS[kind](value, where)
    if converted is _MISMATCH:
        raise ConfigError(f"{where}: expected {kind}, got {type_name(value)}")
    return converted


_MISMATCH = object()


def _to_string(value: Any, where: str) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) else _MISMATCH


def _to_bool(value: Any, where: str) -> Any:
    return value if isinstance(value, bool) else _MISMATCH


def _to_list(value: Any, where: str) -> Any:
    if not isinstance(value, list):
        return _MISMATCH
    return [convert_kind(item, "string", where) for item in value]


def _to_set(value: Any, where: str) -> Any:
    items = _to_list(value, where)
    return items if items is _MISMATCH else sorted(set(items))


def _to_map(value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        return _MISMATCH
    return {k: convert_kind(v, "string", where) for k, v in value.items()}


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise ConfigError(f"{where}: expected a whole number, got {type_name(value)}")


_KIND_CONVERTERS: dict[str, Callable[[Any, str], Any]] = {
    "string": _to_string,
    "int": _to_int,
    "bool": _to_bool,
    "list": _to_list,
    "set": _to_set,
    "map": _to_map,
}


def require_known(attrs: Attrs, *names: str) -> None:
    """Fail when an argument an API path is built from is still unknown."""
    for name in names:
        if attrs.get(name) is UNKNOWN:
            raise ConfigError(f"argument {name!r} is not known before apply")
