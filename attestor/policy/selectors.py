"""Selectors: `kind:value` conditions on an attested process.

An agent lists selectors; a process is that agent when all of them match.
Path selectors take a glob on canonical paths: `*` and `?` stay within one
path component, `**` crosses components, `[...]` is a character class.

| kind            | matches                                                  |
|-----------------|----------------------------------------------------------|
| `uid`           | the process's uid (all of real, effective, saved, fs)     |
| `user`          | the user name of that uid                                |
| `gid`           | the process's effective gid                              |
| `path`          | the executable's canonical path                          |
| `sha256`        | the hash of the running executable image                 |
| `script_path`   | the script file an interpreter runs                      |
| `script_sha256` | the hash of that script file                             |
| `parent_path`   | the parent's executable or script path                   |
| `parent_sha256` | the hash of the parent's executable                      |
| `ancestor_path` | the executable or script path of any ancestor            |
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from attestor.inspection.process import AncestorInfo, ProcessInfo


class SelectorError(ValueError):
    """A selector string that cannot be parsed; the message gives the reason."""


_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Selector:
    """One parsed `kind:value` condition."""

    kind: str
    value: str
    _test: Callable[[ProcessInfo], bool] = field(compare=False, repr=False)

    def matches(self, process: ProcessInfo) -> bool:
        return self._test(process)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_selector(text: str) -> Selector:
    """Parse `kind:value`; raise SelectorError naming the problem."""
    kind, sep, value = text.partition(":")
    if not sep or not value:
        raise SelectorError(f"selector {text!r} must read kind:value, e.g. uid:1000")
    builder = _BUILDERS.get(kind)
    if builder is None:
        known = ", ".join(sorted(_BUILDERS))
        raise SelectorError(
            f"selector {text!r} has unknown kind {kind!r}; use one of {known}"
        )
    return Selector(kind, value, builder(value))


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a path glob; raise SelectorError unless it is absolute."""
    if not pattern.startswith("/"):
        raise SelectorError(f"path glob {pattern!r} must be absolute (start with /)")
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            parts.append(".*")
            index += 2
            continue
        if char == "*":
            parts.append("[^/]*")
        elif char == "?":
            parts.append("[^/]")
        elif char == "[" and (end := pattern.find("]", index + 2)) != -1:
            body = pattern[index + 1 : end]
            negate = body.startswith("!")
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            parts.append(f"[{'^' if negate else ''}{body}]")
            index = end
        else:
            parts.append(re.escape(char))
        index += 1
    return re.compile("".join(parts))


def _ancestor_paths(ancestor: AncestorInfo) -> list[str]:
    # An interpreted parent (a Python supervisor) is known by its script.
    paths = [ancestor.exe]
    if ancestor.script is not None and ancestor.script.kind == "file":
        paths.append(ancestor.script.path)
    return paths


def _uid(value: str) -> Callable[[ProcessInfo], bool]:
    number = _integer(value, "uid")
    return lambda process: process.uid == number


def _gid(value: str) -> Callable[[ProcessInfo], bool]:
    number = _integer(value, "gid")
    return lambda process: process.gid == number


def _user(value: str) -> Callable[[ProcessInfo], bool]:
    return lambda process: process.user == value


def _path(value: str) -> Callable[[ProcessInfo], bool]:
    glob = compile_glob(value)
    return lambda process: glob.fullmatch(process.exe) is not None


def _sha256(value: str) -> Callable[[ProcessInfo], bool]:
    digest = _hex_digest(value)
    return lambda process: process.exe_sha256 == digest


def _script_path(value: str) -> Callable[[ProcessInfo], bool]:
    glob = compile_glob(value)

    def test(process: ProcessInfo) -> bool:
        script = process.script
        return (
            script is not None
            and script.kind == "file"
            and glob.fullmatch(script.path) is not None
        )

    return test


def _script_sha256(value: str) -> Callable[[ProcessInfo], bool]:
    digest = _hex_digest(value)
    return lambda process: (
        process.script is not None and process.script.sha256 == digest
    )


def _parent_path(value: str) -> Callable[[ProcessInfo], bool]:
    glob = compile_glob(value)

    def test(process: ProcessInfo) -> bool:
        if not process.parents:
            return False
        return any(glob.fullmatch(path) for path in _ancestor_paths(process.parents[0]))

    return test


def _parent_sha256(value: str) -> Callable[[ProcessInfo], bool]:
    digest = _hex_digest(value)
    return lambda process: (
        bool(process.parents) and process.parents[0].exe_sha256 == digest
    )


def _ancestor_path(value: str) -> Callable[[ProcessInfo], bool]:
    glob = compile_glob(value)
    return lambda process: any(
        glob.fullmatch(path)
        for ancestor in process.parents
        for path in _ancestor_paths(ancestor)
    )


def _integer(value: str, kind: str) -> int:
    if not value.isdigit():
        raise SelectorError(
            f"selector {kind}:{value} needs a decimal number, e.g. {kind}:1000"
        )
    return int(value)


def _hex_digest(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise SelectorError(
            f"sha256 value {value!r} must be 64 lowercase hex digits, "
            "as sha256sum prints them"
        )
    return value


_BUILDERS: dict[str, Callable[[str], Callable[[ProcessInfo], bool]]] = {
    "uid": _uid,
    "user": _user,
    "gid": _gid,
    "path": _path,
    "sha256": _sha256,
    "script_path": _script_path,
    "script_sha256": _script_sha256,
    "parent_path": _parent_path,
    "parent_sha256": _parent_sha256,
    "ancestor_path": _ancestor_path,
}
