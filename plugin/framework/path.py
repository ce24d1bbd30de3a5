"""Paths: a URL pattern with its fields, operation handlers and help."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plugin.framework.field_data import FieldData
from plugin.framework.fields import Field
from plugin.logical import Operation, Request, Response

Handler = Callable[[Request, FieldData], Response | None]
ExistenceCheck = Callable[[Request, FieldData], bool]

# The character class of Vault's `framework.GenericNameRegex`.
NAME_PATTERN = r"\w(([\w.-]+)?\w)?"


def name_group(group: str) -> str:
    """Return a named regex group matching a Vault-style object name."""
    return f"(?P<{group}>{NAME_PATTERN})"


@dataclass
class Path:
    """One route of a backend.

    `pattern` is a regular expression, anchored at both ends when the
    backend compiles it; its named groups become fields of the request.
    `existence_check` decides whether Vault treats a write as a create or an update.
    """

    pattern: str
    fields: Mapping[str, Field] = field(default_factory=dict)
    operations: Mapping[Operation, Handler] = field(default_factory=dict)
    existence_check: ExistenceCheck | None = None
    help_synopsis: str = ""
    help_description: str = ""
    regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        anchored = self.pattern
        if not anchored.startswith("^"):
            anchored = "^" + anchored
        if not anchored.endswith("$"):
            anchored = anchored + "$"
        self.pattern = anchored
        # As in Go's regexp, which Vault's own backends match paths with:
        # `\w` and `\d` are ASCII only, and `$` does not match before a
        # trailing newline (Python's `match` would route "roles/x\n" to "x").
        self.regex = re.compile(anchored, re.ASCII)

    def match(self, path: str) -> dict[str, str] | None:
        """Return the named captures when `path` matches, else None."""
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return {k: v for k, v in found.groupdict().items() if v is not None}

    def field_data(self, request: Request, captures: Mapping[str, str]) -> FieldData:
        """Parse the request's data and the path captures against the fields."""
        return FieldData(self.fields, request.data, captures)

    def help_response(self, request_path: str) -> Response:
        """Build the response of a `help` request, as Vault's framework does."""
        return help_response(render_path_help(self, request_path))


def render_path_help(path: Path, request_path: str) -> str:
    """Render a path's help text in the layout of Vault's `path-help`."""
    lines = [
        f"Request:        {request_path}",
        f"Matching Route: {path.pattern}",
        "",
        path.help_synopsis.strip() or "<no synopsis>",
        "",
    ]
    if path.fields:
        lines += ["## PARAMETERS", ""]
        for name in sorted(path.fields):
            schema = path.fields[name]
            lines.append(f"    {name} ({schema.type.value})")
            lines.append("")
            lines.append(_indent(schema.description.strip() or "<no description>"))
            lines.append("")
    lines += ["## DESCRIPTION", ""]
    lines.append(path.help_description.strip() or "<no description>")
    return "\n".join(lines) + "\n"


def help_response(text: str) -> Response:
    """Wrap help text the way `logical.HelpResponse` does; the CLI reads `help`."""
    data: dict[str, Any] = {"help": text, "see_also": []}
    return Response(data=data)


def _indent(text: str) -> str:
    wrapped = textwrap.fill(text, width=72)
    return textwrap.indent(wrapped, " " * 8)
