"""SQL text helpers: quoting, splitting and Vault-style statement templates.

Vault substitutes `{{name}}`, `{{username}}`, `{{password}}` and
`{{expiration}}` into user-written statements as raw text, so statements
written for Vault quote the placeholders themselves:
`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}'`. Here every
value is quoted by the substitution: a placeholder wrapped in double
quotes becomes a quoted identifier, one wrapped in single quotes a quoted
literal, and a bare one takes the kind of its placeholder. The result is
the same text Vault produces for safe values, and stays valid SQL for any
value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_PLACEHOLDER = re.compile(
    r"""(?P<quote>["']?)\{\{\s*(?P<key>name|username|password|expiration)\s*\}\}(?P=quote)"""
)
# Placeholders whose bare form is an identifier; the others are literals.
_IDENTIFIER_KEYS = frozenset({"name", "username"})
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def quote_identifier(value: str) -> str:
    """Quote `value` as a PostgreSQL identifier."""
    return '"' + value.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote `value` as a PostgreSQL string literal, as `quote_literal()` does."""
    escaped = value.replace("'", "''")
    if "\\" in value:
        # E'' strings read backslashes the same way whatever the server's
        # standard_conforming_strings setting.
        return "E'" + escaped.replace("\\", "\\\\") + "'"
    return "'" + escaped + "'"


def render(statement: str, values: Mapping[str, str]) -> str:
    """Substitute the placeholders of one statement with quoted values.

    `values` maps placeholder names (`name`, `password`, `expiration`) to
    their values; `username` is an alias of `name`. A placeholder with no
    value raises KeyError.
    """

    def substitute(found: re.Match[str]) -> str:
        key = found["key"]
        value = values["name" if key == "username" else key]
        quote = found["quote"]
        if quote == '"' or (not quote and key in _IDENTIFIER_KEYS):
            return quote_identifier(value)
        return quote_literal(value)

    return _PLACEHOLDER.sub(substitute, statement)


def uses_placeholder(statement: str, key: str) -> bool:
    """Return whether `statement` contains the placeholder `key`."""
    return any(found["key"] == key for found in _PLACEHOLDER.finditer(statement))


# Text written like a placeholder, known or not: `{{name}}`, `{{ nope }}`,
# `{{.Name}}`. Array literals such as '{{1,2},{3,4}}' do not match.
_PLACEHOLDER_LIKE = re.compile(r"\{\{\s*(?P<key>\.?[A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
PLACEHOLDERS = ("name", "username", "password", "expiration")


def find_invalid_placeholder(statements: list[str], allowed: Iterable[str]) -> str:
    """Return the first placeholder of `statements` outside `allowed`, or "".

    Placeholders are substituted inside quotes and dollar-quoted bodies too,
    so text of a placeholder's form counts as one wherever it is.
    """
    names = frozenset(allowed)
    for statement in statements:
        for found in _PLACEHOLDER_LIKE.finditer(statement):
            if found["key"] not in names:
                return found.group()
    return ""


def split_statements(statements: list[str]) -> list[str]:
    """Split each entry on `;` outside quotes, comments and dollar quotes.

    Vault splits on every `;`, which breaks `DO $$ ... $$` blocks; this
    split keeps them whole. Empty statements are dropped.
    """
    queries: list[str] = []
    for entry in statements:
        queries.extend(q.strip() for q in _split_one(entry) if q.strip())
    return queries


def _split_one(text: str) -> list[str]:
    parts, start, i = [], 0, 0
    while i < len(text):
        char = text[i]
        if char == ";":
            parts.append(text[start:i])
            start = i + 1
            i += 1
        elif char in "'\"":
            i = _skip_quoted(text, i, char)
        elif text.startswith("--", i):
            i = _skip_until(text, i, "\n")
        elif text.startswith("/*", i):
            i = _skip_until(text, i + 2, "*/")
        elif char == "$" and (tag := _DOLLAR_TAG.match(text, i)):
            i = _skip_until(text, tag.end(), tag.group())
        else:
            i += 1
    parts.append(text[start:])
    return parts


def _skip_quoted(text: str, i: int, quote: str) -> int:
    """Return the index after the quoted run starting at `i`."""
    i += 1
    while i < len(text):
        if text[i] == quote:
            # A doubled quote is an escaped quote inside the run.
            if text.startswith(quote, i + 1):
                i += 2
                continue
            return i + 1
        i += 1
    return i


def _skip_until(text: str, i: int, end: str) -> int:
    found = text.find(end, i)
    return len(text) if found < 0 else found + len(end)
