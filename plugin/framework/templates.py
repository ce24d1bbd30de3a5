"""Vault-style `username_template` expansion, shared by the backends.

A template mixes text with actions such as `{{.RoleName | truncate 8}}`:
a value (a field, `random N`, `unix_time`, `unix_time_millis`, `uuid`)
piped through filters (`truncate N`, `lowercase`, `uppercase`,
`replace "old" "new"`). Each backend supplies its fields and then makes the
expanded text safe for its own naming rules.
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from collections.abc import Callable, Mapping

_ACTION = re.compile(r"\{\{(.*?)\}\}")


def expand_template(
    template: str,
    fields: Mapping[str, str],
    *,
    max_count: int,
    random_text: Callable[[int], str],
) -> str:
    """Expand every action of `template`; raise ValueError for an unsupported one.

    `fields` maps names such as `.Agent` to their values, `max_count` bounds
    the N of `random N` and `truncate N`, and `random_text(n)` returns n
    random characters.
    """

    def count(word: str) -> int:
        if not word.isdigit() or not 0 < int(word) <= max_count:
            raise ValueError(f"expected a count from 1 to {max_count}, not {word!r}")
        return int(word)

    def value_of(expression: str) -> str:
        words = shlex.split(expression)
        if len(words) == 1 and words[0] in fields:
            return fields[words[0]]
        functions: dict[str, Callable[[], str]] = {
            "unix_time": lambda: str(int(time.time())),
            "unix_time_millis": lambda: str(int(time.time() * 1000)),
            "uuid": lambda: str(uuid.uuid4()),
        }
        if len(words) == 1 and words[0] in functions:
            return functions[words[0]]()
        if len(words) == 2 and words[0] == "random":
            return random_text(count(words[1]))
        raise ValueError(f"unsupported username_template expression {expression!r}")

    def apply_filter(stage: str, value: str) -> str:
        words = shlex.split(stage)
        if words == ["lowercase"]:
            return value.lower()
        if words == ["uppercase"]:
            return value.upper()
        if len(words) == 2 and words[0] == "truncate":
            return value[: count(words[1])]
        if len(words) == 3 and words[0] == "replace":
            return value.replace(words[1], words[2])
        raise ValueError(f"unsupported username_template filter {stage!r}")

    def action(found: re.Match[str]) -> str:
        stages = [stage.strip() for stage in found.group(1).split("|")]
        value = value_of(stages[0])
        for stage in stages[1:]:
            value = apply_filter(stage, value)
        return value

    check_delimiters(template)
    return _ACTION.sub(action, template)


def check_delimiters(template: str) -> None:
    """Raise ValueError when a `{{` of `template` starts no complete action.

    Go's text/template, which Vault uses, rejects such a template as an
    unclosed action. A `}}` outside an action is text in Go, and here too.
    """
    literal = _ACTION.sub(lambda found: " " * len(found.group()), template)
    offset = literal.find("{{")
    if offset >= 0:
        raise ValueError(
            f"unclosed action at offset {offset}: each {{{{ needs a closing }}}}, "
            "as in {{.RoleName}}"
        )
