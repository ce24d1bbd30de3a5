"""Command line for the applier: `scripts/tf-apply apply|destroy|plan`.

Variables come from `--var-file` (`.tfvars` or `.tfvars.json`), then
`TF_VAR_<name>` environment variables, then `--var NAME=VALUE`, later ones
winning, as in Terraform. Keep secrets such as the PostgreSQL password in
TF_VAR_ variables or files: argv is visible to every local user.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from devstack import tfapply
from devstack.tfapply_expr import Context, evaluate
from devstack.tfapply_hcl import Module, load_module, parse_body, parse_expression
from devstack.tfapply_types import parse_type

log = logging.getLogger(__name__)

DEFAULT_MODULE = Path(__file__).resolve().parents[2] / "vault-config"


def load_variables(
    module: Module, files: list[Path], pairs: list[str], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Merge variable files, TF_VAR_ environment variables and --var pairs."""
    values: dict[str, Any] = {}
    for path in files:
        values.update(_read_file(path))
    for name, variable in module.variables.items():
        raw = environ.get(f"TF_VAR_{name}")
        if raw is not None:
            values[name] = _parse_text(
                raw,
                variable.type_expr is not None and _is_complex(variable.type_expr),
                f"TF_VAR_{name}",
            )
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in module.variables:
            raise click.BadParameter(
                f"--var {name!r}: expected NAME=VALUE with a declared NAME"
            )
        type_expr = module.variables[name].type_expr
        values[name] = _parse_text(
            raw, type_expr is not None and _is_complex(type_expr), f"--var {name}"
        )
    return values


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.name.endswith(".json"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise click.BadParameter(f"{path}: expected a JSON object of variables")
        return data
    body = parse_body(text, str(path))
    return {name: evaluate(a.expr, Context({})) for name, a in body.attributes.items()}


def _is_complex(type_expr: Any) -> bool:
    return parse_type(type_expr).kind not in ("string", "number", "bool", "any")


def _parse_text(raw: str, complex_type: bool, what: str) -> Any:
    # Terraform reads primitive values literally and complex ones as HCL.
    if not complex_type:
        return raw
    return evaluate(parse_expression(raw, what), Context({}))


@click.command()
@click.argument("action", type=click.Choice(["apply", "destroy", "plan"]))
@click.option(
    "--module",
    "module_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_MODULE,
    show_default=True,
    help="Terraform module directory.",
)
@click.option(
    "--var-file",
    "var_files",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    multiple=True,
    help="Variables file (.tfvars or .json); repeatable.",
)
@click.option(
    "--var",
    "pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="One variable; repeatable. Not for secrets.",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    help="Resource address to limit the run to (with what it depends on); repeatable.",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="State file of what apply wrote; with it, apply deletes what the "
    "configuration no longer declares.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every API call.")
def main(
    *,
    action: str,
    module_dir: Path,
    var_files: tuple[Path, ...],
    pairs: tuple[str, ...],
    targets: tuple[str, ...],
    state_path: Path | None,
    verbose: bool,
) -> None:
    """Apply, destroy or plan the module against VAULT_ADDR with VAULT_TOKEN."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        module = load_module(module_dir)
        variables = load_variables(module, list(var_files), list(pairs), os.environ)
        target_list = list(targets) or None
        if action == "plan":
            for instance in tfapply.plan(module_dir, variables, targets=target_list):
                click.echo(instance.address)
        elif action == "apply":
            outputs = tfapply.apply(
                module_dir, variables, targets=target_list, state_path=state_path
            )
            click.echo(json.dumps(outputs, indent=2, sort_keys=True))
        else:
            tfapply.destroy(
                module_dir, variables, targets=target_list, state_path=state_path
            )
    except tfapply.TfApplyError as err:
        raise click.ClickException(str(err)) from err


if __name__ == "__main__":
    sys.exit(main())
