"""Turn `--role` values into creds paths of the agent-bridge mount.

`database/NAME` and `aws/NAME` name the engine explicitly. A bare NAME is
looked up with `sys/capabilities-self` on both creds paths, which mints
nothing: the engine whose path the token may read wins, and a name readable
on both is ambiguous. Every role is checked before the first credential is
minted, so a role the policy does not grant fails with nothing to revoke.

Usage errors (exit 64) come before denials (exit 77), because a usage error
stays wrong whatever the policy grants. Malformed values and two prefixed
roles of one engine are found while the options are parsed. After the
capabilities lookup, an ambiguous bare name and two roles of one engine are
reported before a role that the policies do not grant.
"""

from __future__ import annotations

from attestor.agent_exec.errors import DeniedError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from attestor.agent_exec.vault import VaultClient

KINDS = ("database", "aws")
# Vault's role names follow `framework.GenericNameRegex`, `\w(([\w-]|\.)*\w)?`
# with ASCII `\w`: these characters, and no '-' or '.' at either end.
NAME_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."
)
NAME_RULE = (
    "a role name has ASCII letters, digits, '_', '-' and '.', and starts and "
    "ends with a letter, digit or '_'"
)

# Longer names are printed once per message, not once per creds path.
SHOWN_NAME_LENGTH = 64


class RoleSpec:
    """A `--role` value; `kind` is empty unless the value named the engine.

    Equal values are one role, so `--role x --role x` checks `x` once.
    """

    __slots__ = ("kind", "name")

    def __init__(self, name: str, kind: str = "") -> None:
        self.name = name
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RoleSpec):
            return NotImplemented
        return (self.name, self.kind) == (other.name, other.kind)

    def __hash__(self) -> int:
        return hash((self.name, self.kind))

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}" if self.kind else self.name


class Role:
    """A role whose engine is known, with the path its credentials are read at."""

    __slots__ = ("kind", "name", "path")

    def __init__(self, kind: str, name: str, path: str) -> None:
        self.kind = kind
        self.name = name
        self.path = path

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def parse_role(value: str) -> RoleSpec:
    """Parse one `--role` value, or raise UsageError that names what is wrong.

    Only the text before the first '/' is a prefix, so in `database/x/` the
    prefix is right and the name `x/` is invalid.
    """
    kind, slash, name = value.partition("/")
    if not slash:
        kind, name = "", value
    elif kind not in KINDS:
        raise UsageError(
            f"invalid role {value!r}: the prefix must be 'database/' or 'aws/'"
        )
    problem = _name_problem(name)
    if problem:
        if not kind:
            subject = "the name"
        elif name:
            subject = f"the name {name!r} after '{kind}/'"
        else:
            subject = f"the name after '{kind}/'"
        raise UsageError(f"invalid role {value!r}: {subject} {problem}; {NAME_RULE}")
    return RoleSpec(name=name, kind=kind)


def parse_roles(values: list[str]) -> list[RoleSpec]:
    """Parse every `--role` value, or raise UsageError for an invalid one.

    Two prefixed roles of one engine with different names, such as
    `database/a` and `database/b`, are rejected here, before any request,
    because their credentials would set the same environment variables
    whatever the policy grants.
    """
    specs = [parse_role(value) for value in values]
    first_of_kind: dict[str, RoleSpec] = {}
    for spec in specs:
        if not spec.kind:
            continue
        first = first_of_kind.setdefault(spec.kind, spec)
        if first != spec:
            raise _same_kind_error(str(first), str(spec), spec.kind)
    return specs


def creds_path(mount: str, kind: str, name: str) -> str:
    return f"{mount.strip('/')}/{kind}/creds/{name}"


def resolve_roles(
    vault: VaultClient,
    mount: str,
    specs: list[RoleSpec],
    *,
    meanwhile: Callable[[], None] | None = None,
) -> list[Role]:
    """Find each role's engine and check the token may read every creds path.

    Raise UsageError for an ambiguous bare name, then for two roles of one
    engine, and only then DeniedError for a role whose creds path the
    token may not read. Values that resolve to the same creds path, such as
    `database/x` and a bare `x` readable only on the database path, are one
    role, kept at the first value's position. `meanwhile` runs while Vault
    looks up the capabilities.
    """
    candidates = {
        spec: [
            Role(kind=kind, name=spec.name, path=creds_path(mount, kind, spec.name))
            for kind in _kinds(spec)
        ]
        for spec in specs
    }
    capabilities = vault.capabilities(
        sorted({role.path for roles in candidates.values() for role in roles}),
        meanwhile=meanwhile,
    )
    readable = {
        spec: [role for role in roles if _may_read(capabilities, role.path)]
        for spec, roles in candidates.items()
    }
    _check_unambiguous(readable)
    roles = _roles_of_known_kind(candidates, readable)
    _check_one_per_kind(roles)
    _check_granted(candidates, readable)
    return roles


def creds_params(role: Role, ttl: int | None) -> dict[str, str] | None:
    """Return the query parameters of a creds read that requests `ttl` seconds.

    Both creds paths of the mount take `ttl`: `aws/creds/<name>` as Vault's
    AWS engine does, and `database/creds/<name>` as an extension of Vault's
    database API. The plugin caps a value above the role's max TTL.
    """
    if ttl is None:
        return None
    return {"ttl": str(ttl)}


def _name_problem(name: str) -> str:
    """Describe what keeps `name` from being a role name, or return ''."""
    if not name:
        return "is empty"
    invalid = next((char for char in name if char not in NAME_CHARACTERS), "")
    if invalid:
        return f"contains {invalid!r}"
    if name[0] in "-.":
        return f"starts with {name[0]!r}"
    if name[-1] in "-.":
        return f"ends with {name[-1]!r}"
    return ""


def _kinds(spec: RoleSpec) -> tuple[str, ...]:
    return (spec.kind,) if spec.kind else KINDS


def _may_read(capabilities: dict[str, list[str]], path: str) -> bool:
    granted = capabilities.get(path, [])
    return bool({"read", "root"} & set(granted)) and "deny" not in granted


def _check_unambiguous(readable: dict[RoleSpec, list[Role]]) -> None:
    for spec, roles in readable.items():
        if len(roles) > 1:
            raise UsageError(
                f"role {spec.name!r} is ambiguous: this agent may read both "
                f"{roles[0].path} and {roles[1].path}; prefix it as "
                f"'database/{spec.name}' or 'aws/{spec.name}'"
            )


def _roles_of_known_kind(
    candidates: dict[RoleSpec, list[Role]], readable: dict[RoleSpec, list[Role]]
) -> list[Role]:
    """Return one role per creds path whose engine is known, in `--role` order.

    A prefixed value names its engine even when the policy denies it, so
    `database/a` next to a bare `b` readable only as a database role is two
    database roles. A bare name readable on neither engine is left out.
    """
    by_path: dict[str, Role] = {}
    for spec, roles in candidates.items():
        known = roles if spec.kind else readable[spec]
        if known:
            by_path.setdefault(known[0].path, known[0])
    return list(by_path.values())


def _check_one_per_kind(roles: list[Role]) -> None:
    seen: dict[str, Role] = {}
    for role in roles:
        if role.kind in seen:
            raise _same_kind_error(str(seen[role.kind]), str(role), role.kind)
        seen[role.kind] = role


def _check_granted(
    candidates: dict[RoleSpec, list[Role]], readable: dict[RoleSpec, list[Role]]
) -> None:
    for spec, roles in candidates.items():
        if not readable[spec]:
            raise DeniedError(
                f"role {spec} is not allowed for this agent: its policies grant no "
                f"read on {' or '.join(_shown_path(role) for role in roles)}; "
                "check the role name and the agent's policy"
            )


def _shown_path(role: Role) -> str:
    """Return the role's creds path, with a long name replaced by `<role>`.

    The message names the role already, so a long one is printed only once.
    """
    if len(role.name) <= SHOWN_NAME_LENGTH:
        return role.path
    return role.path.removesuffix(role.name) + "<role>"


def _same_kind_error(first: str, second: str, kind: str) -> UsageError:
    return UsageError(
        f"roles {first} and {second} are both {kind} roles: their credentials "
        "would set the same environment variables; run one agent-exec per role "
        "of the same kind"
    )
