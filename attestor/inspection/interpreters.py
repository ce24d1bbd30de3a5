"""Find the script an interpreter process runs, from its command line.

The kernel records only the interpreter as a process's executable; the script
is the first operand on its command line. Each interpreter has its own option
syntax, so a small table lists the options that take a separate argument and
those that run inline code (then there is no script file).

A process can rewrite its own command line, so the script found here is what
the process claims to run, not something the kernel proves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ScriptRef:
    """The program of an interpreter: a file path, a module, or inline code."""

    kind: str  # "file", "module" or "inline"
    value: str  # the path as written on the command line, or the module name


@dataclass(frozen=True)
class _Syntax:
    takes_argument: frozenset[str]
    inline_code: frozenset[str]
    module: frozenset[str] = frozenset()
    file_option: frozenset[str] = frozenset()
    reads_stdin: frozenset[str] = frozenset()


_PYTHON = _Syntax(
    takes_argument=frozenset({"-W", "-X", "--check-hash-based-pycs"}),
    inline_code=frozenset({"-c"}),
    module=frozenset({"-m"}),
)
_SHELL = _Syntax(
    takes_argument=frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file"}),
    inline_code=frozenset({"-c"}),
    reads_stdin=frozenset({"-s"}),
)
_NODE = _Syntax(
    takes_argument=frozenset(
        {"-r", "--require", "--import", "--loader", "--conditions"}
    ),
    inline_code=frozenset({"-e", "--eval", "-p", "--print"}),
)
_PERL = _Syntax(
    takes_argument=frozenset({"-I", "-M", "-m"}), inline_code=frozenset({"-e", "-E"})
)
_RUBY = _Syntax(takes_argument=frozenset({"-I", "-r"}), inline_code=frozenset({"-e"}))
_PHP = _Syntax(
    takes_argument=frozenset({"-c", "-d", "-z"}),
    inline_code=frozenset({"-r", "-B", "-R", "-E"}),
    file_option=frozenset({"-f"}),
)
_GENERIC = _Syntax(takes_argument=frozenset(), inline_code=frozenset({"-e"}))

_INTERPRETERS: tuple[tuple[re.Pattern[str], _Syntax], ...] = (
    (re.compile(r"(python|pypy)[0-9.]*"), _PYTHON),
    (re.compile(r"(ba|da|z|k|mk|a)?sh|busybox"), _SHELL),
    (re.compile(r"node(js)?[0-9.]*|deno|bun"), _NODE),
    (re.compile(r"perl[0-9.]*"), _PERL),
    (re.compile(r"ruby[0-9.]*"), _RUBY),
    (re.compile(r"php[0-9.]*(-cli)?"), _PHP),
    (re.compile(r"lua(jit)?[0-9.]*|Rscript|tclsh[0-9.]*|awk|gawk|osascript"), _GENERIC),
)


def is_interpreter(exe_path: str) -> bool:
    return _syntax_for(exe_path) is not None


def find_script(exe_path: str, cmdline: list[str]) -> ScriptRef | None:
    """Return what the interpreter at `exe_path` runs, or None if it is not one.

    Returns None also for an interpreter reading its program from stdin.
    """
    syntax = _syntax_for(exe_path)
    if syntax is None:
        return None

    return _scan_arguments(iter(cmdline[1:]), syntax)


def _scan_arguments(args: Iterator[str], syntax: _Syntax) -> ScriptRef | None:
    for arg in args:
        if arg == "--" or not arg.startswith(("-", "+")):
            operand = next(args, None) if arg == "--" else arg
            return _file_operand(operand)

        option, attached = _split_option(arg, syntax)
        if option in syntax.inline_code:
            return ScriptRef("inline", "")
        if option in syntax.reads_stdin:
            return None
        if option in syntax.module or option in syntax.file_option:
            value = attached or next(args, "")
            kind = "module" if option in syntax.module else "file"
            return ScriptRef(kind, value) if value else None
        if option in syntax.takes_argument and not attached:
            next(args, None)
    return None


def _file_operand(operand: str | None) -> ScriptRef | None:
    # "-" as the operand means the program comes from stdin.
    if operand is None or operand == "-":
        return None
    return ScriptRef("file", operand)


def _syntax_for(exe_path: str) -> _Syntax | None:
    name = exe_path.rsplit("/", 1)[-1].removesuffix(" (deleted)")
    for pattern, syntax in _INTERPRETERS:
        if pattern.fullmatch(name):
            return syntax
    return None


def _special_options(syntax: _Syntax) -> frozenset[str]:
    return (
        syntax.takes_argument
        | syntax.inline_code
        | syntax.module
        | syntax.file_option
        | syntax.reads_stdin
    )


def _split_option(arg: str, syntax: _Syntax) -> tuple[str, str]:
    """Split `-Wignore` into ("-W", "ignore"); a long option keeps `=value`.

    A cluster of single-letter flags (`-uB`, `-xc`) is scanned letter by
    letter, so an option that takes a value or runs inline code counts even
    when it is not the first letter of the cluster.
    """
    if arg.startswith("--"):
        name, _, value = arg.partition("=")
        return name, value

    prefix = arg[0]
    for index, letter in enumerate(arg[1:], start=1):
        option = prefix + letter
        if option in _special_options(syntax):
            return option, arg[index + 1 :]
    return arg, ""
