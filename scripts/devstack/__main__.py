"""`scripts/dev-stack up|down|status|env`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from devstack import stack
from devstack.procs import StackError

DEFAULT_STATE = Path(__file__).resolve().parents[2] / ".stack"


@click.group()
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_STATE,
    show_default=True,
    help="Folder holding the stack's data, logs and PIDs.",
)
@click.pass_context
def cli(ctx: click.Context, state_dir: Path) -> None:
    """Run the embedded stack (OpenBao, PostgreSQL, attestor) on 127.0.0.1."""
    logging.basicConfig(
        level=logging.INFO, format="dev-stack: %(message)s", stream=sys.stderr
    )
    ctx.obj = state_dir.resolve()


@cli.command()
@click.option(
    "--no-build", is_flag=True, help="Register the plugin file already in build/."
)
@click.pass_obj
def up(state_dir: Path, no_build: bool) -> None:
    """Start the stack (idempotent) and print how to use it."""
    state = stack.up(state_dir, build=not no_build)
    click.echo(
        f"stack is up: Vault {state.vault_addr}, attestor {state.attestor_socket}",
        err=True,
    )
    click.echo('load its environment with: eval "$(scripts/dev-stack env)"', err=True)


@cli.command()
@click.pass_obj
def down(state_dir: Path) -> None:
    """Stop every process the stack started, by PID."""
    stack.down(state_dir)
    click.echo("stack is down", err=True)


@cli.command()
@click.pass_obj
def status(state_dir: Path) -> None:
    """Print the stack's processes as JSON; exit 1 unless all are running."""
    report = stack.status(state_dir)
    click.echo(json.dumps(report, indent=2))
    sys.exit(0 if report["running"] else 1)


@cli.command()
@click.pass_obj
def env(state_dir: Path) -> None:
    """Print `export` lines for the administrator environment."""
    state = stack.load(state_dir)
    if state is None:
        raise click.ClickException(
            "the stack is not running; start it with scripts/dev-stack up"
        )
    click.echo(stack.export_lines(state))


def main() -> None:
    try:
        cli()
    except StackError as err:
        click.echo(f"dev-stack: {err}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
