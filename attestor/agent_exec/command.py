"""Find the command to run before any credential is minted.

The lookup follows execvp(3) and the shell: a name with a slash is used as
given, any other name is searched in PATH. A file that exists but cannot be
executed is reported only if no later PATH entry has an executable one.
"""

from __future__ import annotations

import os
import stat

from attestor.agent_exec.errors import CommandNotExecutableError, CommandNotFoundError

# execvp(3)'s search path when PATH is unset.
DEFAULT_PATH = "/bin:/usr/bin"


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
    not_executable: CommandNotExecutableError | None = None
    for directory in search.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        try:
            return _check_file(candidate)
        except CommandNotFoundError:
            continue
        except CommandNotExecutableError as err:
            not_executable = not_executable or err
    if not_executable is not None:
        raise not_executable
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
    if not stat.S_ISREG(info.st_mode) or not os.access(path, os.X_OK):
        raise CommandNotExecutableError(
            f"cannot execute {path!r}: permission denied; "
            f"check its mode ({stat.filemode(info.st_mode)})"
        )
    return os.path.abspath(path)
