"""Every resource type the applier implements, by Terraform type name."""

from __future__ import annotations

from devstack.tfapply_auth import JwtAuthBackend, JwtAuthBackendRole
from devstack.tfapply_aws import AwsSecretBackendRole
from devstack.tfapply_database import DatabaseConnection, DatabaseRole
from devstack.tfapply_schema import ResourceType
from devstack.tfapply_sys import (
    Audit,
    GenericEndpoint,
    Mount,
    PasswordPolicy,
    Plugin,
    Policy,
    TerraformData,
)

RESOURCE_TYPES: dict[str, ResourceType] = {
    resource.name: resource
    for resource in (
        Plugin(),
        Mount(),
        Policy(),
        PasswordPolicy(),
        Audit(),
        GenericEndpoint(),
        TerraformData(),
        JwtAuthBackend(),
        JwtAuthBackendRole(),
        DatabaseConnection(),
        DatabaseRole(),
        AwsSecretBackendRole(),
    )
}
