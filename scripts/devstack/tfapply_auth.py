"""JWT auth method and JWT roles, as terraform-provider-vault 5.x writes them.

Sources: `resource_jwt_auth_backend.go`, `resource_jwt_auth_backend_role.go`
and `auth_token.go` (the token_* fields shared by auth roles).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from devstack.tfapply_errors import ConfigError
from devstack.tfapply_schema import (
    Arg,
    Attrs,
    PathResource,
    ResourceType,
    require_known,
)
from devstack.tfapply_vault import VaultClient

log = logging.getLogger(__name__)

KEY_SOURCES = ("oidc_discovery_url", "jwks_url", "jwt_validation_pubkeys")

# Options the provider writes to auth/PATH/config when set or defaulted.
JWT_CONFIG_OPTIONS = (
    "oidc_discovery_url",
    "oidc_discovery_ca_pem",
    "jwks_url",
    "jwks_ca_pem",
    "jwt_validation_pubkeys",
    "bound_issuer",
    "jwt_supported_algs",
    "default_role",
    "namespace_in_state",
)


class JwtAuthBackend(ResourceType):
    name = "vault_jwt_auth_backend"
    computed = ("id", "accessor")
    arguments: ClassVar[Mapping[str, Arg]] = {
        "path": Arg("string", default="jwt"),
        "type": Arg("string", default="jwt"),
        "description": Arg("string"),
        "local": Arg("bool", default=False),
        "oidc_discovery_url": Arg("string"),
        "oidc_discovery_ca_pem": Arg("string"),
        "jwks_url": Arg("string"),
        "jwks_ca_pem": Arg("string"),
        "jwt_validation_pubkeys": Arg("list"),
        "bound_issuer": Arg("string"),
        "jwt_supported_algs": Arg("list"),
        "default_role": Arg("string"),
        "namespace_in_state": Arg("bool", default=True),
    }

    def validate(self, attrs: Attrs) -> None:
        sources_set = [name for name in KEY_SOURCES if attrs.get(name) is not None]
        if len(sources_set) != 1:
            raise ConfigError(
                f"exactly one of {', '.join(KEY_SOURCES)} must be set, "
                f"got {sources_set}"
            )
        if attrs.get("type") not in ("jwt", "oidc"):
            raise ConfigError("type must be jwt or oidc")

    def apply(
        self, client: VaultClient, attrs: Attrs, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        path = _auth_path(attrs)
        existing = client.mount_table("auth").get(f"{path}/")
        if existing is None:
            body = {
                "type": attrs.get("type"),
                "description": attrs.get("description") or "",
                "local": attrs.get("local"),
            }
            client.write(f"sys/auth/{path}", body)
        elif existing.get("type") != attrs.get("type"):
            raise ConfigError(
                f"auth mount {path}/ has type {existing.get('type')!r}: "
                "changing it needs a destroy and re-create"
            )
        config = {
            option: attrs.get(option)
            for option in JWT_CONFIG_OPTIONS
            if attrs.exists(option)
        }
        client.write(f"auth/{path}/config", config)
        mounted = client.mount_table("auth").get(f"{path}/") or {}
        return {"id": path, "accessor": mounted.get("accessor")}

    def delete(self, client: VaultClient, attrs: Attrs) -> None:
        client.delete(f"sys/auth/{_auth_path(attrs)}")


def _auth_path(attrs: Attrs) -> str:
    require_known(attrs, "path")
    return str(attrs.get("path")).strip("/")


TOKEN_FIELDS: Mapping[str, Arg] = {
    "token_bound_cidrs": Arg("set"),
    "token_explicit_max_ttl": Arg("int"),
    "token_max_ttl": Arg("int"),
    "token_no_default_policy": Arg("bool"),
    "token_period": Arg("int"),
    "token_policies": Arg("set"),
    "token_type": Arg("string", default="default"),
    "token_ttl": Arg("int"),
    "token_num_uses": Arg("int"),
}

# Zero values the provider sends for token fields on update.
TOKEN_ZERO: Mapping[str, Any] = {"set": [], "int": 0, "bool": False, "string": ""}


class JwtAuthBackendRole(PathResource):
    name = "vault_jwt_auth_backend_role"
    create_differs = True
    arguments: ClassVar[Mapping[str, Arg]] = {
        "backend": Arg("string", default="jwt"),
        "role_name": Arg("string", required=True),
        "role_type": Arg("string"),
        "bound_audiences": Arg("set", default=[]),
        "user_claim": Arg("string", required=True),
        "user_claim_json_pointer": Arg("bool", default=False),
        "clock_skew_leeway": Arg("int", default=0),
        "expiration_leeway": Arg("int", default=0),
        "not_before_leeway": Arg("int", default=0),
        "allowed_redirect_uris": Arg("set", default=[]),
        "bound_subject": Arg("string"),
        "oidc_scopes": Arg("set", default=[]),
        "bound_claims_type": Arg("string"),
        "bound_claims": Arg("map"),
        "disable_bound_claims_parsing": Arg("bool", default=False),
        "claim_mappings": Arg("map"),
        "groups_claim": Arg("string"),
        "verbose_oidc_logging": Arg("bool", default=False),
        "max_age": Arg("int"),
        **TOKEN_FIELDS,
    }

    def path(self, attrs: Attrs) -> str:
        return role_path(attrs)

    def payload(
        self, attrs: Attrs, *, create: bool, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        return role_payload(attrs, create=create)


def role_path(attrs: Attrs) -> str:
    require_known(attrs, "backend", "role_name")
    backend = str(attrs.get("backend")).strip("/")
    return f"auth/{backend}/role/{str(attrs.get('role_name')).strip('/')}"


def role_payload(attrs: Attrs, *, create: bool) -> dict[str, Any]:
    """Build the role write as `jwtAuthBackendRoleDataToWrite` does."""
    data = _token_fields(attrs, create=create)
    data["bound_audiences"] = attrs.get("bound_audiences")
    data["user_claim"] = attrs.get("user_claim")
    data["user_claim_json_pointer"] = attrs.get("user_claim_json_pointer")
    for name in ("max_age", "role_type", "allowed_redirect_uris", "oidc_scopes"):
        if attrs.get_ok(name):
            data[name] = attrs.get(name)
    for name in ("bound_subject", "bound_claims_type", "groups_claim"):
        if attrs.exists(name):
            data[name] = attrs.get(name)
    data["bound_claims"] = _bound_claims(attrs)
    if attrs.get_ok("claim_mappings"):
        data["claim_mappings"] = attrs.get("claim_mappings")
    for name in ("clock_skew_leeway", "expiration_leeway", "not_before_leeway"):
        data[name] = attrs.get(name)
    data["verbose_oidc_logging"] = attrs.get("verbose_oidc_logging")
    return data


def _token_fields(attrs: Attrs, *, create: bool) -> dict[str, Any]:
    # On create the provider sends only set token fields; on update it sends
    # each changed field, zero included. An update here sends every field, so
    # removing an argument from the configuration resets it in Vault.
    data: dict[str, Any] = {}
    for name, arg in TOKEN_FIELDS.items():
        value = attrs.get(name)
        if not create:
            data[name] = TOKEN_ZERO[arg.kind] if value is None else value
        elif attrs.get_ok(name) or (
            name == "token_no_default_policy" and attrs.exists(name)
        ):
            data[name] = value
    return data


def _bound_claims(attrs: Attrs) -> dict[str, list[str]]:
    # The provider splits each bound claim on commas into a list of values.
    claims = attrs.get_ok("bound_claims") or {}
    split = not attrs.get("disable_bound_claims_parsing")
    return {
        key: [part.strip() for part in value.split(",")] if split else [value.strip()]
        for key, value in claims.items()
    }
