"""Generated IAM user names and STS session names.

IAM user names allow `[A-Za-z0-9+=,.@_-]` and at most 64 characters; STS
role session names allow the same characters. Agent and role names pass
through `sanitize`, so any agent name yields a valid IAM name.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import string
from dataclasses import dataclass

from plugin.framework.templates import expand_template

MAX_USERNAME = 64
MAX_SESSION_NAME = 64
MAX_FEDERATION_NAME = 32
RANDOM_LENGTH = 16
_ALPHABET = string.ascii_lowercase + string.digits
_UNSAFE = re.compile(r"[^A-Za-z0-9+=,.@_-]")


@dataclass(frozen=True)
class NameInputs:
    """Inputs of a generated name. `kind` is `IAM` or `STS`, as in Vault."""

    agent: str
    role: str
    display_name: str = ""
    kind: str = "IAM"


def sanitize(text: str) -> str:
    """Replace characters IAM names reject with `_`, as Vault's engine does."""
    return _UNSAFE.sub("_", text)


def random_suffix(length: int = RANDOM_LENGTH) -> str:
    """Return `length` random characters from `[a-z0-9]`."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def default_name(inputs: NameInputs) -> str:
    """Return `ab-AGENT-ROLE-RANDOM`, with agent and role cut to 20 characters.

    Sixteen random characters (about 82 bits) keep concurrent names
    distinct, and the whole name has at most 61 characters. STS federation
    names allow only 32, so for kind `STS` the role is left out and the
    agent cut to 12 characters.
    """
    agent = sanitize(inputs.agent)[:20] or "agent"
    if inputs.kind == "STS":
        return f"ab-{agent[:12]}-{random_suffix()}"
    role = sanitize(inputs.role)[:20] or "role"
    return f"ab-{agent}-{role}-{random_suffix()}"


def render_name(template: str, inputs: NameInputs, limit: int = MAX_USERNAME) -> str:
    """Render a `username_template`, or the default name when it is empty.

    Supported: `{{.Agent}}`, `{{.RoleName}}` (also `{{.PolicyName}}`, Vault's
    name for it), `{{.DisplayName}}`, `{{.Type}}`, `{{random N}}`,
    `{{unix_time}}`, `{{unix_time_millis}}`, `{{uuid}}`, piped through
    `truncate N`, `lowercase`, `uppercase` and `replace "old" "new"`.
    Raises ValueError for anything else, and for a result longer than
    `limit`, as Vault does, instead of silently cutting a unique suffix.
    """
    if not template:
        return default_name(inputs)[:limit]

    fields = {
        ".Agent": sanitize(inputs.agent),
        ".RoleName": sanitize(inputs.role),
        ".PolicyName": sanitize(inputs.role),
        ".DisplayName": sanitize(inputs.display_name),
        ".Type": sanitize(inputs.kind),
    }
    expanded = expand_template(
        template, fields, max_count=MAX_USERNAME, random_text=random_suffix
    )
    rendered = sanitize(expanded)
    if not rendered:
        raise ValueError(f"username_template {template!r} renders an empty name")
    if len(rendered) > limit:
        raise ValueError(
            f"username_template {template!r} renders {len(rendered)} characters; "
            f"AWS allows at most {limit}: add `| truncate N` to the long parts"
        )
    return rendered


def session_name(requested: str, template: str, inputs: NameInputs) -> str:
    """Return the role session name: `ab-AGENT@REQUESTED`, else a generated one.

    The caller's value is only a suffix, so no agent can take another's
    session name. Both parts have `@` replaced by `_`, so the one `@`
    ends the agent part. Raises ValueError when the name would exceed 64
    characters.

    NOTE: agents whose names differ only in characters that become `_`
    (`@`, spaces, and others AWS rejects) get the same agent part.
    """
    agent = sanitize(inputs.agent).replace("@", "_")
    if not requested:
        escaped = dataclasses.replace(inputs, agent=agent)
        return render_name(template, escaped, MAX_SESSION_NAME)
    prefix = f"ab-{agent}@"
    suffix = sanitize(requested).replace("@", "_")
    if len(prefix) + len(suffix) > MAX_SESSION_NAME:
        room = max(MAX_SESSION_NAME - len(prefix), 0)
        raise ValueError(
            f"invalid role_session_name {requested!r}: the session name is "
            f"{prefix!r} plus role_session_name, and AWS allows at most "
            f"{MAX_SESSION_NAME} characters of [A-Za-z0-9+=,.@_-], so it must be "
            f"at most {room} characters long, or left out for a generated name"
        )
    return prefix + suffix
