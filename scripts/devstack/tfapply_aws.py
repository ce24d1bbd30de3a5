"""AWS secrets engine roles, as terraform-provider-vault 5.x writes them.

Source: `resource_aws_secret_backend_role.go` (provider 5.x, checked against
the 5.11 source). The provider writes `credential_type` always and every
other field when it changed. It checks which fields a credential type may
set before the write, so those checks are plan-time errors here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from devstack.tfapply_errors import ConfigError
from devstack.tfapply_schema import Arg, Attrs, PathResource, require_known
from devstack.tfapply_values import UNKNOWN

log = logging.getLogger(__name__)

IAM_USER = "iam_user"
# The provider accepts STS TTLs for these types only (not session_token).
STS_TTL_TYPES = ("assumed_role", "federation_token")
STS_TTLS = ("default_sts_ttl", "max_sts_ttl")
# Fields written when set on create and always on update, in the provider's
# order. The provider sends user_path and permissions_boundary_arn only for
# iam_user roles.
CHANGE_FIELDS = (
    "permissions_boundary_arn",
    "policy_document",
    "policy_arns",
    "role_arns",
    "iam_groups",
    "iam_tags",
    "session_tags",
    "external_id",
    "user_path",
    "mfa_serial_number",
)
IAM_USER_ONLY = ("permissions_boundary_arn", "user_path")
# At least one of these must grant the credentials something.
GRANTS = ("policy_document", "policy_arns", "role_arns", "iam_groups")


class AwsSecretBackendRole(PathResource):
    name = "vault_aws_secret_backend_role"
    create_differs = True
    arguments: ClassVar[Mapping[str, Arg]] = {
        "backend": Arg("string", required=True),
        "name": Arg("string", required=True),
        "credential_type": Arg("string", required=True),
        "policy_document": Arg("string"),
        "policy_arns": Arg("set"),
        "role_arns": Arg("set"),
        "iam_groups": Arg("set"),
        "iam_tags": Arg("map"),
        "session_tags": Arg("map"),
        "external_id": Arg("string"),
        "default_sts_ttl": Arg("int"),
        "max_sts_ttl": Arg("int"),
        "permissions_boundary_arn": Arg("string"),
        "user_path": Arg("string"),
        "mfa_serial_number": Arg("string"),
    }

    def validate(self, attrs: Attrs) -> None:
        checked = ("credential_type", *GRANTS, *IAM_USER_ONLY, *STS_TTLS)
        if any(attrs.get(name) is UNKNOWN for name in checked):
            return
        _check_policy_json(attrs.get_ok("policy_document"))
        if not any(attrs.get_ok(name) for name in GRANTS):
            raise ConfigError(
                "at least one of policy_document, policy_arns, role_arns or "
                "iam_groups must be set"
            )
        kind = attrs.get("credential_type")
        for name in IAM_USER_ONLY:
            if attrs.get_ok(name) and kind != IAM_USER:
                raise ConfigError(
                    f"{name} is only valid when credential_type is iam_user, "
                    f"not {kind!r}"
                )
        for name in STS_TTLS:
            if attrs.get_ok(name) and kind not in STS_TTL_TYPES:
                raise ConfigError(
                    f"{name} is only valid when credential_type is assumed_role "
                    f"or federation_token, not {kind!r}"
                )

    def path(self, attrs: Attrs) -> str:
        require_known(attrs, "backend", "name")
        return f"{str(attrs.get('backend')).strip('/')}/roles/{attrs.get('name')}"

    def payload(
        self, attrs: Attrs, *, create: bool, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        return aws_role_payload(attrs, create=create)


def aws_role_payload(attrs: Attrs, *, create: bool) -> dict[str, Any]:
    """Build the role write as `awsSecretBackendRoleWrite` does.

    On create the provider's changed fields are the set ones. An update here
    sends every field, as if each had changed, so removing an argument
    resets it in Vault (policy_arns as null, as the provider sends an empty
    set of it).
    """
    kind = attrs.get("credential_type")
    data: dict[str, Any] = {"credential_type": kind}
    for name in CHANGE_FIELDS:
        if name in IAM_USER_ONLY and kind != IAM_USER:
            continue
        if attrs.get_ok(name) or not create:
            data[name] = _sent_value(attrs, name)
    if kind in STS_TTL_TYPES:
        # Sent as decimal strings, as the provider's strconv.Itoa does.
        for name in STS_TTLS:
            if attrs.get_ok(name):
                data[name] = str(attrs.get(name))
    return data


def _sent_value(attrs: Attrs, name: str) -> Any:
    """Return the value the provider sends for `name`, unset ones included."""
    value = attrs.get_ok(name)
    if value is not None or name == "policy_arns":
        return value
    kind = AwsSecretBackendRole.arguments[name].kind
    return {"set": list, "map": dict}.get(kind, str)()


def _check_policy_json(document: Any) -> None:
    """Reject a policy_document that is not JSON, as the provider's validator does."""
    if document is None:
        return
    try:
        json.loads(document)
    except ValueError as err:
        raise ConfigError(
            f"policy_document is not valid JSON ({err}): give an IAM policy document"
        ) from err
