"""Command-line options of `agent-exec`.

argparse, not click: agent-exec starts on every tool call, and importing
click costs about 14 ms against about 1 ms for argparse (`python -X
importtime`, Python 3.11).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import NamedTuple, NoReturn
from urllib.parse import urlsplit

from attestor.agent_exec.errors import UsageError
from attestor.protocol import DEFAULT_SOCKET_PATH, SOCKET_ENV, default_socket_path

DESCRIPTION = """\
Run COMMAND with credentials minted for this one call. agent-exec obtains a
JWT for itself from the attestor, logs in to Vault with it, reads the
credentials of each --role, runs COMMAND with them in its environment (and
without any Vault token, JWT or attestor socket), then revokes them all.
"""

EPILOG = """\
exit status:
  the command's own exit status, or 128+N if it died of signal N;
  64  invalid usage: bad option, ambiguous role, two roles of one kind
  69  the attestor or Vault is unreachable or failing
  70  internal error in agent-exec
  77  denied: the attestor, the Vault login or a role read was rejected
  125 a lease or the token could not be revoked; this code wins over all
      others, and the credential stays valid until its lease TTL ends
  126 COMMAND is not executable; 127 COMMAND was not found

environment:
  VAULT_ADDR (or BAO_ADDR), VAULT_NAMESPACE, VAULT_CACERT, VAULT_CAPATH,
  AGENT_ATTESTOR_SOCKET; none of them reaches COMMAND.
"""


class Options(NamedTuple):
    roles: list[str]
    command: list[str]
    vault_addr: str
    attestor_socket: str
    namespace: str = ""
    tool: str | None = None
    on_behalf_of: str | None = None
    auth_mount: str = "jwt"
    mount: str = "agent-creds"
    ttl: int | None = None
    kill_timeout: float = 5.0
    json: bool = False
    verbose: int = 0


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors exit with EX_USAGE like agent-exec's own."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see agent-exec --help")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="agent-exec",
        usage="agent-exec --role NAME [--role NAME ...] [options] -- COMMAND [ARG ...]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_help_formatter,
    )
    _add_call_options(parser.add_argument)
    _add_vault_options(parser.add_argument)
    _add_run_options(parser.add_argument)
    return parser


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    """Return argparse's formatter, sized to the terminal without `shutil`.

    argparse builds a formatter for every `add_argument`, and its default
    width lookup imports `shutil`, which with bz2 and lzma costs about 2 ms
    of each call. The width follows the same rule: $COLUMNS, else the
    terminal on stdout, else 80 columns.
    """
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(1).columns  # stdout
        except (ValueError, OSError):
            columns = 80
    return argparse.RawDescriptionHelpFormatter(prog, width=columns - 2)


def _add_call_options(add: Callable[..., object]) -> None:
    add(
        "--role",
        dest="roles",
        action="append",
        required=True,
        metavar="NAME",
        help="role whose credentials COMMAND gets: database/NAME, aws/NAME, or a "
        "bare NAME looked up on both; repeat for one database and one AWS role",
    )
    add(
        "--attestor-socket",
        metavar="PATH",
        help=f"attestor's Unix socket (default: ${SOCKET_ENV}, else "
        f"{DEFAULT_SOCKET_PATH})",
    )
    add(
        "--tool",
        metavar="TEXT",
        help="tool name to assert in the JWT (recorded as asserted, not checked)",
    )
    add(
        "--on-behalf-of",
        metavar="TEXT",
        help="person or principal to assert in the JWT (recorded as asserted)",
    )


def _add_vault_options(add: Callable[..., object]) -> None:
    add(
        "--vault-addr",
        metavar="URL",
        help="Vault or OpenBao address (default: $VAULT_ADDR, else $BAO_ADDR)",
    )
    add(
        "--auth-mount",
        default="jwt",
        metavar="PATH",
        help="path of Vault's JWT auth mount (default: jwt)",
    )
    add(
        "--mount",
        default="agent-creds",
        metavar="PATH",
        help="path of the agent-bridge secrets mount (default: agent-creds)",
    )
    add(
        "--ttl",
        type=_positive_int,
        metavar="SECONDS",
        help="request a lease TTL this short, in seconds (default: the role's)",
    )


def _add_run_options(add: Callable[..., object]) -> None:
    add(
        "--kill-timeout",
        type=_non_negative_float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between a forwarded SIGINT/SIGTERM/SIGHUP/SIGQUIT, or the "
        "command's exit, and SIGKILL to its process group (default: 5)",
    )
    add(
        "--json",
        action="store_true",
        help="print the call's audit record as one JSON line on stderr at the end",
    )
    add(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log progress on stderr; twice for debug detail",
    )
    add(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND [ARG ...]",
        help="the command to run, after --",
    )


def parse_options(argv: list[str] | None = None) -> Options:
    """Parse `argv`; raise `UsageError` for anything malformed or missing."""
    args = build_parser().parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError(
            "no command given: put it after '--', e.g. -- psql -c 'select 1'"
        )

    vault_addr = (
        args.vault_addr
        or os.environ.get("VAULT_ADDR")
        or os.environ.get("BAO_ADDR", "")
    )
    if not vault_addr:
        raise UsageError("no Vault address: pass --vault-addr or set VAULT_ADDR")
    parts = urlsplit(vault_addr)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"invalid Vault address {vault_addr!r}: expected http://HOST:PORT or "
            "https://HOST:PORT in --vault-addr or VAULT_ADDR"
        )
    return Options(
        roles=list(args.roles),
        command=command,
        vault_addr=vault_addr,
        attestor_socket=args.attestor_socket or default_socket_path(),
        namespace=os.environ.get("VAULT_NAMESPACE", ""),
        tool=args.tool,
        on_behalf_of=args.on_behalf_of,
        auth_mount=args.auth_mount.strip("/"),
        mount=args.mount.strip("/"),
        ttl=args.ttl,
        kill_timeout=args.kill_timeout,
        json=args.json,
        verbose=args.verbose,
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from err
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1 second, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from err
    if value < 0 or math.isnan(value) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value
