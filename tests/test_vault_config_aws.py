"""The AWS part of vault-config/ with the real plugin, OpenBao and moto.

Each test gets its own OpenBao dev server with the built plugin (the
`stack` fixture of test_vault_config_stack.py) and its own IAM user in this
module's moto server, which the plugin acts as. So a rotate-root here
replaces no key another test relies on.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import tfapply
from devstack.tfapply_errors import VaultAPIError
from devstack.tfapply_vault import VaultClient
from plugin.aws.client import KeyPair
from tests import test_vault_config_stack as config_stack
from tests.support.moto import ALLOW_ALL, REGION, MotoServer, error_code_of, serve_moto
from tests.test_vault_config_apply import login, sign
from tests.test_vault_config_plan import MODULE

# The same fixtures as the PostgreSQL half of the module's tests.
built_plugin = config_stack.built_plugin
admin = config_stack.admin
stack = config_stack.stack
Stack = config_stack.Stack

pytestmark = config_stack.pytestmark

POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "iam:GetUser", "Resource": "*"}],
}
ROLE_PATH = "agent-creds/aws/roles/demo-aws"


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from serve_moto(tmp_path_factory)


@pytest.fixture
def plugin_key(moto_server: MotoServer) -> KeyPair:
    """Create an IAM user for one test's plugin; return its access key."""
    iam = moto_server.client("iam")
    name = f"vault-root-{secrets.token_hex(4)}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return KeyPair(key["AccessKeyId"], key["SecretAccessKey"])


def with_aws(
    variables: dict[str, Any], server: MotoServer, key: KeyPair
) -> dict[str, Any]:
    """Return `variables` with AWS settings for `server` and the role demo-aws."""
    return {
        **variables,
        "agents": {"dev": {"roles": ["demo-readonly"], "aws_roles": ["demo-aws"]}},
        "aws": {
            "access_key": key.access_key,
            "region": REGION,
            "iam_endpoint": server.url,
            "sts_endpoint": server.url,
            "roles": {
                "demo-aws": {
                    "credential_type": "iam_user",
                    "policy_document": json.dumps(POLICY, indent=2),
                }
            },
        },
        "aws_secret_key": key.secret_key,
    }


def mint_aws(vault: VaultClient, key: Any) -> dict[str, Any]:
    """Log in as agent dev with a fresh JWT and read demo-aws credentials."""
    token, _ = sign(key, "dev")
    agent = VaultClient(vault.addr, login(vault, "dev", token)["client_token"])
    response = agent.read("agent-creds/aws/creds/demo-aws")
    assert response is not None
    data: dict[str, Any] = response["data"]
    return data


def keys_of(creds: dict[str, Any]) -> KeyPair:
    return KeyPair(creds["access_key"], creds["secret_key"])


def caller_arn(server: MotoServer, keys: KeyPair) -> str:
    return str(server.client("sts", keys).get_caller_identity()["Arn"])


def test_apply_aws_config_hides_secret(
    stack: Stack, moto_server: MotoServer, plugin_key: KeyPair
) -> None:
    values = with_aws(stack.variables, moto_server, plugin_key)

    tfapply.apply(MODULE, values, stack.vault.addr, stack.vault.token)

    config = stack.vault.read("agent-creds/aws/config/root")
    assert config is not None
    assert config["data"]["access_key"] == plugin_key.access_key
    assert config["data"]["region"] == REGION
    assert config["data"]["iam_endpoint"] == moto_server.url
    assert config["data"]["sts_endpoint"] == moto_server.url
    assert "secret_key" not in config["data"]
    assert plugin_key.secret_key not in json.dumps(config)


def test_apply_aws_role_with_allowed_agents(
    stack: Stack, moto_server: MotoServer, plugin_key: KeyPair
) -> None:
    values = with_aws(stack.variables, moto_server, plugin_key)

    tfapply.apply(MODULE, values, stack.vault.addr, stack.vault.token)

    role = stack.vault.read(ROLE_PATH)
    assert role is not None
    assert role["data"]["credential_type"] == "iam_user"
    assert json.loads(role["data"]["policy_document"]) == POLICY
    assert role["data"]["allowed_agents"] == ["dev"]
    policy = stack.vault.read("sys/policies/acl/agent-dev")
    assert policy is not None
    paths = json.loads(policy["data"]["policy"])["path"]
    assert paths["agent-creds/aws/creds/demo-aws"] == {"capabilities": ["read"]}


def test_apply_without_aws_writes_no_aws(stack: Stack) -> None:
    tfapply.apply(MODULE, stack.variables, stack.vault.addr, stack.vault.token)

    assert stack.vault.read("agent-creds/aws/config/root") is None
    with pytest.raises(VaultAPIError) as listing:
        stack.vault.request("LIST", "agent-creds/aws/roles")
    assert listing.value.status == 404
    # The database half is there, so the mount itself was configured.
    assert stack.vault.read("agent-creds/database/roles/demo-readonly") is not None


def test_destroy_deletes_minted_iam_user(
    stack: Stack, moto_server: MotoServer, plugin_key: KeyPair
) -> None:
    vault = stack.vault
    values = with_aws(stack.variables, moto_server, plugin_key)
    tfapply.apply(MODULE, values, vault.addr, vault.token)
    creds = keys_of(mint_aws(vault, stack.key))
    arn = caller_arn(moto_server, creds)
    assert ":user/ab-dev-demo-aws-" in arn

    tfapply.destroy(MODULE, values, vault.addr, vault.token)

    iam = moto_server.client("iam")
    user = arn.rsplit("/", 1)[1]
    assert error_code_of(lambda: iam.get_user(UserName=user)) == "NoSuchEntity"
    assert "agent-creds/" not in vault.mount_table("mounts")


def test_reapply_keeps_rotated_aws_key(
    stack: Stack, moto_server: MotoServer, plugin_key: KeyPair, tmp_path: Path
) -> None:
    vault, state = stack.vault, tmp_path / "state.json"
    values = with_aws(stack.variables, moto_server, plugin_key)
    tfapply.apply(MODULE, values, vault.addr, vault.token, state_path=state)
    rotated = vault.write("agent-creds/aws/config/rotate-root", {})
    assert rotated is not None
    new_key = rotated["data"]["access_key"]
    assert new_key != plugin_key.access_key

    # The configured key is deleted now. Re-sending it would break the
    # plugin, so an apply with unchanged keys must leave them alone, also
    # when other settings change.
    values["aws"]["region"] = "eu-west-1"
    tfapply.apply(MODULE, values, vault.addr, vault.token, state_path=state)

    config = vault.read("agent-creds/aws/config/root")
    assert config is not None
    assert config["data"]["access_key"] == new_key
    assert config["data"]["region"] == "eu-west-1"
    creds = keys_of(mint_aws(vault, stack.key))
    assert ":user/ab-dev-demo-aws-" in caller_arn(moto_server, creds)


def test_changed_aws_key_written_again(
    stack: Stack, moto_server: MotoServer, plugin_key: KeyPair, tmp_path: Path
) -> None:
    vault, state = stack.vault, tmp_path / "state.json"
    values = with_aws(stack.variables, moto_server, plugin_key)
    tfapply.apply(MODULE, values, vault.addr, vault.token, state_path=state)
    iam = moto_server.client("iam")
    user = caller_arn(moto_server, plugin_key).rsplit("/", 1)[1]
    second = iam.create_access_key(UserName=user)["AccessKey"]

    values["aws"]["access_key"] = second["AccessKeyId"]
    values["aws_secret_key"] = second["SecretAccessKey"]
    tfapply.apply(MODULE, values, vault.addr, vault.token, state_path=state)

    config = vault.read("agent-creds/aws/config/root")
    assert config is not None
    assert config["data"]["access_key"] == second["AccessKeyId"]


def test_state_file_keeps_no_aws_secret(
    stack: Stack, moto_server: MotoServer, plugin_key: KeyPair, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    values = with_aws(stack.variables, moto_server, plugin_key)

    tfapply.apply(MODULE, values, stack.vault.addr, stack.vault.token, state_path=state)

    text = state.read_text()
    assert plugin_key.secret_key not in text
    records = {r["address"]: r for r in json.loads(text)["records"]}
    keys = records["vault_generic_endpoint.aws_root_keys[0]"]
    assert "data_json" not in keys["values"]
    assert set(keys["digests"]) == {"data_json"}


def test_removed_aws_role_deleted(
    stack: Stack, moto_server: MotoServer, plugin_key: KeyPair, tmp_path: Path
) -> None:
    vault, state = stack.vault, tmp_path / "state.json"
    values = with_aws(stack.variables, moto_server, plugin_key)
    tfapply.apply(MODULE, values, vault.addr, vault.token, state_path=state)
    assert vault.read(ROLE_PATH) is not None

    values["aws"]["roles"] = {}
    values["agents"]["dev"]["aws_roles"] = []
    tfapply.apply(MODULE, values, vault.addr, vault.token, state_path=state)

    assert vault.read(ROLE_PATH) is None
    assert vault.read("agent-creds/aws/config/root") is not None
