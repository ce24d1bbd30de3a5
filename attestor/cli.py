"""`agent-attestor`: run the daemon, get tokens, log in to Vault, rotate keys."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from attestor.client import (
    AttestorError,
    inspect_identity,
    request_reload,
    request_token,
)
from attestor.login import LoginError, store_token, vault_login
from attestor.policy.config import ConfigError, load_config
from attestor.protocol import SOCKET_ENV, default_socket_path
from attestor.server.logs import configure_logging
from attestor.signing.keys import KeyFileError
from attestor.signing.keystore import KeyStore

logger = logging.getLogger(__name__)

# Rotation keeps a retired key published this long past the longest token
# lifetime, to cover the daemon's reload delay and clock skew with Vault.
_RETIRE_MARGIN_SECONDS = 60

_socket_option = click.option(
    "--socket",
    "socket_path",
    default=default_socket_path,
    show_default=f"${SOCKET_ENV} or /run/agent-attestor/agent.sock",
    help="Path of the attestor's Unix socket.",
)
_config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Path of the attestor's TOML config file.",
)


@click.group()
def main() -> None:
    """Kernel-attested JWTs for AI agents and other local workloads."""


@main.command()
@_config_option
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Lowest level of log record written to stderr.",
)
def serve(config_path: str, log_level: str) -> None:
    """Run the attestor daemon until SIGTERM; SIGHUP reloads the config."""
    from attestor.server.daemon import Daemon
    from attestor.server.supervisor import Supervisor

    configure_logging(log_level)
    try:
        daemon = Daemon(config_path)
        if daemon.config.processes > 1:
            Supervisor(daemon).serve_forever()
        else:
            daemon.serve_forever()
    except (ConfigError, KeyFileError, OSError) as err:
        raise click.ClickException(str(err)) from err


@main.command()
@_socket_option
@click.option("--tool", help="Tool the caller is about to run (asserted.tool).")
@click.option(
    "--on-behalf-of", help="Person the caller acts for (asserted.on_behalf_of)."
)
def token(socket_path: str, tool: str | None, on_behalf_of: str | None) -> None:
    """Print a JWT for this process, e.g. for `bao write auth/jwt/login`.

    The JWT names the agent whose selectors match the process running this
    command (its uid, and its parents for path selectors).
    """
    issued = _call(
        lambda: request_token(socket_path, tool=tool, on_behalf_of=on_behalf_of)
    )
    click.echo(issued.token)


@main.command()
@_socket_option
@click.option(
    "--address",
    "--vault-addr",
    "address",
    envvar="VAULT_ADDR",
    required=True,
    help="Vault address [env: VAULT_ADDR].",
)
@click.option(
    "--mount", default="jwt", show_default=True, help="Path of the JWT auth mount."
)
@click.option("--role", help="JWT role to log in as.  [default: the agent's name]")
@click.option(
    "--ca-cert",
    envvar="VAULT_CACERT",
    help="PEM CA bundle to verify Vault's TLS certificate [env: VAULT_CACERT].",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["token", "json"]),
    default="token",
    show_default=True,
    help="Print the bare token, or JSON with accessor, policies and TTL.",
)
@click.option(
    "--store",
    is_flag=True,
    help="Write the token to ~/.vault-token for the Vault CLI instead of printing it.",
)
def login(
    *,
    socket_path: str,
    address: str,
    mount: str,
    role: str | None,
    ca_cert: str | None,
    output_format: str,
    store: bool,
) -> None:
    """Log in to Vault's JWT auth as this process's agent."""
    issued = _call(lambda: request_token(socket_path))
    try:
        result = vault_login(
            address,
            jwt=issued.token,
            role=role or issued.agent,
            mount=mount,
            ca_cert=ca_cert,
        )
    except LoginError as err:
        raise click.ClickException(str(err)) from err

    details: dict[str, Any] = {
        "agent": issued.agent,
        "jti": issued.jti,
        **result.public_fields(),
    }
    if store:
        path = store_token(result.token)
        click.echo(
            f"stored the Vault token for agent {issued.agent} in {path}", err=True
        )
        if output_format == "json":
            click.echo(json.dumps(details, indent=2))
        return
    if output_format == "json":
        click.echo(json.dumps({"token": result.token, **details}, indent=2))
    else:
        click.echo(result.token)


@main.command()
@_socket_option
@click.option("--json", "as_json", is_flag=True, help="Print the full JSON response.")
def whoami(socket_path: str, as_json: bool) -> None:
    """Show what the attestor attests about this process; issues no JWT."""
    response = _call(lambda: inspect_identity(socket_path))
    if as_json:
        click.echo(json.dumps(response, indent=2))
        return
    process = response.get("process", {})
    click.echo(f"agent:      {response.get('agent') or '(none)'}")
    if response.get("error"):
        click.echo(f"reason:     {response['error']}")
    for key in ("pid", "uid", "user", "gid", "exe", "exe_sha256", "exe_deleted"):
        click.echo(f"{key + ':':<11} {process.get(key, '')}")
    script = process.get("script")
    if script:
        click.echo(
            f"script:     {script.get('kind')} {script.get('path')} "
            f"{script.get('sha256', '')}".rstrip()
        )
    for parent in process.get("parents", []):
        click.echo(f"parent:     {parent['pid']} uid {parent['uid']} {parent['exe']}")


main.add_command(whoami, name="inspect")


@main.group()
def keys() -> None:
    """Manage the signing keys in the config's key_dir."""


@keys.command()
@_config_option
@click.option(
    "--no-reload",
    is_flag=True,
    help="Do not ask the running daemon to reload; it still notices the "
    "change within a second.",
)
def rotate(config_path: str, no_reload: bool) -> None:
    """Promote the next key to current and publish a new next key.

    The old current key stays in the JWKS until every token it signed has
    expired. Safe while the daemon runs.
    """
    config = _load(config_path)
    store = KeyStore(config.key_dir, config.algorithm)
    try:
        keys = store.rotate(keep_seconds=config.max_ttl + _RETIRE_MARGIN_SECONDS)
    except (KeyFileError, OSError) as err:
        raise click.ClickException(f"key rotation failed: {err}") from err
    click.echo(f"current: {keys.current.kid}\nnext:    {keys.next.kid}")
    for entry in keys.retired:
        click.echo(
            f"retired: {entry.key.kid} (published until {int(entry.retire_after)})"
        )

    if not no_reload:
        try:
            request_reload(config.socket_path, timeout=5.0)
        except AttestorError as err:
            click.echo(
                f"warning: the daemon did not confirm the reload ({err}); "
                "it picks up the new keys within a second",
                err=True,
            )


@keys.command(name="list")
@_config_option
def list_keys(config_path: str) -> None:
    """Print the key ids of the current, next and retired keys."""
    config = _load(config_path)
    try:
        keys = KeyStore(config.key_dir, config.algorithm).load()
    except (KeyFileError, OSError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"current: {keys.current.kid} ({keys.current.algorithm})")
    click.echo(f"next:    {keys.next.kid} ({keys.next.algorithm})")
    for entry in keys.retired:
        click.echo(
            f"retired: {entry.key.kid} (published until {int(entry.retire_after)})"
        )


def _load(config_path: str) -> Any:
    try:
        return load_config(config_path)
    except ConfigError as err:
        raise click.ClickException(str(err)) from err


def _call(request: Any) -> Any:
    try:
        return request()
    except AttestorError as err:
        raise click.ClickException(f"{err} [{err.code}]") from err


if __name__ == "__main__":
    sys.exit(main())
