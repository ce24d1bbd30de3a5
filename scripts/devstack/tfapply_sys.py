"""Vault system resources: plugin catalog, mounts, ACL and password policies,
audit devices, generic endpoints, and Terraform's own `terraform_data`.

Request bodies follow terraform-provider-vault 5.x (`resource_plugin.go`,
`resource_mount.go`, `resource_policy.go`, `resource_audit.go`,
`resource_generic_endpoint.go`) and the Go API client they call.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from devstack.tfapply_errors import ConfigError
from devstack.tfapply_schema import (
    ABSENT,
    Arg,
    Attrs,
    PathResource,
    ResourceType,
    require_known,
)
from devstack.tfapply_vault import VaultClient

log = logging.getLogger(__name__)


class Plugin(ResourceType):
    name = "vault_plugin"
    arguments: ClassVar[Mapping[str, Arg]] = {
        "type": Arg("string", required=True),
        "name": Arg("string", required=True),
        "version": Arg("string"),
        "sha256": Arg("string"),
        "command": Arg("string"),
        "args": Arg("list"),
        "env": Arg("list", sensitive=True),
    }

    def validate(self, attrs: Attrs) -> None:
        if attrs.get("type") not in ("auth", "secret", "database"):
            raise ConfigError("type must be auth, secret or database")
        for field in ("sha256", "command"):
            if not attrs.get_ok(field):
                raise ConfigError(
                    f"argument {field!r} must be set (non-enterprise plugin)"
                )

    def apply(
        self, client: VaultClient, attrs: Attrs, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": attrs.get("type")}
        # The Go client omits empty fields (`omitempty`).
        for field in ("args", "command", "sha256", "env", "version"):
            if attrs.get_ok(field):
                body[field] = attrs.get(field)
        client.put(_catalog_path(attrs), body)
        if client.read(_catalog_path(attrs), query=_version_query(attrs)) is None:
            _reject_reported_version(client, attrs)
        return {"id": _plugin_id(attrs)}

    def delete(self, client: VaultClient, attrs: Attrs) -> None:
        client.delete(_catalog_path(attrs), query=_version_query(attrs))


def _version_query(attrs: Attrs) -> dict[str, str] | None:
    return {"version": attrs.get("version")} if attrs.get_ok("version") else None


def _reject_reported_version(client: VaultClient, attrs: Attrs) -> None:
    """Undo a registration Vault filed under the plugin's own version, and fail.

    Vault 1.12+ and OpenBao run an unversioned plugin at registration and
    file it under the version the plugin reports. The entry is then not
    found without that version, and an unversioned deregister misses it.
    """
    catalog = client.read("sys/plugins/catalog") or {}
    versions = [
        entry.get("version")
        for entry in (catalog.get("data") or {}).get("detailed") or []
        if entry.get("name") == attrs.get("name")
        and entry.get("type") == attrs.get("type")
        and entry.get("version")
    ]
    for version in versions:
        client.delete(_catalog_path(attrs), query={"version": version})
    raise ConfigError(
        f"Vault registered plugin {attrs.get('name')} under the version it "
        f"reports ({', '.join(versions) or 'none found'}), not under "
        f"{attrs.get('version')!r}: set version (plugin_version) to that value"
    )


def _catalog_path(attrs: Attrs) -> str:
    require_known(attrs, "type", "name")
    return f"sys/plugins/catalog/{attrs.get('type')}/{attrs.get('name')}"


def _plugin_id(attrs: Attrs) -> str:
    kind, name, version = attrs.get("type"), attrs.get("name"), attrs.get("version")
    if version:
        return f"{kind}/version/{version}/name/{name}"
    return f"{kind}/name/{name}"


class Mount(ResourceType):
    name = "vault_mount"
    computed = ("id", "accessor")
    arguments: ClassVar[Mapping[str, Arg]] = {
        "path": Arg("string", required=True),
        "type": Arg("string", required=True),
        "description": Arg("string"),
        "default_lease_ttl_seconds": Arg("int", default=0),
        "max_lease_ttl_seconds": Arg("int", default=0),
        "plugin_version": Arg("string"),
        "options": Arg("map"),
        "local": Arg("bool", default=False),
        "seal_wrap": Arg("bool", default=False),
        "external_entropy_access": Arg("bool", default=False),
    }

    def apply(
        self, client: VaultClient, attrs: Attrs, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        require_known(attrs, "path", "type")
        path = str(attrs.get("path")).strip("/")
        existing = client.mount_table("mounts").get(f"{path}/")
        if existing is None:
            client.write(f"sys/mounts/{path}", _mount_input(attrs))
        elif existing.get("type") != attrs.get("type"):
            raise ConfigError(
                f"mount {path}/ has type {existing.get('type')!r}, the configuration "
                f"{attrs.get('type')!r}: changing it needs a destroy and re-create"
            )
        else:
            client.write(f"sys/mounts/{path}/tune", _mount_tune(attrs))
        mounted = client.mount_table("mounts").get(f"{path}/") or {}
        return {"id": path, "accessor": mounted.get("accessor")}

    def delete(self, client: VaultClient, attrs: Attrs) -> None:
        require_known(attrs, "path")
        client.delete(f"sys/mounts/{str(attrs.get('path')).strip('/')}")


def _mount_input(attrs: Attrs) -> dict[str, Any]:
    config: dict[str, Any] = {
        "default_lease_ttl": f"{attrs.get('default_lease_ttl_seconds')}s",
        "max_lease_ttl": f"{attrs.get('max_lease_ttl_seconds')}s",
        "force_no_cache": False,
        "options": None,
    }
    if attrs.get_ok("plugin_version"):
        config["plugin_version"] = attrs.get("plugin_version")
    return {
        "type": attrs.get("type"),
        "description": attrs.get("description") or "",
        "config": config,
        "local": attrs.get("local"),
        "options": attrs.get("options"),
        "seal_wrap": attrs.get("seal_wrap"),
        "external_entropy_access": attrs.get("external_entropy_access"),
    }


def _mount_tune(attrs: Attrs) -> dict[str, Any]:
    # The provider tunes the TTLs and options on every update, and the
    # description and plugin version when they changed; this sends them all.
    tune: dict[str, Any] = {
        "default_lease_ttl": f"{attrs.get('default_lease_ttl_seconds')}s",
        "max_lease_ttl": f"{attrs.get('max_lease_ttl_seconds')}s",
        "options": attrs.get("options"),
        "description": attrs.get("description") or "",
    }
    if attrs.get_ok("plugin_version"):
        tune["plugin_version"] = attrs.get("plugin_version")
    return tune


class Policy(PathResource):
    name = "vault_policy"
    method = "PUT"
    arguments: ClassVar[Mapping[str, Arg]] = {
        "name": Arg("string", required=True),
        "policy": Arg("string", required=True),
    }
    # Vault path below which policies of this kind are stored, by name.
    folder: ClassVar[str] = "sys/policies/acl"

    def path(self, attrs: Attrs) -> str:
        require_known(attrs, "name")
        return f"{self.folder}/{attrs.get('name')}"

    def payload(
        self, attrs: Attrs, *, create: bool, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        require_known(attrs, "policy")
        return {"policy": attrs.get("policy")}


class PasswordPolicy(Policy):
    """`vault_password_policy`: the rules Vault generates passwords from.

    The provider (`internal/vault/sys/password_policy.go`) writes `policy`
    with PUT and reads it back as stored. Its Read fails on a missing policy,
    where `refresh` returns [ABSENT]. Its `entropy_source` argument is not
    implemented.
    """

    name = "vault_password_policy"
    folder = "sys/policies/password"

    def refresh(self, client: VaultClient, attrs: Attrs) -> list[str] | None:
        response = client.read(self.path(attrs))
        if response is None:
            return [ABSENT]
        stored = (response.get("data") or {}).get("policy")
        return [] if stored == attrs.get("policy") else ["policy"]


class Audit(ResourceType):
    name = "vault_audit"
    arguments: ClassVar[Mapping[str, Arg]] = {
        "type": Arg("string", required=True),
        "path": Arg("string"),
        "description": Arg("string"),
        "local": Arg("bool", default=False),
        "options": Arg("map", default={}),
    }

    def apply(
        self, client: VaultClient, attrs: Attrs, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        path = _audit_path(attrs)
        existing = client.mount_table("audit").get(f"{path}/")
        if existing is not None:
            same = existing.get("type") == attrs.get("type")
            if same and existing.get("options") == attrs.get("options"):
                return {"id": path}
            # Every argument forces a new device in the provider: replace it.
            log.info("replacing audit device %s/ whose settings changed", path)
            client.delete(f"sys/audit/{path}")
        body = {
            "type": attrs.get("type"),
            "description": attrs.get("description") or "",
            "local": attrs.get("local"),
            "options": attrs.get("options"),
        }
        client.put(f"sys/audit/{path}", body)
        return {"id": path}

    def delete(self, client: VaultClient, attrs: Attrs) -> None:
        client.delete(f"sys/audit/{_audit_path(attrs)}")


def _audit_path(attrs: Attrs) -> str:
    require_known(attrs, "type", "path")
    return str(attrs.get_ok("path") or attrs.get("type")).strip("/")


class GenericEndpoint(ResourceType):
    name = "vault_generic_endpoint"
    computed = ("id", "write_data_json", "write_data")
    arguments: ClassVar[Mapping[str, Arg]] = {
        "path": Arg("string", required=True),
        "data_json": Arg("string", required=True, sensitive=True),
        "disable_read": Arg("bool", default=False),
        "disable_delete": Arg("bool", default=False),
        "ignore_absent_fields": Arg("bool", default=False),
        "write_fields": Arg("list"),
    }

    def validate(self, attrs: Attrs) -> None:
        _data(attrs)

    def skips_unchanged(self, attrs: Attrs) -> bool:
        # With disable_read the provider never reads the path back, so it
        # writes only when the configuration changed. That keeps a value
        # Vault changed since (a rotated key) from being overwritten.
        return bool(attrs.get("disable_read"))

    def apply(
        self, client: VaultClient, attrs: Attrs, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        require_known(attrs, "path", "data_json")
        path = str(attrs.get("path"))
        response = client.put(path, _data(attrs)) or {}
        returned = response.get("data") or {}
        fields = attrs.get("write_fields") or []
        written = {key: returned[key] for key in fields if key in returned}
        return {
            "id": path,
            "write_data_json": json.dumps(written) if response else "null",
            "write_data": {
                k: v if isinstance(v, str) else json.dumps(v)
                for k, v in written.items()
            },
        }

    def delete(self, client: VaultClient, attrs: Attrs) -> None:
        if attrs.get("disable_delete"):
            return
        require_known(attrs, "path")
        client.delete(str(attrs.get("path")))

    def refresh(self, client: VaultClient, attrs: Attrs) -> list[str] | None:
        """Compare the path's fields as the provider's Read and plan do.

        With ignore_absent_fields, only the fields of data_json that the read
        returns are compared. Without it, every field of the read is.
        """
        if attrs.get("disable_read"):
            return []  # the provider never reads it, so it reports no drift
        require_known(attrs, "path", "data_json")
        response = client.read(str(attrs.get("path")))
        if response is None:
            return [ABSENT]
        stored = response.get("data") or {}
        configured = _data(attrs)
        if attrs.get("ignore_absent_fields"):
            names = [name for name in configured if name in stored]
        else:
            names = sorted(set(configured) | set(stored))
        return [
            f"data_json.{name}"
            for name in sorted(names)
            if _go_json(configured.get(name)) != _go_json(stored.get(name))
        ]


def _go_json(value: Any) -> str:
    """Return `value` as JSON text after a round trip through Go's interface{}.

    Go's encoding/json decodes every number to float64, so 1 and 1.0 are the
    same value, while true stays apart from 1.
    """

    def floats(item: Any) -> Any:
        if isinstance(item, int) and not isinstance(item, bool):
            return float(item)
        if isinstance(item, dict):
            return {key: floats(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [floats(inner) for inner in item]
        return item

    return json.dumps(floats(value), sort_keys=True)


def _data(attrs: Attrs) -> dict[str, Any]:
    raw = attrs.get("data_json")
    if not isinstance(raw, str):
        return {}
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise ConfigError(f"data_json is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError("data_json must encode a JSON object")
    return data


class TerraformData(ResourceType):
    """Terraform's built-in `terraform_data`: stores `input` as `output`."""

    name = "terraform_data"
    computed = ("id", "output")
    arguments: ClassVar[Mapping[str, Arg]] = {
        "input": Arg("any"),
        "triggers_replace": Arg("any"),
    }

    def apply(
        self, client: VaultClient, attrs: Attrs, sensitive_changed: frozenset[str]
    ) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "output": attrs.get("input")}

    def delete(self, client: VaultClient, attrs: Attrs) -> None:
        """Delete nothing: destroy-time provisioners run before this."""
