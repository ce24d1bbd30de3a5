"""Find the command to run before any credential is minted.

The lookup follows execvp(3) and the shell: a name with a slash is used as
given, any other name is searched in PATH. A file that exists but cannot be
executed is reported only if no later PATH entry has an executable one.
A script whose `#!` interpreter is missing counts as not found (127), as
in bash, and one whose interpreter is not executable as not executable.
"""

from __future__ import annotations

import os
import stat

from attestor.agent_exec.errors import CommandNotExecutableError, CommandNotFoundError

# execvp(3)'s search path when PATH is unset.
DEFAULT_PATH = "/bin:/usr/bin"
# Bytes of a script that Linux reads for its `#!` line (BINPRM_BUF_SIZE, 256
# since Linux 5.1).
SHEBANG_BYTES = 256


class InterpreterNotFoundError(CommandNotFoundError):
    """The command exists, but the interpreter on its `#!` line does not."""


def resolve_command(name: str, path: str | None = None) -> str:
    """Return the file that `execve` would run for `name`, as an absolute path.

    Raises `CommandNotFoundError` (exit 127) or `CommandNotExecutableError`
    (exit 126).
    """
    if not name:
        raise CommandNotFoundError("command not found: the command name is empty")
    if "/" in name:
        return _check_file(name)

    search = DEFAULT_PATH if path is None else path
    unusable: CommandNotExecutableError | InterpreterNotFoundError | None = None
    for directory in search.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        try:
            return _check_file(candidate)
        except (CommandNotExecutableError, InterpreterNotFoundError) as err:
            unusable = unusable or err
        except CommandNotFoundError:
            continue
    if unusable is not None:
        raise unusable
    raise CommandNotFoundError(
        f"command not found: {name!r} is in no directory of PATH={search!r}; "
        "check the spelling or give the full path"
    )


def _check_file(path: str) -> str:
    try:
        info = os.stat(path)
    except FileNotFoundError as err:
        raise CommandNotFoundError(
            f"command not found: {path!r} does not exist"
        ) from err
    except NotADirectoryError as err:
        raise CommandNotFoundError(
            f"command not found: {path!r}: {err.strerror}"
        ) from err
    except PermissionError as err:
        raise CommandNotExecutableError(
            f"cannot execute {path!r}: permission denied on a directory of the path"
        ) from err

    if stat.S_ISDIR(info.st_mode):
        raise CommandNotExecutableError(f"cannot execute {path!r}: it is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise CommandNotExecutableError(
            f"cannot execute {path!r}: it is not a regular file "
            f"({stat.filemode(info.st_mode)})"
        )
    if not os.access(path, os.X_OK):
        raise CommandNotExecutableError(
            f"cannot execute {path!r}: permission denied; "
            f"check its mode ({stat.filemode(info.st_mode)})"
        )
    _check_interpreter(path)
    return os.path.abspath(path)


def _check_interpreter(path: str) -> None:
    """Raise if `path` starts with `#!` and names an interpreter execve cannot run.

    execve reports a missing interpreter as ENOENT on the script itself, an
    error that would name a file that exists, and only after the credentials
    were minted. A script that this process cannot read is left to execve.
    """
    try:
        with open(path, "rb") as script:
            head = script.read(SHEBANG_BYTES)
    except OSError:
        return
    if not head.startswith(b"#!"):
        return
    # Linux takes the interpreter up to a space, tab, newline or NUL, so a
    # carriage return of a CRLF script is part of its name.
    line = head[2:].split(b"\n", 1)[0].split(b"\0", 1)[0].lstrip(b" \t")
    name = line.replace(b"\t", b" ").split(b" ", 1)[0]
    if not name:
        return  # execve fails with ENOEXEC, which names the script itself
    interpreter = os.fsdecode(name)
    try:
        info = os.stat(interpreter)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise InterpreterNotFoundError(
            f"cannot execute {path!r}: its interpreter {interpreter!r}, named on "
            f"its #! line, is not found ({err.strerror}); fix that line or "
            "install the interpreter"
        ) from err
    except OSError as err:
        raise CommandNotExecutableError(
            f"cannot execute {path!r}: its interpreter {interpreter!r}, named on "
            f"its #! line, cannot be read ({err.strerror})"
        ) from err
    if not stat.S_ISREG(info.st_mode) or not os.access(interpreter, os.X_OK):
        raise CommandNotExecutableError(
            f"cannot execute {path!r}: its interpreter {interpreter!r}, named on "
            f"its #! line, is not executable ({stat.filemode(info.st_mode)})"
        )
