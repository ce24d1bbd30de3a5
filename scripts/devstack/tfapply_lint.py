"""Security rules every agent-bridge Vault configuration must meet.

The applier checks the planned instances before writing anything, so a JWT
role that would accept tokens meant for another service, or stretch a 60 s
JWT by Vault's default leeways, never reaches Vault.
"""

from __future__ import annotations

from collections.abc import Iterable

from devstack.tfapply_errors import LintError
from devstack.tfapply_plan import Instance
from devstack.tfapply_values import UNKNOWN

LEEWAYS = {
    "clock_skew_leeway": 60,
    "expiration_leeway": 150,
    "not_before_leeway": 150,
}


def lint(instances: Iterable[Instance]) -> None:
    """Raise LintError listing every rule the planned instances break."""
    problems = []
    for instance in instances:
        checker = CHECKS.get(instance.type.name)
        if checker is None:
            continue
        for problem in checker(instance):
            problems.append(
                f"{instance.resource.location}: {instance.address}: {problem}"
            )
    if problems:
        raise LintError(
            "the configuration breaks agent-bridge rules:\n" + "\n".join(problems)
        )


def check_jwt_role(instance: Instance) -> list[str]:
    attrs = instance.attrs
    problems = []
    if attrs.get("role_type") not in ("jwt", UNKNOWN):
        problems.append(
            'role_type must be "jwt": OpenBao defaults to "oidc", '
            "which rejects JWT logins"
        )
    if not attrs.get("bound_audiences"):
        problems.append(
            "bound_audiences is empty: set the audience the attestor "
            "issues for this agent"
        )
    if attrs.get("user_claim") not in ("sub", UNKNOWN):
        problems.append('user_claim must be "sub", the agent name the attestor signs')
    claims = attrs.get("bound_claims") or {}
    if claims is not UNKNOWN and claims.get("agent") != attrs.get("role_name"):
        problems.append(
            "bound_claims must be { agent = <role_name> } so the role accepts only "
            "this agent's tokens"
        )
    for name, vault_default in LEEWAYS.items():
        if attrs.get(name) == 0 or name not in attrs.configured:
            problems.append(
                f"{name} is unset or 0, so Vault applies its default of "
                f"{vault_default} s: set a few seconds explicitly, or -1 to "
                "allow no leeway"
            )
    problems += _check_ttls(attrs.get("token_ttl"), attrs.get("token_max_ttl"))
    return problems


def _check_ttls(ttl: object, max_ttl: object) -> list[str]:
    problems = []
    if not isinstance(ttl, int) or ttl <= 0:
        problems.append(
            "token_ttl must be a positive number of seconds (0 means 32 days)"
        )
    if not isinstance(max_ttl, int) or max_ttl <= 0:
        problems.append(
            "token_max_ttl must be a positive number of seconds (the longest call)"
        )
    elif isinstance(ttl, int) and ttl > max_ttl:
        problems.append(f"token_ttl {ttl} s exceeds token_max_ttl {max_ttl} s")
    return problems


def check_jwt_backend(instance: Instance) -> list[str]:
    if not instance.attrs.get("bound_issuer"):
        return ["bound_issuer is unset: set the attestor's issuer URL"]
    return []


CHECKS = {
    "vault_jwt_auth_backend_role": check_jwt_role,
    "vault_jwt_auth_backend": check_jwt_backend,
}
