"""Destroy-time `local-exec` provisioners and the `lifecycle` meta-block.

Only what vault-config/ needs is accepted: `local-exec` provisioners with
`when = destroy`, and `lifecycle { replace_triggered_by = [...] }` and
`lifecycle { ignore_changes = [...] }`. replace_triggered_by needs no
action, because the applier rewrites every resource that has it on every
apply, which is what a replacement would write too. ignore_changes is
accepted only for arguments the resource leaves unset, which an apply
writes as it writes any unset argument, and `tfapply.drift` skips them.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from typing import Any

from devstack.tfapply_errors import ConfigError, TfApplyError
from devstack.tfapply_hcl import Block, Module, Resource, bare_word
from devstack.tfapply_plan import Planner
from devstack.tfapply_resources import RESOURCE_TYPES
from devstack.tfapply_values import contains_unknown

log = logging.getLogger(__name__)

LOCAL_EXEC_ARGUMENTS = {
    "when",
    "command",
    "environment",
    "interpreter",
    "working_dir",
    "on_failure",
}


def check_meta_blocks(module: Module) -> None:
    """Reject provisioners and lifecycle settings the applier cannot honour."""
    for resource in module.resources.values():
        where = resource.address
        for block in resource.provisioners:
            _check_provisioner(block, where)
        if resource.lifecycle is not None:
            _check_lifecycle(resource, resource.lifecycle)


def _check_lifecycle(resource: Resource, lifecycle: Block) -> None:
    extra = set(lifecycle.body.attributes) - {"replace_triggered_by", "ignore_changes"}
    if extra or lifecycle.body.blocks:
        raise ConfigError(
            f"{resource.address}: lifecycle supports only replace_triggered_by "
            "and ignore_changes here",
            lifecycle.location,
        )
    rtype = RESOURCE_TYPES.get(resource.type)
    if rtype is None:
        return  # the planner rejects the type by name
    for name in resource.ignore_changes:
        if name not in rtype.arguments or name in resource.body.attributes:
            raise ConfigError(
                f"{resource.address}: ignore_changes lists {name!r}: the applier "
                "supports only arguments of the resource that it leaves unset",
                lifecycle.location,
            )


def _check_provisioner(block: Block, where: str) -> None:
    if block.labels != ("local-exec",):
        raise ConfigError(
            f"{where}: only local-exec provisioners are supported", block.location
        )
    attributes = block.body.attributes
    extra = sorted(set(attributes) - LOCAL_EXEC_ARGUMENTS)
    if extra or block.body.blocks:
        raise ConfigError(
            f"{where}: unsupported local-exec argument {extra}", block.location
        )
    if "when" not in attributes or bare_word(attributes["when"]) != "destroy":
        raise ConfigError(
            f"{where}: only destroy-time provisioners (when = destroy) are supported",
            block.location,
        )
    if "command" not in attributes:
        raise ConfigError(f"{where}: local-exec needs a command", block.location)


def run_destroy_provisioners(
    planner: Planner,
    provisioners: list[Block],
    self_value: Mapping[str, Any],
    *,
    address: str,
    base_env: Mapping[str, str],
) -> None:
    """Run each provisioner with `self` bound to the instance being destroyed."""
    context = planner.context({"self": dict(self_value)})
    for block in provisioners:
        attributes = block.body.attributes
        values = {
            name: planner.evaluate(attr, context, f"{address} provisioner")
            for name, attr in attributes.items()
            if name not in ("when", "on_failure")
        }
        if "on_failure" in attributes:
            values["on_failure"] = bare_word(attributes["on_failure"])
        if contains_unknown(values):
            raise ConfigError(
                f"{address}: destroy provisioner uses a value unknown before apply",
                block.location,
            )
        _run_local_exec(values, address=address, base_env=base_env)


def _run_local_exec(
    values: Mapping[str, Any], *, address: str, base_env: Mapping[str, str]
) -> None:
    interpreter = values.get("interpreter") or ["/bin/sh", "-c"]
    environment = {k: str(v) for k, v in (values.get("environment") or {}).items()}
    argv = [*interpreter, str(values["command"])]
    log.info("running destroy provisioner of %s", address)
    result = subprocess.run(
        argv,
        env={**base_env, **environment},
        cwd=values.get("working_dir") or None,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        log.info(
            "destroy provisioner of %s finished: %s", address, result.stdout.strip()
        )
        return
    message = (
        f"{address}: destroy provisioner exited with status {result.returncode}: "
        f"{result.stderr.strip() or result.stdout.strip()}"
    )
    if values.get("on_failure") == "continue":
        log.warning("%s; continuing as on_failure = continue asks", message)
        return
    raise TfApplyError(message)


def provisioner_env(vault_addr: str, token: str) -> dict[str, str]:
    """Return the environment local-exec commands run with, like Terraform's own."""
    return {**os.environ, "VAULT_ADDR": vault_addr, "VAULT_TOKEN": token}
