"""Apply vault-config/ to the stack's OpenBao with the stack's own values.

vault-config/ is the single source of the Vault configuration; the stack only
supplies the variables, as a production `terraform.tfvars` would.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from devstack import openbao, tfapply
from devstack.moto import REGION as MOTO_REGION
from devstack.moto import Moto
from devstack.plugin import PLUGIN_NAME, ROOT
from devstack.procs import StackError

MODULE = ROOT / "vault-config"
STATE_NAME = "vault-config.state.json"

DEMO_CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
    "VALID UNTIL '{{expiration}}';",
    'GRANT CONNECT ON DATABASE demo TO "{{name}}";',
    'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";',
]

# The per-call IAM user of demo-aws may ask who it is, and read only its own
# user. `${aws:username}` is an IAM policy variable, not a Terraform one.
DEMO_AWS_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": "iam:GetUser",
                "Resource": "arn:aws:iam::*:user/${aws:username}",
            },
        ],
    }
)


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
    aws: Moto,
) -> dict[str, Any]:
    return {
        "plugin_sha256": plugin_sha256,
        "plugin_command": PLUGIN_NAME,
        "plugin_version": plugin_version(),
        "plugin_env": [f"SHIV_ROOT={shiv_root}"],
        "jwks_url": jwks_url,
        "bound_issuer": issuer,
        "agents": {"dev": {"roles": ["demo-readonly"], "aws_roles": ["demo-aws"]}},
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
        "aws": {
            "access_key": aws.admin_access_key,
            "region": MOTO_REGION,
            "iam_endpoint": aws.url,
            "sts_endpoint": aws.url,
            "roles": {
                "demo-aws": {
                    "credential_type": "iam_user",
                    "policy_document": DEMO_AWS_POLICY,
                }
            },
        },
        "aws_secret_key": aws.admin_secret_key,
        "vault_cli": str(openbao.bao_binary()),
    }


def apply(addr: str, token: str, values: dict[str, Any], state_dir: Path) -> None:
    """Apply the module to the stack's OpenBao, which has just started empty."""
    state_path = state_dir / STATE_NAME
    # The dev server keeps everything in memory: a state file left by an
    # earlier server records objects that no longer exist, and the applier
    # would skip unchanged endpoints it records.
    state_path.unlink(missing_ok=True)
    try:
        tfapply.apply(MODULE, values, addr, token, state_path=state_path)
    except tfapply.TfApplyError as err:
        raise StackError(f"applying vault-config/ failed: {err}") from err


def destroy(addr: str, token: str, values: dict[str, Any], state_dir: Path) -> None:
    tfapply.destroy(MODULE, values, addr, token, state_path=state_dir / STATE_NAME)
