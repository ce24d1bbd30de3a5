"""The command's environment: agent-exec's own, scrubbed, plus the credentials.

Everything that could reach Vault, the attestor or another database or cloud
account is removed first, so the command gets only the credentials it
requested. The connection-security settings in `KEPT_DATABASE_SETTINGS`
and `KEPT_AWS_SETTINGS` contain no secret and name no account, so they are
kept for a call with a role of their engine. The variable names are the
ones libpq, psql and the AWS SDKs read.
"""

from __future__ import annotations

from attestor.agent_exec.errors import UnavailableError
from attestor.agent_exec.urls import quote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

# Prefixes and names removed from the inherited environment. BAO_* are
# OpenBao's spellings of VAULT_*; PG* and AWS_* would otherwise mix an
# inherited account with the minted one.
SCRUBBED_PREFIXES = ("VAULT_", "BAO_", "PG", "AWS_")
SCRUBBED_NAMES = frozenset({"AGENT_ATTESTOR_SOCKET", "DATABASE_URL"})

# libpq's TLS, GSSAPI-encryption and authentication requirements, and its
# connect timeout. Dropping them would let the command connect with less
# protection than the caller set, for example without verifying the server
# certificate. PGSSLCERT, PGSSLKEY, PGSSLPASSWORD, PGPASSFILE, PGSERVICE*
# and the account variables stay scrubbed, because they select or unlock
# another identity.
KEPT_DATABASE_SETTINGS = frozenset(
    {
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCRL",
        "PGSSLCRLDIR",
        "PGSSLSNI",
        "PGSSLMINPROTOCOLVERSION",
        "PGSSLMAXPROTOCOLVERSION",
        "PGSSLNEGOTIATION",
        "PGREQUIRESSL",
        "PGGSSENCMODE",
        "PGCHANNELBINDING",
        "PGREQUIREAUTH",
        "PGCONNECT_TIMEOUT",
    }
)
# The CA bundle that the AWS SDKs and CLI verify endpoints with.
KEPT_AWS_SETTINGS = frozenset({"AWS_CA_BUNDLE"})


def scrubbed_environ(environ: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in environ.items()
        if name not in SCRUBBED_NAMES and not name.startswith(SCRUBBED_PREFIXES)
    }


def child_environ(
    environ: Mapping[str, str], credentials: Sequence[tuple[str, Mapping[str, Any]]]
) -> dict[str, str]:
    """Return the command's environment for `(kind, creds data)` pairs.

    The settings of `KEPT_DATABASE_SETTINGS` or `KEPT_AWS_SETTINGS` are
    copied from `environ` only for a role of that engine.
    """
    env = scrubbed_environ(environ)
    for kind, data in credentials:
        if kind == "database":
            settings = _kept(environ, KEPT_DATABASE_SETTINGS)
            env.update(settings)
            env.update(database_environ(data, sslmode=settings.get("PGSSLMODE", "")))
        else:
            env.update(_kept(environ, KEPT_AWS_SETTINGS))
            env.update(aws_environ(data))
    return env


def _kept(environ: Mapping[str, str], names: frozenset[str]) -> dict[str, str]:
    return {name: environ[name] for name in names if name in environ}


def database_environ(data: Mapping[str, Any], *, sslmode: str = "") -> dict[str, str]:
    """Map a database creds response to libpq's variables and DATABASE_URL.

    A non-empty `sslmode` is added to DATABASE_URL as its `sslmode`
    parameter, for drivers that read only the URL.
    """
    username = _field(data, "username", "database")
    password = _field(data, "password", "database")
    host = _field(data, "host", "database")
    port = str(_field(data, "port", "database"))
    database = _field(data, "database", "database")

    # An IPv6 address needs brackets in a URL; PGHOST takes it bare.
    url_host = f"[{host}]" if ":" in host else host
    url = (
        f"postgresql://{quote(username, safe='')}:{quote(password, safe='')}"
        f"@{url_host}:{port}/{quote(database, safe='')}"
    )
    if sslmode:
        url += f"?sslmode={quote(sslmode, safe='')}"
    return {
        "PGHOST": host,
        "PGPORT": port,
        "PGUSER": username,
        "PGPASSWORD": password,
        "PGDATABASE": database,
        "DATABASE_URL": url,
    }


def aws_environ(data: Mapping[str, Any]) -> dict[str, str]:
    """Map an AWS creds response (Vault's AWS engine fields) to the SDK variables."""
    env = {
        "AWS_ACCESS_KEY_ID": _field(data, "access_key", "aws"),
        "AWS_SECRET_ACCESS_KEY": _field(data, "secret_key", "aws"),
    }
    optional = {
        "AWS_SESSION_TOKEN": "session_token",
        "AWS_REGION": "region",
        "AWS_ENDPOINT_URL": "endpoint_url",
    }
    for variable, key in optional.items():
        if data.get(key):
            env[variable] = str(data[key])
    # botocore (boto3) reads the region from AWS_DEFAULT_REGION only.
    if "AWS_REGION" in env:
        env["AWS_DEFAULT_REGION"] = env["AWS_REGION"]
    return env


def _field(data: Mapping[str, Any], key: str, kind: str) -> str:
    value = data.get(key)
    if value is None or value == "":
        raise UnavailableError(
            f"the {kind} creds response has no {key!r} field; the agent-bridge "
            "plugin on this mount may be older than this agent-exec"
        )
    return str(value)
