"""Path `aws/config/root`: the credentials and endpoints the plugin uses."""

from __future__ import annotations

import dataclasses
import logging
from urllib.parse import urlparse

from plugin.aws.backend import AwsBackend
from plugin.aws.config import RootConfig, load_root, save_root
from plugin.aws.errors import InvalidConfigError
from plugin.aws.usernames import NameInputs, render_name
from plugin.framework import Field, FieldData, FieldType, Path
from plugin.logical import Operation, Request, Response

logger = logging.getLogger(__name__)

S = FieldType.STRING

ROOT_FIELDS = {
    "access_key": Field(
        S, "Access key ID of the IAM user the plugin acts as; default empty."
    ),
    "secret_key": Field(
        S, "Secret access key, never returned on read; default empty.", sensitive=True
    ),
    "region": Field(
        S, "Region of API calls; default AWS_REGION of the host, else us-east-1."
    ),
    "iam_endpoint": Field(S, "Custom IAM endpoint URL; default empty: AWS's own."),
    "sts_endpoint": Field(S, "Custom STS endpoint URL; default empty: AWS's own."),
    "max_retries": Field(
        FieldType.INT,
        "Retries of a failed AWS call; default -1, meaning the SDK's default.",
        default=-1,
    ),
    "username_template": Field(
        S, "Template of generated IAM user names; default ab-AGENT-ROLE-RANDOM."
    ),
    "endpoint_url": Field(
        S,
        "Endpoint URL returned with credentials, for holders that must reach a "
        "non-AWS endpoint; default empty: the IAM endpoint when IAM and STS share "
        "one custom endpoint, else none.",
    ),
    "key_ready_timeout": Field(
        FieldType.DURATION,
        "How long a creds read waits for a new access key to authenticate; "
        "0 disables the wait; default 30s.",
    ),
}

ROOT_HELP = """\
Stores the credentials the plugin calls IAM and STS with. They need the
permissions to manage IAM users, their keys and policies, and to assume the
IAM roles of assumed_role roles. Empty keys use the default credential chain
of the Vault host. Writing keeps the stored values of fields the request
leaves out, and a read never returns the secret key. Rotate the key with
aws/config/rotate-root.
"""


def config_root_paths(backend: AwsBackend) -> list[Path]:
    """Return the `aws/config/root` path."""

    def read(request: Request, data: FieldData) -> Response | None:
        config = load_root(request.storage)
        return None if config is None else Response(data=config.to_response())

    def write(request: Request, data: FieldData) -> None:
        with backend.write_lock:
            stored = load_root(request.storage)
            config = merge_root(stored, data)
            validate_root(config)
            save_root(request.storage, config)
            backend.reset_clients()
        logger.info(
            "root config written: access_key=%s region=%s iam_endpoint=%s",
            config.access_key,
            config.effective_region(),
            config.iam_endpoint,
        )

    return [
        Path(
            pattern="aws/config/root",
            fields=ROOT_FIELDS,
            operations={
                Operation.READ: read,
                Operation.CREATE: write,
                Operation.UPDATE: write,
            },
            help_synopsis="Configure the credentials that manage IAM.",
            help_description=ROOT_HELP,
        )
    ]


def merge_root(stored: RootConfig | None, data: FieldData) -> RootConfig:
    """Return `stored` updated with the request's fields, or a new config."""
    config = dataclasses.replace(stored) if stored else RootConfig()
    new_key, key_given = data.get_ok("access_key")
    _, secret_given = data.get_ok("secret_key")
    if key_given and new_key != config.access_key and not secret_given:
        raise InvalidConfigError(
            f"access_key {new_key!r} is given without secret_key: send both keys "
            "of the new pair"
        )
    for name in ROOT_FIELDS:
        value, present = data.get_ok(name)
        if present:
            setattr(config, name, value)
    if data.is_null("max_retries"):
        # hvac's configure_root_iam_credentials always sends max_retries,
        # null when the caller gives none. Vault stores that null as 0, which
        # turns off the SDK's retries. Here it keeps the stored value, or -1.
        config.max_retries = (stored or RootConfig()).max_retries
    return config


def validate_root(config: RootConfig) -> None:
    """Raise InvalidConfigError for a config the plugin cannot use."""
    if bool(config.access_key) != bool(config.secret_key):
        raise InvalidConfigError(
            "access_key and secret_key must be set together, or both left empty "
            "to use the default credential chain of the Vault host"
        )
    for name in ("iam_endpoint", "sts_endpoint", "endpoint_url"):
        url = getattr(config, name)
        parsed = urlparse(url)
        if url and (parsed.scheme not in ("http", "https") or not parsed.netloc):
            raise InvalidConfigError(
                f"invalid {name} {url!r}: expected an http or https URL such as "
                "https://iam.amazonaws.com"
            )
    if config.max_retries < -1:
        raise InvalidConfigError(
            f"invalid max_retries {config.max_retries}: use -1 for the SDK's "
            "default, or a count from 0"
        )
    try:
        render_name(config.username_template, NameInputs("agent", "role", "jwt-a"))
    except ValueError as err:
        raise InvalidConfigError(f"invalid username_template: {err}") from err
