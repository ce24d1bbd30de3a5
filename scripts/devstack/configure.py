"""Configure OpenBao for the embedded stack: JWT auth, the agent, its roles."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from devstack.vault import Vault

log = logging.getLogger(__name__)

DEMO_CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
    "VALID UNTIL '{{expiration}}';",
    'GRANT CONNECT ON DATABASE demo TO "{{name}}";',
    'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";',
]


@dataclass(frozen=True)
class Settings:
    jwks_url: str
    issuer: str
    audience: str
    pg_port: int
    pg_user: str
    pg_password: str


def configure(vault: Vault, s: Settings) -> None:
    _jwt_auth(vault, s)
    accessor = vault.read("sys/auth")["data"]["jwt/"]["accessor"]
    vault.write("agent-creds/config/identity", {"jwt_mount_accessor": accessor})
    vault.write(
        "agent-creds/database/config/demo",
        {
            "plugin_name": "postgresql-database-plugin",
            "connection_url": (
                f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{s.pg_port}/demo"
            ),
            "username": s.pg_user,
            "password": s.pg_password,
            "allowed_roles": ["demo-readonly"],
            "verify_connection": True,
        },
    )
    vault.write(
        "agent-creds/database/roles/demo-readonly",
        {
            "db_name": "demo",
            "creation_statements": DEMO_CREATION,
            "default_ttl": "5m",
            "max_ttl": "1h",
            "allowed_agents": ["dev"],
        },
    )
    log.info("configured agent dev with role demo-readonly")


def _jwt_auth(vault: Vault, s: Settings) -> None:
    if "jwt/" not in vault.read("sys/auth")["data"]:
        vault.write("sys/auth/jwt", {"type": "jwt"})
    vault.write("auth/jwt/config", {"jwks_url": s.jwks_url, "bound_issuer": s.issuer})
    vault.write("sys/policies/acl/agent-dev", {"policy": _policy(["demo-readonly"])})
    vault.write(
        "auth/jwt/role/dev",
        {
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": [s.audience],
            "bound_claims": {"agent": "dev"},
            "claim_mappings": {
                "agent": "agent",
                "jti": "call_id",
                "uid": "uid",
                "exe": "exe",
                "exe_sha256": "exe_sha256",
                "host": "host",
                "/asserted/tool": "asserted_tool",
                "/asserted/on_behalf_of": "asserted_on_behalf_of",
            },
            "token_policies": ["agent-dev"],
            "token_ttl": "2m",
            "token_max_ttl": "1h",
            "token_type": "service",
            "clock_skew_leeway": 5,
            "expiration_leeway": 5,
            "not_before_leeway": 5,
        },
    )


def _policy(roles: list[str]) -> str:
    rules = {}
    for role in roles:
        rules[f"agent-creds/database/creds/{role}"] = {"capabilities": ["read"]}
        rules[f"sys/leases/revoke/agent-creds/database/creds/{role}/*"] = {
            "capabilities": ["update"]
        }
    return json.dumps({"path": rules}, indent=2)
