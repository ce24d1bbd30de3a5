"""Path `aws/config/lease`: default and max lease TTL of iam_user credentials."""

from __future__ import annotations

import logging

from plugin.aws.config import LEASE_KEY, LeaseConfig, go_duration, save_lease
from plugin.framework import (
    Field,
    FieldData,
    FieldType,
    MissingFieldError,
    Path,
    load_entry,
)
from plugin.logical import Operation, Request, Response

logger = logging.getLogger(__name__)

LEASE_FIELDS = {
    "lease": Field(
        FieldType.DURATION,
        "Default lease TTL of iam_user credentials, such as 1h; required.",
    ),
    "lease_max": Field(
        FieldType.DURATION,
        "Max lease TTL of iam_user credentials, such as 24h; required.",
    ),
}

LEASE_HELP = """\
Sets the lease TTL and max TTL of iam_user credentials, as Vault's AWS engine
does; a role's default_ttl and max_ttl narrow them further. Until this is
written, the mount's default and max lease TTL apply. Read returns Go
durations such as 1h0m0s. STS credentials ignore it: their lease is the
session's real lifetime.
"""


def config_lease_paths() -> list[Path]:
    """Return the `aws/config/lease` path."""
    return [
        Path(
            pattern="aws/config/lease",
            fields=LEASE_FIELDS,
            operations={
                Operation.READ: _read,
                Operation.CREATE: _write,
                Operation.UPDATE: _write,
            },
            help_synopsis="Configure the lease TTLs of iam_user credentials.",
            help_description=LEASE_HELP,
        )
    ]


def _read(request: Request, data: FieldData) -> Response | None:
    lease = load_entry(request.storage, LEASE_KEY, LeaseConfig)
    if lease is None:
        return None
    return Response(
        data={
            "lease": go_duration(lease.lease),
            "lease_max": go_duration(lease.lease_max),
        }
    )


def _write(request: Request, data: FieldData) -> None:
    # Vault's engine requires both, and zero is a valid value of each.
    lease, has_lease = data.get_ok("lease")
    if not has_lease:
        raise MissingFieldError("lease", "give a duration such as 1h")
    lease_max, has_max = data.get_ok("lease_max")
    if not has_max:
        raise MissingFieldError("lease_max", "give a duration such as 24h")
    save_lease(request.storage, LeaseConfig(lease=lease, lease_max=lease_max))
    logger.info("lease config written: lease=%d lease_max=%d", lease, lease_max)
