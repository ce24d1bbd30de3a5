"""Turn `--role` values into creds paths of the agent-bridge mount.

`database/NAME` and `aws/NAME` name the engine explicitly. A bare NAME is
looked up with `sys/capabilities-self` on both creds paths, which mints
nothing: the engine whose path the token may read wins, and a name readable
on both is ambiguous. Every role is checked before the first credential is
minted, so a role the policy does not grant fails with nothing to revoke.
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
    kind, slash, name = value.rpartition("/")
    if slash and kind not in KINDS:
        raise UsageError(
            f"invalid role {value!r}: the prefix must be 'database/' or 'aws/'"
        )
    if not _is_role_name(name):
        raise UsageError(
            f"invalid role {value!r}: a role name has letters, digits, '_', '-' "
            "and '.', and starts and ends with a letter or digit"
        )
    return RoleSpec(name=name, kind=kind)


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

    Values that resolve to the same creds path, such as `database/x` and a
    bare `x` readable only on the database path, are one role, kept at the
    first value's position. `meanwhile` runs while Vault looks up the
    capabilities.
    """
    candidates = {
        spec: [creds_path(mount, kind, spec.name) for kind in _kinds(spec)]
        for spec in specs
    }
    capabilities = vault.capabilities(
        sorted({p for ps in candidates.values() for p in ps}), meanwhile=meanwhile
    )
    by_path: dict[str, Role] = {}
    for spec, paths in candidates.items():
        role = _pick(spec, paths, capabilities)
        by_path.setdefault(role.path, role)
    roles = list(by_path.values())
    _check_one_per_kind(roles)
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


def _is_role_name(name: str) -> bool:
    return (
        bool(name)
        and set(name) <= NAME_CHARACTERS
        and name[0] not in "-."
        and name[-1] not in "-."
    )


def _kinds(spec: RoleSpec) -> tuple[str, ...]:
    return (spec.kind,) if spec.kind else KINDS


def _pick(spec: RoleSpec, paths: list[str], capabilities: dict[str, list[str]]) -> Role:
    readable = [
        path
        for path in paths
        if {"read", "root"} & set(capabilities.get(path, []))
        and "deny" not in capabilities.get(path, [])
    ]
    if len(readable) > 1:
        raise UsageError(
            f"role {spec.name!r} is ambiguous: this agent may read both "
            f"{readable[0]} and {readable[1]}; prefix it as 'database/{spec.name}' "
            f"or 'aws/{spec.name}'"
        )
    if not readable:
        raise DeniedError(
            f"role {spec} is not allowed for this agent: its policies grant no "
            f"read on {' or '.join(paths)}; check the role name and the agent's policy"
        )
    kind = readable[0].split("/")[-3]
    return Role(kind=kind, name=spec.name, path=readable[0])


def _check_one_per_kind(roles: list[Role]) -> None:
    seen: dict[str, Role] = {}
    for role in roles:
        if role.kind in seen:
            raise UsageError(
                f"roles {seen[role.kind]} and {role} are both {role.kind} roles: "
                "their credentials would set the same environment variables; "
                "run one agent-exec per role of the same kind"
            )
        seen[role.kind] = role
