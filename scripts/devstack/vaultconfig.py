"""Apply vault-config/ to the stack's OpenBao with the stack's own values.

vault-config/ is the single source of the Vault configuration; the stack only
supplies the variables, as a production `terraform.tfvars` would.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from devstack import openbao, tfapply
from devstack.plugin import PLUGIN_NAME, ROOT
from devstack.procs import StackError

MODULE = ROOT / "vault-config"

DEMO_CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
    "VALID UNTIL '{{expiration}}';",
    'GRANT CONNECT ON DATABASE demo TO "{{name}}";',
    'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";',
]


def plugin_version() -> str:
    """Return the version the built plugin reports: v + the project version."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return "v" + str(tomllib.load(f)["project"]["version"])


def variables(
    *,
    plugin_sha256: str,
    shiv_root: Path,
    jwks_url: str,
    issuer: str,
    pg_port: int,
    pg_user: str,
    pg_password: str,
) -> dict[str, Any]:
    return {
        "plugin_sha256": plugin_sha256,
        "plugin_command": PLUGIN_NAME,
        "plugin_version": plugin_version(),
        "plugin_env": [f"SHIV_ROOT={shiv_root}"],
        "jwks_url": jwks_url,
        "bound_issuer": issuer,
        "agents": {"dev": {"roles": ["demo-readonly"]}},
        "postgres": {
            "connection_name": "demo",
            "host": "127.0.0.1",
            "port": pg_port,
            "database": "demo",
            "username": pg_user,
            "sslmode": "disable",
        },
        "postgres_password": pg_password,
        "database_roles": {
            "demo-readonly": {
                "creation_statements": DEMO_CREATION,
                "default_ttl": 300,
                "max_ttl": 3600,
            }
        },
        "vault_cli": str(openbao.bao_binary()),
    }


def apply(addr: str, token: str, values: dict[str, Any], state_dir: Path) -> None:
    try:
        tfapply.apply(
            MODULE,
            values,
            addr,
            token,
            state_path=state_dir / "vault-config.state.json",
        )
    except tfapply.TfApplyError as err:
        raise StackError(f"applying vault-config/ failed: {err}") from err


def destroy(addr: str, token: str, values: dict[str, Any], state_dir: Path) -> None:
    tfapply.destroy(
        MODULE, values, addr, token, state_path=state_dir / "vault-config.state.json"
    )
