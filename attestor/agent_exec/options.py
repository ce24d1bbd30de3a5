"""Command-line options of `agent-exec`.

A small parser written for agent-exec's options, not argparse: agent-exec
starts on every tool call, and argparse imports `re` and `gettext`, which
add about 7 ms to its start-up, where this module takes a fraction of a
millisecond (Python 3.11). It accepts what argparse accepted: `--opt VALUE`
and `--opt=VALUE`, `-vv`, and everything after `--` or after the first
argument that is not an option as the command. Unlike argparse's default,
and like its `allow_abbrev=False`, it takes no prefix of a long option
(`--rol` for `--role`), so an option added later cannot change what a
prefix in a caller's script means. Usage errors read as argparse's did and
exit with EX_USAGE (64).
"""

from __future__ import annotations

import os

from attestor.agent_exec.errors import UsageError
from attestor.agent_exec.roles import parse_roles
from attestor.agent_exec.urls import check_origin_only, hide_userinfo, split_base_url
from attestor.protocol_constants import (
    DEFAULT_SOCKET_PATH,
    MAX_ASSERTED_CHARS,
    SOCKET_ENV,
    default_socket_path,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

# setitimer raises OverflowError for a value beyond time_t (1e308 does), so
# --kill-timeout is capped at one day, far more than a command needs to stop.
MAX_KILL_TIMEOUT = 86400.0
# Vault stores a TTL as Go's time.Duration, an int64 count of nanoseconds,
# so 9223372036 s (about 292 years) is the largest. The plugin's creds read
# rejects a larger ttl with 400.
MAX_TTL = 9_223_372_036
# Characters of a mount path segment that agent-exec accepts: enough for
# any path Vault's `sys/mounts` API creates in practice, and nothing that
# needs encoding in a request line.
MOUNT_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
)

# Characters of an invalid --tool or --on-behalf-of value that a message shows.
SHOWN_CHARS = 40

USAGE = "agent-exec --role NAME [--role NAME ...] [options] -- COMMAND [ARG ...]"

DESCRIPTION = """\
Run COMMAND with credentials minted for this one call. agent-exec obtains a
JWT for itself from the attestor, logs in to Vault with it, reads the
credentials of each --role, runs COMMAND with them in its environment (and
without any Vault token, JWT or attestor socket), then revokes them all.
"""

EPILOG = """\
exit status:
  the command's own exit status, or 128+N if it died of signal N;
  128+N also if agent-exec got signal N before COMMAND started, even when
      a Vault request failed meanwhile
  64  invalid usage: bad option, ambiguous role, two roles of one kind, or
      a request that Vault rejected as invalid (400)
  69  the attestor or Vault is unreachable or failing, or Vault returned
      another 4xx status, such as 404 for an unknown namespace
  70  internal error in agent-exec
  77  denied: the attestor rejected the process, Vault rejected the login,
      or Vault denied a role read (403)
  125 a lease or the token could not be revoked; this code wins over all
      others, and the credential may stay valid until its lease TTL ends
  126 COMMAND is not executable; 127 COMMAND was not found

environment:
  VAULT_ADDR (or BAO_ADDR), VAULT_NAMESPACE, VAULT_CACERT, VAULT_CAPATH,
  AGENT_ATTESTOR_SOCKET; none of them reaches COMMAND.
"""


class Options:
    """The parsed command line, with defaults and environment applied."""

    __slots__ = (
        "attestor_socket",
        "auth_mount",
        "command",
        "json",
        "kill_timeout",
        "mount",
        "namespace",
        "on_behalf_of",
        "roles",
        "tool",
        "ttl",
        "vault_addr",
        "verbose",
    )

    def __init__(
        self,
        roles: list[str],
        command: list[str],
        vault_addr: str,
        attestor_socket: str,
        *,
        namespace: str = "",
        tool: str | None = None,
        on_behalf_of: str | None = None,
        auth_mount: str = "jwt",
        mount: str = "agent-creds",
        ttl: int | None = None,
        kill_timeout: float = 5.0,
        json: bool = False,
        verbose: int = 0,
    ) -> None:
        self.roles = roles
        self.command = command
        self.vault_addr = vault_addr
        self.attestor_socket = attestor_socket
        self.namespace = namespace
        self.tool = tool
        self.on_behalf_of = on_behalf_of
        self.auth_mount = auth_mount
        self.mount = mount
        self.ttl = ttl
        self.kill_timeout = kill_timeout
        self.json = json
        self.verbose = verbose


class _Option:
    """One option: how it is spelled, what it takes and its help line."""

    __slots__ = ("convert", "dest", "help", "kind", "metavar", "names")

    def __init__(
        self,
        names: tuple[str, ...],
        kind: str,
        help: str,
        *,
        metavar: str = "",
        convert: Callable[[str], int | float] | None = None,
    ) -> None:
        self.names = names
        self.dest = names[-1].lstrip("-").replace("-", "_")
        self.kind = kind  # "value", "append", "flag", "count" or "help"
        self.help = help
        self.metavar = metavar
        self.convert = convert

    @property
    def label(self) -> str:
        """The option as argparse named it in errors: `-v/--verbose`."""
        return "/".join(self.names)

    @property
    def takes_value(self) -> bool:
        return self.kind in ("value", "append")


def _is_decimal(text: str) -> bool:
    """Tell whether `text` is ASCII digits with at most one '.' among them.

    `int` and `float` also take spaces, '_', a sign and other scripts' digits
    ("١٢"), which a shell user did not mean as seconds.
    """
    return text.isascii() and text.replace(".", "", 1).isdigit()


def _ttl(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"invalid number of seconds {text!r}: give whole seconds")
    value = int(text)
    if value <= 0:
        raise ValueError(f"must be at least 1 second, got {value}")
    if value > MAX_TTL:
        raise ValueError(
            f"must be at most {MAX_TTL} seconds, the largest TTL Vault accepts, "
            f"got {text[:40]}{'...' if len(text) > 40 else ''}"
        )
    return value


def _kill_timeout(text: str) -> float:
    if not _is_decimal(text):
        raise ValueError(
            f"invalid number of seconds {text!r}: must be 0 to "
            f"{MAX_KILL_TIMEOUT:.0f} seconds, in digits"
        )
    value = float(text)
    if not 0 <= value <= MAX_KILL_TIMEOUT:
        raise ValueError(
            f"must be 0 to {MAX_KILL_TIMEOUT:.0f} seconds (one day), got {text}"
        )
    return value


OPTIONS = (
    _Option(("-h", "--help"), "help", "show this help message and exit"),
    _Option(
        ("--role",),
        "append",
        "role whose credentials COMMAND gets: database/NAME, aws/NAME, or a "
        "bare NAME looked up on both; repeat for one database and one AWS role",
        metavar="NAME",
    ),
    _Option(
        ("--attestor-socket",),
        "value",
        f"attestor's Unix socket (default: ${SOCKET_ENV}, else {DEFAULT_SOCKET_PATH})",
        metavar="PATH",
    ),
    _Option(
        ("--tool",),
        "value",
        "tool name to assert in the JWT (recorded as asserted, not checked)",
        metavar="TEXT",
    ),
    _Option(
        ("--on-behalf-of",),
        "value",
        "person or principal to assert in the JWT (recorded as asserted)",
        metavar="TEXT",
    ),
    _Option(
        ("--vault-addr",),
        "value",
        "Vault or OpenBao address, http(s)://HOST:PORT without a path "
        "(default: $VAULT_ADDR, else $BAO_ADDR)",
        metavar="URL",
    ),
    _Option(
        ("--auth-mount",),
        "value",
        "path of Vault's JWT auth mount; leading and trailing '/' are removed "
        "(default: jwt)",
        metavar="PATH",
    ),
    _Option(
        ("--mount",),
        "value",
        "path of the agent-bridge secrets mount; leading and trailing '/' are "
        "removed (default: agent-creds)",
        metavar="PATH",
    ),
    _Option(
        ("--ttl",),
        "value",
        "request a lease TTL this short, in seconds, 1 to 9223372036 "
        "(default: the role's)",
        metavar="SECONDS",
        convert=_ttl,
    ),
    _Option(
        ("--kill-timeout",),
        "value",
        "seconds between a forwarded SIGINT/SIGTERM/SIGHUP/SIGQUIT, or the "
        "command's exit, and SIGKILL to its process group, 0 to 86400 "
        "(default: 5)",
        metavar="SECONDS",
        convert=_kill_timeout,
    ),
    _Option(
        ("--json",),
        "flag",
        "print the call's audit record as one JSON line on stderr at the end",
    ),
    _Option(
        ("-v", "--verbose"),
        "count",
        "log progress on stderr; twice for debug detail",
    ),
)
COMMAND_METAVAR = "-- COMMAND [ARG ...]"
COMMAND_HELP = "the command to run, after --"


class _Parsed:
    """The values the command line set, before defaults and the environment apply."""

    def __init__(self) -> None:
        self.roles: list[str] = []
        self.strings: dict[str, str] = {}
        self.numbers: dict[str, int | float] = {}
        self.flags: set[str] = set()
        self.verbose = 0
        self.command: list[str] = []


def parse_options(argv: list[str] | None = None) -> Options:
    """Parse `argv` (default: `sys.argv[1:]`); raise `UsageError` if it is invalid.

    `--help` prints the help text and exits with status 0.
    """
    if argv is None:
        import sys

        argv = sys.argv[1:]
    parsed = _parse_argv(argv)
    if not parsed.roles:
        _usage_error("the following arguments are required: --role")
    if not parsed.command:
        raise UsageError(
            "no command given: put it after '--', e.g. -- psql -c 'select 1'"
        )
    # This rejects an invalid value, or two prefixed roles of one engine,
    # before the attestor is asked anything. `Call` parses the values again.
    parse_roles(parsed.roles)
    strings = parsed.strings
    for name in ("tool", "on_behalf_of"):
        if name in strings:
            _check_asserted(name, strings[name])

    for name, variable in (
        ("vault_addr", "VAULT_ADDR or BAO_ADDR"),
        ("attestor_socket", "AGENT_ATTESTOR_SOCKET"),
    ):
        # An empty value would otherwise fall back to the environment unseen.
        if strings.get(name) == "":
            option = "--" + name.replace("_", "-")
            _usage_error(
                f"argument {option}: empty value; give one, or leave {option} out "
                f"to use {variable}"
            )

    ttl = parsed.numbers.get("ttl")
    return Options(
        roles=parsed.roles,
        command=parsed.command,
        vault_addr=_vault_addr(strings.get("vault_addr", "")),
        attestor_socket=strings.get("attestor_socket") or default_socket_path(),
        namespace=_namespace(os.environ.get("VAULT_NAMESPACE", "")),
        tool=strings.get("tool"),
        on_behalf_of=strings.get("on_behalf_of"),
        auth_mount=_mount_path("--auth-mount", strings.get("auth_mount", "jwt")),
        mount=_mount_path("--mount", strings.get("mount", "agent-creds")),
        ttl=None if ttl is None else int(ttl),
        kill_timeout=float(parsed.numbers.get("kill_timeout", 5.0)),
        json="json" in parsed.flags,
        verbose=parsed.verbose,
    )


def _parse_argv(argv: list[str]) -> _Parsed:
    parsed = _Parsed()
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            parsed.command = argv[index:]
            break
        if not arg.startswith("-") or arg == "-":
            parsed.command = argv[index - 1 :]
            break
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            option = _long_option(name)
            if has_value and not option.takes_value:
                _usage_error(
                    f"argument {option.label}: ignored explicit argument {value!r}"
                )
            if option.takes_value and not has_value:
                value = _next_value(argv, index, option)
                index += 1
            _store(parsed, option, value)
            continue
        for option in _short_options(arg):
            _store(parsed, option, "")
    return parsed


def _long_option(name: str) -> _Option:
    for option in OPTIONS:
        if name in option.names:
            return option
    _usage_error(f"unrecognized arguments: {name}")


def _short_options(arg: str) -> list[_Option]:
    """Return the flags of a cluster such as `-vv`; values need a long option."""
    found = []
    for letter in arg[1:]:
        option = next((o for o in OPTIONS if f"-{letter}" in o.names), None)
        if option is None or option.takes_value:
            _usage_error(f"unrecognized arguments: {arg}")
        found.append(option)
    return found


def _next_value(argv: list[str], index: int, option: _Option) -> str:
    # As argparse does, a following option ends the value, but a negative
    # number such as `-1` is a value.
    if index >= len(argv) or (
        argv[index].startswith("-") and not _is_negative_number(argv[index])
    ):
        _usage_error(f"argument {option.label}: expected one argument")
    return argv[index]


def _is_negative_number(text: str) -> bool:
    whole, dot, fraction = text[1:].partition(".")
    if not dot:
        return whole.isdigit()
    return (not whole or whole.isdigit()) and fraction.isdigit()


def _store(parsed: _Parsed, option: _Option, value: str) -> None:
    if option.kind == "help":
        _print_help()
    elif option.kind == "flag":
        parsed.flags.add(option.dest)
    elif option.kind == "count":
        parsed.verbose += 1
    elif option.kind == "append":
        parsed.roles.append(value)
    elif option.convert is None:
        parsed.strings[option.dest] = value
    else:
        try:
            parsed.numbers[option.dest] = option.convert(value)
        except ValueError as err:
            _usage_error(f"argument {option.label}: {err}")


def _check_asserted(name: str, value: object) -> None:
    """Reject what the attestor would reject, before anything is sent.

    The attestor accepts 1 to MAX_ASSERTED_CHARS characters for which
    `str.isprintable` holds, so no tab, newline or other control character.
    An argument that is not valid UTF-8 reaches Python with each undecodable
    byte as a lone surrogate (PEP 383), which is not printable either.
    """
    if value is None:
        return
    text = str(value)
    option = "--" + name.replace("_", "-")
    if not text:
        raise UsageError(
            f"invalid {option} value '': give 1 to {MAX_ASSERTED_CHARS} printable "
            f"characters, or leave {option} out"
        )
    if any(_is_surrogate(char) for char in text):
        raise UsageError(
            f"invalid {option} value {_shown_value(text)}: it is not valid UTF-8 "
            f"({len(text)} characters); give UTF-8 text"
        )
    if len(text) > MAX_ASSERTED_CHARS:
        raise UsageError(
            f"invalid {option} value {_shown_value(text)}: it has {len(text)} "
            f"characters, and the attestor accepts at most {MAX_ASSERTED_CHARS}"
        )
    if not text.isprintable():
        raise UsageError(
            f"invalid {option} value {_shown_value(text)}: it contains a tab, "
            "newline or other non-printable character; give printable text only"
        )


def _is_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udfff"


def _shown_value(text: str) -> str:
    """Quote the first SHOWN_CHARS characters of `text` for a message.

    An undecodable byte of argv (a surrogate from 0xDC80 to 0xDCFF) is shown
    as \\xNN, and another non-printable character as repr() escapes it.
    """
    escaped = []
    for char in text[:SHOWN_CHARS]:
        if "\udc80" <= char <= "\udcff":
            escaped.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif char.isprintable():
            escaped.append(char)
        else:
            escaped.append(repr(char)[1:-1])
    cut = "..." if len(text) > SHOWN_CHARS else ""
    return "'" + "".join(escaped) + "'" + cut


def _vault_addr(option: str) -> str:
    """Return the first non-empty of --vault-addr, VAULT_ADDR and BAO_ADDR.

    BAO_ADDR is OpenBao's name for VAULT_ADDR.
    """
    sources = (
        ("--vault-addr", option),
        ("VAULT_ADDR", os.environ.get("VAULT_ADDR", "")),
        ("BAO_ADDR", os.environ.get("BAO_ADDR", "")),
    )
    source, vault_addr = next(
        ((name, value) for name, value in sources if value), ("", "")
    )
    if not vault_addr:
        raise UsageError(
            "no Vault address: pass --vault-addr, or set VAULT_ADDR or BAO_ADDR"
        )
    try:
        split_base_url(vault_addr)
        check_origin_only(vault_addr)
    except ValueError as err:
        raise UsageError(
            f"invalid Vault address {hide_userinfo(vault_addr)!r} in {source} "
            f"({err}): expected http://HOST:PORT or https://HOST:PORT"
        ) from err
    return vault_addr


def _mount_path(option: str, value: str) -> str:
    """Return `value` without its outer slashes; raise UsageError if it is invalid.

    A path is one or more segments of letters, digits, `-`, `_` and `.`,
    separated by single slashes, and no segment is `.` or `..`.
    """
    path = value.strip("/")
    segments = path.split("/")
    for segment in segments:
        if (
            not segment
            or segment in (".", "..")
            or not set(segment) <= MOUNT_CHARACTERS
        ):
            raise UsageError(
                f"invalid {option} value {value!r}: give a Vault mount path of "
                "ASCII letters, digits, '-', '_' and '.', with '/' between "
                "segments, e.g. jwt or team/agent-creds"
            )
    return path


def _usage_error(message: str) -> NoReturn:
    raise UsageError(f"{message}; see agent-exec --help")


def _print_help() -> NoReturn:
    import sys

    sys.stdout.write(format_help())
    sys.stdout.flush()
    raise SystemExit(0)


def format_help() -> str:
    """Return the `--help` text, laid out as argparse lays it out.

    The width follows argparse's rule: $COLUMNS, else the terminal on stdout,
    else 80 columns, minus 2.
    """
    import textwrap

    width = _terminal_columns() - 2
    entries = [(COMMAND_METAVAR, COMMAND_HELP)]
    lines = [f"usage: {USAGE}", "", DESCRIPTION, "positional arguments:"]
    lines += _help_entries(entries, width, textwrap.wrap)
    lines += ["", "options:"]
    lines += _help_entries([_invocation(o) for o in OPTIONS], width, textwrap.wrap)
    return "\n".join(lines) + "\n\n" + EPILOG


def _invocation(option: _Option) -> tuple[str, str]:
    if not option.metavar:
        return ", ".join(option.names), option.help
    return ", ".join(f"{name} {option.metavar}" for name in option.names), option.help


def _help_entries(
    entries: list[tuple[str, str]],
    width: int,
    wrap: Callable[[str, int], list[str]],
) -> list[str]:
    """Lay out `(invocation, help)` pairs with the help from column 24."""
    help_column = 24
    lines = []
    for invocation, text in entries:
        wrapped = wrap(text, max(width - help_column, 11))
        if len(invocation) <= help_column - 4:
            lines.append(f"  {invocation:<{help_column - 4}}  {wrapped[0]}")
            wrapped = wrapped[1:]
        else:
            lines.append(f"  {invocation}")
        lines += [" " * help_column + line for line in wrapped]
    return lines


def _terminal_columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            return os.get_terminal_size(1).columns  # stdout
        except (ValueError, OSError):
            return 80


def _namespace(value: str) -> str:
    """Return VAULT_NAMESPACE, or raise UsageError if it cannot be a header value.

    It is sent as the X-Vault-Namespace header: a CR or LF in it would add
    header lines to every request, the token-bearing ones included.
    """
    if value and not (value.isascii() and value.isprintable()):
        raise UsageError(
            f"invalid VAULT_NAMESPACE {value[:40]!r}: it contains a control or "
            "non-ASCII character; give the namespace path, e.g. team-a/agents"
        )
    return value
