"""Exit codes and errors of `agent-exec`.

Codes before the command runs follow sysexits.h, 126 and 127 follow the shell,
and 128+N reports a command killed by signal N, as shells do. The command's
own exit code passes through unchanged, so a caller can tell agent-exec's
codes apart from the command's only by the message on stderr or by the audit
record (`--json`).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType


def printable(text: str) -> str:
    """Return `text` with each non-printable character escaped as repr() does.

    Messages name values from options, the environment and servers, and a
    terminal would otherwise act on their control sequences.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class ExitCode:
    """Exit codes that agent-exec itself chooses.

    Plain integers, not an `enum.IntEnum`: `enum` and the modules it imports
    add about 3 ms to every call's start-up (Python 3.11, see "Start-up
    cost" in docs/agent-exec.md).
    """

    USAGE = 64  # invalid option, ambiguous or duplicate role, Vault 400 (EX_USAGE)
    UNAVAILABLE = 69  # attestor or Vault unreachable or failing (EX_UNAVAILABLE)
    INTERNAL = 70  # a bug in agent-exec (EX_SOFTWARE)
    DENIED = 77  # attestor, Vault login or role read rejected (EX_NOPERM)
    REVOKE_FAILED = 125  # a lease or the token outlives the call; wins over all
    NOT_EXECUTABLE = 126
    NOT_FOUND = 127


class ExecError(Exception):
    """An error that ends the call with `exit_code`; the message has no secret."""

    exit_code: int = ExitCode.INTERNAL


class UsageError(ExecError):
    exit_code = ExitCode.USAGE


class UnavailableError(ExecError):
    exit_code = ExitCode.UNAVAILABLE


class DeniedError(ExecError):
    exit_code = ExitCode.DENIED


class CommandNotFoundError(ExecError):
    exit_code = ExitCode.NOT_FOUND


class CommandNotExecutableError(ExecError):
    exit_code = ExitCode.NOT_EXECUTABLE


class InterruptedBySignalError(ExecError):
    """A terminating signal arrived before the command started."""

    def __init__(self, signum: int) -> None:
        from attestor.agent_exec.signals import name

        super().__init__(
            f"interrupted by signal {signum} ({name(signum)}) before the command "
            "started"
        )
        self.signum = signum


class suppress:  # noqa: N801 - named after contextlib.suppress, which it replaces
    """Ignore the given exceptions in a `with` block, as `contextlib.suppress` does.

    `contextlib` imports `collections` and `functools`, which add about
    2.5 ms to agent-exec's start-up (Python 3.11).
    """

    def __init__(self, *exceptions: type[BaseException]) -> None:
        self._exceptions = exceptions

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return kind is not None and issubclass(kind, self._exceptions)
