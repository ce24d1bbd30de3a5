"""Generated user names and passwords, and SCRAM verifiers of passwords.

User names use only `[a-z0-9_-]` and fit PostgreSQL's 63-byte identifier
limit, so `psql -U NAME` takes them verbatim. Passwords generated here use
letters, digits and `-_.`. A config's password policy may allow any
character, which is safe too, because statements quote every value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from plugin.database.config import DEFAULT_SCRAM_ITERATIONS, DatabaseConfig
from plugin.framework.templates import expand_template
from plugin.logical import SystemView

MAX_IDENTIFIER_BYTES = 63
PASSWORD_LENGTH = 32
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_."
_NAME_ALPHABET = string.ascii_lowercase + string.digits
_UNSAFE_NAME_CHARS = re.compile(r"[^a-z0-9_-]")


@dataclass(frozen=True)
class NameInputs:
    """Inputs of a generated user name."""

    agent: str
    role: str
    display_name: str = ""


def sanitize_name(text: str) -> str:
    """Lowercase `text` and replace characters outside `[a-z0-9_-]` with `-`."""
    return _UNSAFE_NAME_CHARS.sub("-", text.lower())


def random_suffix(length: int) -> str:
    """Return `length` random characters from `[a-z0-9]`."""
    return _random_text(length, _NAME_ALPHABET)


def default_username(inputs: NameInputs) -> str:
    """Return `v-AGENT-ROLE-RANDOM`, with agent and role cut to 20 characters each.

    Sixteen random characters (about 82 bits) make two names minted in the
    same second distinct; the whole name is at most 60 bytes.
    """
    agent = sanitize_name(inputs.agent)[:20].strip("-") or "agent"
    role = sanitize_name(inputs.role)[:20].strip("-") or "role"
    return f"v-{agent}-{role}-{random_suffix(16)}"


def render_username(template: str, inputs: NameInputs) -> str:
    """Render a Vault-style `username_template`, then make the result safe.

    Supported: `{{.Agent}}`, `{{.RoleName}}`, `{{.DisplayName}}`,
    `{{random N}}`, `{{unix_time}}`, `{{unix_time_millis}}`, `{{uuid}}`,
    piped through `truncate N`, `lowercase`, `uppercase` and
    `replace "old" "new"`. Raises ValueError for anything else. The result
    is lowercased, unsafe characters become `-`, and it is cut to 63 bytes.
    """
    if not template:
        return default_username(inputs)

    fields = {
        ".Agent": inputs.agent,
        ".RoleName": inputs.role,
        ".DisplayName": inputs.display_name,
    }
    expanded = expand_template(
        template, fields, max_count=MAX_IDENTIFIER_BYTES, random_text=random_suffix
    )
    rendered = sanitize_name(expanded)
    if not rendered:
        raise ValueError(f"username_template {template!r} renders an empty name")
    return rendered[:MAX_IDENTIFIER_BYTES]


def generate_config_password(config: DatabaseConfig, system: SystemView) -> str:
    """Generate a password for a new user or the admin user of `config`.

    With `password_policy` set, Vault generates it from that password policy,
    as Vault's database engine does. Otherwise `generate_password()` does.
    Raises PasswordPolicyError when Vault cannot use the policy.
    """
    if config.password_policy:
        return system.generate_password_from_policy(config.password_policy)
    return generate_password()


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """Return a random password with a lowercase letter, an uppercase letter,
    a digit and a `-`, for servers that enforce character classes."""
    required = (string.ascii_lowercase, string.ascii_uppercase, string.digits, "-")
    while True:
        password = _random_text(length)
        if all(any(c in group for c in password) for group in required):
            return password


def _random_text(length: int, alphabet: str = PASSWORD_ALPHABET) -> str:
    """Return `length` characters of `alphabet`, uniformly at random.

    One read of random bytes replaces a `secrets.choice` call per character,
    which cost a quarter of a millisecond per password. Bytes at or above
    the largest multiple of the alphabet's size that fits in a byte are
    dropped, so every character is equally likely.
    """
    limit = 256 - 256 % len(alphabet)
    chosen: list[str] = []
    while len(chosen) < length:
        for byte in secrets.token_bytes(2 * length):
            if byte < limit:
                chosen.append(alphabet[byte % len(alphabet)])
    return "".join(chosen[:length])


def scram_sha256_verifier(
    password: str,
    *,
    iterations: int = DEFAULT_SCRAM_ITERATIONS,
    salt: bytes | None = None,
) -> str:
    """Return PostgreSQL's SCRAM-SHA-256 verifier of `password` (RFC 5802, 7677).

    PostgreSQL stores a `PASSWORD` value in this format as given, so the
    plaintext never reaches the server. The password is prepared with
    `saslprep()` first, as libpq prepares it at login. `iterations` is the
    PBKDF2 round count, which clients repeat at each login.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    prepared = saslprep(password).encode()
    salted = hashlib.pbkdf2_hmac("sha256", prepared, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def saslprep(password: str) -> str:
    """Prepare `password` for SCRAM as PostgreSQL does (RFC 4013 SASLprep).

    This follows pg_saslprep() of PostgreSQL (src/common/saslprep.c), which
    libpq runs on the password at login. ASCII stays as it is. Otherwise
    non-ASCII spaces become spaces, characters "commonly mapped to nothing"
    are dropped and the result is NFKC-normalised. A password that SASLprep
    rejects (empty after mapping, prohibited or unassigned characters, or
    mixed text directions) is used unchanged. PostgreSQL runs these checks
    on the mapped text before normalising, and so does this function.
    """
    if password.isascii():
        return password
    import stringprep
    import unicodedata

    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in password
        if stringprep.in_table_c12(char) or not stringprep.in_table_b1(char)
    )
    if not mapped or any(_prohibited(char) for char in mapped):
        return password
    if any(stringprep.in_table_d1(char) for char in mapped):
        mixed = any(stringprep.in_table_d2(char) for char in mapped)
        ends = stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1])
        if mixed or not ends:
            return password
    return unicodedata.normalize("NFKC", mapped)


def _prohibited(char: str) -> bool:
    """Return whether SASLprep forbids `char`: tables C.1.2 to C.9, and A.1."""
    import stringprep

    return (
        stringprep.in_table_c12(char)
        or stringprep.in_table_c21_c22(char)
        or stringprep.in_table_c3(char)
        or stringprep.in_table_c4(char)
        or stringprep.in_table_c5(char)
        or stringprep.in_table_c6(char)
        or stringprep.in_table_c7(char)
        or stringprep.in_table_c8(char)
        or stringprep.in_table_c9(char)
        or stringprep.in_table_a1(char)
    )
