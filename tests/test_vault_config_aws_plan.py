"""The AWS part of vault-config/ and its applier, without a Vault server.

These tests plan the module with and without the `aws` variable, and check
the rules and request bodies of `vault_aws_secret_backend_role` that the
applier takes from terraform-provider-vault.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from devstack import tfapply
from devstack.tfapply_aws import AwsSecretBackendRole, aws_role_payload
from devstack.tfapply_cli import load_variables
from devstack.tfapply_errors import ConfigError
from devstack.tfapply_hcl import load_module
from devstack.tfapply_plan import Instance
from devstack.tfapply_schema import convert_arguments
from tests.test_vault_config_plan import MODULE, edit, planned, variables

ENDPOINT = "http://127.0.0.1:5000"
POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:*", "Resource": "*"}],
    }
)
ROLE_ARN = "arn:aws:iam::123456789012:role/reader"


def aws_variables(**role: Any) -> dict[str, Any]:
    """Return variables with AWS settings and one role, `demo-aws`, for `dev`."""
    return {
        "aws": {
            "access_key": "AKIAEXAMPLE",
            "region": "eu-west-1",
            "iam_endpoint": ENDPOINT,
            "sts_endpoint": ENDPOINT,
            "roles": {
                "demo-aws": role
                or {"credential_type": "iam_user", "policy_document": POLICY}
            },
        },
        "aws_secret_key": "not-a-real-secret",
        "agents": {
            "dev": {"roles": ["demo-readonly"], "aws_roles": ["demo-aws"]},
            "bot": {"aws_roles": ["demo-aws"]},
            "ops": {"roles": ["demo-readonly"]},
        },
    }


def planned_aws(**role: Any) -> dict[str, Instance]:
    return planned(**aws_variables(**role))


def data_of(instance: Instance) -> Any:
    return json.loads(instance.attrs.get("data_json"))


def test_plan_without_aws_declares_no_aws() -> None:
    addresses = list(planned())
    assert addresses
    assert [a for a in addresses if "aws" in a] == []


def test_plan_aws_keys_written_apart() -> None:
    keys = planned_aws()["vault_generic_endpoint.aws_root_keys[0]"]
    assert keys.attrs.get("path") == "agent-creds/aws/config/root"
    assert data_of(keys) == {
        "access_key": "AKIAEXAMPLE",
        "secret_key": "not-a-real-secret",
    }
    assert keys.attrs.get("disable_read") is True
    assert keys.attrs.get("disable_delete") is True


def test_plan_aws_settings_without_secret() -> None:
    settings = planned_aws()["vault_generic_endpoint.aws_root[0]"]
    assert settings.attrs.get("path") == "agent-creds/aws/config/root"
    assert data_of(settings) == {
        "region": "eu-west-1",
        "iam_endpoint": ENDPOINT,
        "sts_endpoint": ENDPOINT,
    }
    assert settings.attrs.get("ignore_absent_fields") is True


def test_plan_aws_defaults_mean_aws_itself() -> None:
    values = aws_variables()
    values["aws"] = {"roles": values["aws"]["roles"]}
    values["aws_secret_key"] = None
    instances = planned(**values)
    settings = data_of(instances["vault_generic_endpoint.aws_root[0]"])
    assert settings == {"region": "", "iam_endpoint": "", "sts_endpoint": ""}
    keys = data_of(instances["vault_generic_endpoint.aws_root_keys[0]"])
    assert keys["access_key"] == ""


def test_plan_aws_role_arguments() -> None:
    role = planned_aws()['vault_aws_secret_backend_role.role["demo-aws"]'].attrs
    assert role.get("backend") == "agent-creds/aws"
    assert role.get("name") == "demo-aws"
    assert role.get("credential_type") == "iam_user"
    assert role.get("policy_document") == POLICY
    assert role.get("policy_arns") == []


def test_plan_aws_allowed_agents_follow_agents() -> None:
    endpoint = planned_aws()['vault_generic_endpoint.aws_role_agents["demo-aws"]']
    assert endpoint.attrs.get("path") == "agent-creds/aws/roles/demo-aws"
    assert data_of(endpoint) == {"allowed_agents": ["bot", "dev"]}
    assert endpoint.attrs.get("disable_delete") is True


def test_plan_revokes_leases_before_aws_deletes() -> None:
    order = list(planned_aws())
    revoke = order.index("terraform_data.revoke_leases_on_destroy")
    for address in (
        "vault_generic_endpoint.aws_root_keys[0]",
        "vault_generic_endpoint.aws_root[0]",
        'vault_aws_secret_backend_role.role["demo-aws"]',
        'vault_generic_endpoint.aws_role_agents["demo-aws"]',
    ):
        assert order.index(address) < revoke, address


def test_plan_aws_role_keys_before_role() -> None:
    order = list(planned_aws())
    role = order.index('vault_aws_secret_backend_role.role["demo-aws"]')
    assert order.index("vault_generic_endpoint.aws_root_keys[0]") < role
    assert order.index("vault_mount.agent_creds") < role


def test_aws_role_unknown_argument_rejected(tmp_path: Path) -> None:
    module_copy = tmp_path / "vault-config"
    shutil.copytree(MODULE, module_copy)
    edit(
        module_copy / "aws.tf",
        "  mfa_serial_number        = each.value.mfa_serial_number\n",
        "  mfa_serial_number        = each.value.mfa_serial_number\n  ttl = 60\n",
    )
    with pytest.raises(ConfigError) as caught:
        tfapply.plan(module_copy, variables(**aws_variables()))
    message = str(caught.value)
    assert "aws.tf" in message
    assert 'vault_aws_secret_backend_role.role["demo-aws"]' in message
    assert "unsupported argument 'ttl'" in message


def test_aws_variable_misspelt_attribute_rejected() -> None:
    values = aws_variables()
    values["aws"]["acess_key"] = values["aws"].pop("access_key")
    with pytest.raises(ConfigError, match="unknown attribute 'acess_key'"):
        planned(**values)


def test_aws_role_misspelt_attribute_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown attribute 'policy'"):
        planned_aws(credential_type="iam_user", policy=POLICY)


@pytest.mark.parametrize(
    ("role", "message"),
    [
        (
            {
                "credential_type": "iam_user",
                "policy_document": POLICY,
                "max_sts_ttl": 900,
            },
            "max_sts_ttl is only valid when credential_type is assumed_role or "
            "federation_token, not 'iam_user'",
        ),
        (
            {
                "credential_type": "assumed_role",
                "role_arns": [ROLE_ARN],
                "user_path": "/a/",
            },
            "user_path is only valid when credential_type is iam_user",
        ),
        (
            {"credential_type": "iam_user", "policy_document": "{not json"},
            "policy_document is not valid JSON",
        ),
        (
            {"credential_type": "iam_user"},
            "at least one of policy_document, policy_arns, role_arns or iam_groups",
        ),
    ],
)
def test_aws_role_provider_checks(role: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        planned_aws(**role)


def role_attrs(**values: Any) -> Any:
    base = {"backend": "agent-creds/aws", "name": "r"}
    return convert_arguments(AwsSecretBackendRole(), {**base, **values}, "role")


def test_aws_role_create_sends_set_fields() -> None:
    attrs = role_attrs(
        credential_type="assumed_role",
        role_arns=[ROLE_ARN],
        default_sts_ttl=900,
        session_tags={"team": "data"},
    )
    assert aws_role_payload(attrs, create=True) == {
        "credential_type": "assumed_role",
        "role_arns": [ROLE_ARN],
        "session_tags": {"team": "data"},
        "default_sts_ttl": "900",
    }


def test_aws_role_update_resets_unset_fields() -> None:
    attrs = role_attrs(credential_type="iam_user", policy_document=POLICY)
    assert aws_role_payload(attrs, create=False) == {
        "credential_type": "iam_user",
        "permissions_boundary_arn": "",
        "policy_document": POLICY,
        "policy_arns": None,
        "role_arns": [],
        "iam_groups": [],
        "iam_tags": {},
        "session_tags": {},
        "external_id": "",
        "user_path": "",
        "mfa_serial_number": "",
    }


def test_aws_example_plans_with_dev_example() -> None:
    examples = MODULE / "examples"
    module = load_module(MODULE)
    values = load_variables(
        module,
        [examples / "dev.tfvars", examples / "aws.tfvars"],
        [],
        {"TF_VAR_postgres_password": "pw", "TF_VAR_aws_secret_key": "secret"},
    )

    instances = {i.address: i for i in tfapply.plan(MODULE, values)}

    role = instances['vault_aws_secret_backend_role.role["reports-read"]'].attrs
    policy = json.loads(role.get("policy_document"))
    assert policy["Statement"][1]["Resource"].endswith("/${aws:username}")
    agents = instances['vault_generic_endpoint.aws_role_agents["reports-read"]']
    assert data_of(agents) == {"allowed_agents": ["dev"]}
    settings = data_of(instances["vault_generic_endpoint.aws_root[0]"])
    assert settings["iam_endpoint"] == ""
