"""IAM calls: create a user with its policies and key, and delete a user fully.

AWS refuses to delete a user that still has access keys, a login profile,
policies, group memberships, MFA devices, signing certificates, SSH keys or
service-specific credentials, so `delete_user` removes each of those first.
The credential holder controls the user until its keys are gone, so keys
and the login profile go first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from plugin.aws.client import NOT_FOUND, KeyPair, aws_errors, describe, error_code

if TYPE_CHECKING:
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_iam.type_defs import TagTypeDef

logger = logging.getLogger(__name__)

TAG_PREFIX = "agent-bridge:"
MAX_TAG_VALUE = 256


@dataclass(frozen=True)
class UserPlan:
    """The IAM user of one iam_user credential: its name, policies, groups, tags."""

    username: str
    path: str = "/"
    policy_name: str = ""
    policy_document: str = ""
    policy_arns: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    permissions_boundary_arn: str = ""


def create_user(iam: IAMClient, plan: UserPlan) -> KeyPair:
    """Create the user, attach what the plan lists, and return its one access key."""
    tags: list[TagTypeDef] = [
        {"Key": k, "Value": v[:MAX_TAG_VALUE]} for k, v in plan.tags.items()
    ]
    if plan.permissions_boundary_arn:
        iam.create_user(
            UserName=plan.username,
            Path=plan.path or "/",
            Tags=tags,
            PermissionsBoundary=plan.permissions_boundary_arn,
        )
    else:
        iam.create_user(UserName=plan.username, Path=plan.path or "/", Tags=tags)
    for arn in plan.policy_arns:
        iam.attach_user_policy(UserName=plan.username, PolicyArn=arn)
    if plan.policy_document:
        iam.put_user_policy(
            UserName=plan.username,
            PolicyName=plan.policy_name,
            PolicyDocument=plan.policy_document,
        )
    for group in plan.groups:
        iam.add_user_to_group(UserName=plan.username, GroupName=group)
    key = iam.create_access_key(UserName=plan.username)["AccessKey"]
    return KeyPair(key["AccessKeyId"], key["SecretAccessKey"])


def delete_user(iam: IAMClient, username: str) -> bool:
    """Delete `username` and everything attached to it.

    Returns False when the user did not exist. Otherwise raises the boto3
    error of the first call that failed. A DeleteConflict means the holder
    attached something after the listing, so a retry removes it.
    """
    try:
        keys = list(_pages(iam, "list_access_keys", "AccessKeyMetadata", username))
    except aws_errors() as err:
        if error_code(err) == NOT_FOUND:
            return False
        raise
    for key in keys:
        _ignore_missing(
            iam.delete_access_key, UserName=username, AccessKeyId=key["AccessKeyId"]
        )
    _ignore_missing(iam.delete_login_profile, UserName=username)
    _remove_policies_and_groups(iam, username)
    _remove_other_credentials(iam, username)
    try:
        iam.delete_user(UserName=username)
    except aws_errors() as err:
        if error_code(err) == NOT_FOUND:
            return False  # deleted concurrently, by another revoke or by hand
        raise
    return True


def _remove_policies_and_groups(iam: IAMClient, username: str) -> None:
    for name in list(_pages(iam, "list_user_policies", "PolicyNames", username)):
        _ignore_missing(iam.delete_user_policy, UserName=username, PolicyName=name)
    attached = _pages(iam, "list_attached_user_policies", "AttachedPolicies", username)
    for policy in list(attached):
        _ignore_missing(
            iam.detach_user_policy, UserName=username, PolicyArn=policy["PolicyArn"]
        )
    for group in list(_pages(iam, "list_groups_for_user", "Groups", username)):
        _ignore_missing(
            iam.remove_user_from_group, UserName=username, GroupName=group["GroupName"]
        )


def _remove_other_credentials(iam: IAMClient, username: str) -> None:
    """Remove MFA devices, signing certificates, SSH keys, service credentials.

    A listing that fails without an AWS error code (moto does not implement
    service-specific credentials) is logged and skipped. AWS's DeleteUser
    then fails with DeleteConflict if such a credential remains.
    """
    steps: list[tuple[str, Callable[[], None]]] = [
        ("mfa devices", lambda: _remove_mfa_devices(iam, username)),
        ("signing certificates", lambda: _remove_certificates(iam, username)),
        ("ssh public keys", lambda: _remove_ssh_keys(iam, username)),
        ("service-specific credentials", lambda: _remove_service_creds(iam, username)),
    ]
    for kind, step in steps:
        try:
            step()
        except aws_errors() as err:
            if error_code(err) and error_code(err) not in ("NotImplemented",):
                raise
            logger.warning(
                "listing failed, skipped; DeleteUser fails if any remain: kind=%s "
                "username=%s error=%s",
                kind,
                username,
                describe(err),
            )


def _remove_mfa_devices(iam: IAMClient, username: str) -> None:
    for device in list(_pages(iam, "list_mfa_devices", "MFADevices", username)):
        serial = device["SerialNumber"]
        _ignore_missing(
            iam.deactivate_mfa_device, UserName=username, SerialNumber=serial
        )
        if ":mfa/" in serial:
            # A virtual device outlives its user unless deleted by its ARN.
            _ignore_missing(iam.delete_virtual_mfa_device, SerialNumber=serial)


def _remove_certificates(iam: IAMClient, username: str) -> None:
    for cert in list(
        _pages(iam, "list_signing_certificates", "Certificates", username)
    ):
        _ignore_missing(
            iam.delete_signing_certificate,
            UserName=username,
            CertificateId=cert["CertificateId"],
        )


def _remove_ssh_keys(iam: IAMClient, username: str) -> None:
    for key in list(_pages(iam, "list_ssh_public_keys", "SSHPublicKeys", username)):
        _ignore_missing(
            iam.delete_ssh_public_key,
            UserName=username,
            SSHPublicKeyId=key["SSHPublicKeyId"],
        )


def _remove_service_creds(iam: IAMClient, username: str) -> None:
    listed = iam.list_service_specific_credentials(UserName=username)
    for cred in listed.get("ServiceSpecificCredentials", []):
        _ignore_missing(
            iam.delete_service_specific_credential,
            UserName=username,
            ServiceSpecificCredentialId=cred["ServiceSpecificCredentialId"],
        )


def _pages(iam: IAMClient, operation: str, key: str, username: str) -> Iterator[Any]:
    paginator = iam.get_paginator(operation)  # type: ignore[call-overload]
    for page in paginator.paginate(UserName=username):
        yield from page.get(key, [])


def _ignore_missing(call: Callable[..., object], **params: Any) -> None:
    """Run one removal; an item that is already gone is what it wanted."""
    try:
        call(**params)
    except aws_errors() as err:
        if error_code(err) != NOT_FOUND:
            raise
