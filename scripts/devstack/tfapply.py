"""Apply or destroy the vault-config/ Terraform module without Terraform.

Terraform's vault provider cannot be downloaded on this project's machines.
This applier reads the module with python-hcl2 and makes the Vault API calls
that terraform-provider-vault 5.x makes for the same arguments. That mapping
was derived from the provider's source, not compared against a provider run.
It implements exactly the resource types, meta-arguments and expressions the
module uses, and rejects anything else by file, line, resource and argument.

Differences from Terraform: an apply does no refresh or diff, so it
writes every resource (the writes are idempotent), except a generic
endpoint with `disable_read` whose arguments equal those the state file
recorded: Terraform does not refresh those either. `drift` does the
refresh and diff of a plan for some resource types, and writes nothing.
The state file is optional and stores digests instead of sensitive values.
`targets` selects resource blocks like `-target`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from devstack.tfapply_errors import ConfigError, TfApplyError
from devstack.tfapply_hcl import load_module
from devstack.tfapply_lint import lint
from devstack.tfapply_plan import Instance, Planner
from devstack.tfapply_provision import (
    check_meta_blocks,
    provisioner_env,
    run_destroy_provisioners,
)
from devstack.tfapply_resources import RESOURCE_TYPES
from devstack.tfapply_schema import ABSENT
from devstack.tfapply_state import State
from devstack.tfapply_vault import VaultClient

log = logging.getLogger(__name__)

__all__ = [
    "ABSENT",
    "NOT_DECLARED",
    "ConfigError",
    "TfApplyError",
    "apply",
    "destroy",
    "drift",
    "plan",
]

# Marker that `drift` lists for a recorded instance no longer declared.
NOT_DECLARED = "(no longer declared)"


def plan(
    module_dir: Path | str,
    variables: Mapping[str, Any],
    *,
    targets: Iterable[str] | None = None,
) -> list[Instance]:
    """Evaluate and lint the module without contacting Vault.

    Returns the planned instances in apply order; attributes Vault computes
    are `UNKNOWN`. Raises ConfigError (or its subclass LintError).
    """
    planner = _planner(module_dir, variables)
    instances = [i for r in planner.order(targets) for i in planner.expand(r)]
    lint(instances)
    return instances


def apply(
    module_dir: Path | str,
    variables: Mapping[str, Any],
    vault_addr: str | None = None,
    token: str | None = None,
    *,
    targets: Iterable[str] | None = None,
    state_path: Path | str | None = None,
) -> dict[str, Any]:
    """Create or update everything the module declares; return its outputs.

    `vault_addr` and `token` default to VAULT_ADDR and VAULT_TOKEN. With
    `state_path`, instances recorded by an earlier apply and no longer
    declared are deleted (not with `targets`). Outputs are returned only
    without `targets`.
    """
    target_list = list(targets) if targets is not None else None
    plan(module_dir, variables, targets=target_list)
    client = _client(vault_addr, token)
    state = State(Path(state_path) if state_path else None)
    planner = _planner(module_dir, variables)
    applied: list[str] = []
    order = planner.order(target_list)
    try:
        for resource in order:
            for instance in planner.expand(resource):
                _apply_instance(client, planner, state, instance)
                applied.append(instance.address)
        # As with -target, only instances of the selected blocks are pruned.
        blocks = {r.address for r in order} if target_list is not None else None
        _delete_orphans(client, planner, state, applied, blocks, token=client.token)
    finally:
        state.save()
    if target_list is not None:
        return {}
    return _outputs(planner)


def destroy(
    module_dir: Path | str,
    variables: Mapping[str, Any],
    vault_addr: str | None = None,
    token: str | None = None,
    *,
    targets: Iterable[str] | None = None,
    state_path: Path | str | None = None,
) -> None:
    """Delete everything the module declares, dependents first.

    Destroy-time provisioners run just before their resource is deleted.
    With `targets`, only those blocks and the blocks depending on them go.
    """
    target_list = list(targets) if targets is not None else None
    client = _client(vault_addr, token)
    state = State(Path(state_path) if state_path else None)
    planner = _planner(module_dir, variables)
    selected = planner.dependents(target_list) if target_list is not None else None
    instances: list[Instance] = []
    # Every block is evaluated, because a selected block may reference one
    # that stays; only the selected ones are deleted.
    for resource in planner.order():
        for instance in planner.expand(resource):
            record = state.records.get(instance.address)
            if record is not None:
                planner.record_applied(instance, record.computed)
            if selected is None or resource.address in selected:
                instances.append(instance)
    env = provisioner_env(client.addr, client.token)
    try:
        for instance in reversed(instances):
            _destroy_instance(client, planner, instance, env)
            state.forget(instance.address)
        _delete_orphans(client, planner, state, [], selected, token=client.token)
    finally:
        state.save()


def drift(
    module_dir: Path | str,
    variables: Mapping[str, Any],
    vault_addr: str | None = None,
    token: str | None = None,
    *,
    targets: Iterable[str] | None = None,
    state_path: Path | str | None = None,
) -> dict[str, list[str]]:
    """Read back what the module declares; return what a plan would change.

    This does what Terraform's refresh and plan do, for the resource types
    whose read the applier implements (see `ResourceType.refresh`). Instances
    of other types are not read. The result maps an instance address to the
    arguments whose value in Vault differs, leaving out those in its
    `ignore_changes`. A missing object lists ABSENT. With `state_path`
    (and no `targets`), a recorded instance the configuration no longer
    declares lists NOT_DECLARED, because a plan would delete it.
    """
    target_list = list(targets) if targets is not None else None
    plan(module_dir, variables, targets=target_list)
    client = _client(vault_addr, token)
    state = State(Path(state_path) if state_path else None)
    planner = _planner(module_dir, variables)
    changes: dict[str, list[str]] = {}
    declared = []
    for resource in planner.order(target_list):
        for instance in planner.expand(resource):
            declared.append(instance.address)
            record = state.records.get(instance.address)
            if record is not None:
                planner.record_applied(instance, record.computed)
            differing = instance.type.refresh(client, instance.attrs) or []
            ignored = resource.ignore_changes
            differing = [name for name in differing if name not in ignored]
            if differing:
                changes[instance.address] = differing
    if target_list is None:
        for orphan in state.orphans(declared):
            changes[orphan.address] = [NOT_DECLARED]
    return changes


def _planner(module_dir: Path | str, variables: Mapping[str, Any]) -> Planner:
    module = load_module(Path(module_dir))
    check_meta_blocks(module)
    return Planner(module, variables)


def _client(vault_addr: str | None, token: str | None) -> VaultClient:
    addr = vault_addr or os.environ.get("VAULT_ADDR")
    if not addr:
        raise TfApplyError("no Vault address: set VAULT_ADDR or pass vault_addr=")
    return VaultClient(addr, token or os.environ.get("VAULT_TOKEN", ""))


def _apply_instance(
    client: VaultClient, planner: Planner, state: State, instance: Instance
) -> None:
    # A resource with replace_triggered_by is always written, because its
    # trigger may have been replaced while its own arguments stayed the same.
    lifecycle = instance.resource.lifecycle
    skippable = lifecycle is None or (
        "replace_triggered_by" not in lifecycle.body.attributes
    )
    if skippable and instance.type.skips_unchanged(instance.attrs):
        record = state.unchanged(instance)
        if record is not None:
            planner.record_applied(instance, record.computed)
            log.info(
                "skipped %s: arguments unchanged since the recorded apply",
                instance.address,
            )
            return
    changed = state.sensitive_changed(instance)
    try:
        computed = instance.type.apply(client, instance.attrs, changed)
    except ConfigError as err:
        raise ConfigError(
            f"{instance.address}: {err}", instance.resource.location
        ) from err
    except TfApplyError as err:
        location = instance.resource.location
        raise TfApplyError(f"{location}: {instance.address}: {err}") from err
    planner.record_applied(instance, computed)
    state.record(instance)
    log.info("applied %s", instance.address)


def _destroy_instance(
    client: VaultClient, planner: Planner, instance: Instance, env: Mapping[str, str]
) -> None:
    run_destroy_provisioners(
        planner,
        instance.resource.provisioners,
        instance.value(),
        address=instance.address,
        base_env=env,
    )
    try:
        instance.type.delete(client, instance.attrs)
    except TfApplyError as err:
        location = instance.resource.location
        raise TfApplyError(f"{location}: {instance.address}: {err}") from err
    log.info("destroyed %s", instance.address)


def _delete_orphans(
    client: VaultClient,
    planner: Planner,
    state: State,
    keep: list[str],
    blocks: set[str] | None,
    *,
    token: str,
) -> None:
    """Delete recorded instances the configuration no longer declares.

    With `blocks`, only records of those resource blocks are deleted.
    """
    env = provisioner_env(client.addr, token)
    for record in state.orphans(keep):
        if blocks is not None and record.resource not in blocks:
            continue
        resource = planner.module.resources.get(record.resource)
        # Terraform runs destroy provisioners of a removed instance only
        # while its resource block is still in the configuration.
        if resource is not None and resource.provisioners:
            value = {**record.values, **record.blocks, **record.computed}
            run_destroy_provisioners(
                planner,
                resource.provisioners,
                value,
                address=record.address,
                base_env=env,
            )
        RESOURCE_TYPES[record.type].delete(client, record.attrs())
        state.forget(record.address)
        log.info(
            "destroyed %s, which the configuration no longer declares", record.address
        )


def _outputs(planner: Planner) -> dict[str, Any]:
    context = planner.context()
    return {
        name: planner.evaluate(attribute, context, f"output.{name}")
        for name, attribute in planner.module.outputs.items()
    }
