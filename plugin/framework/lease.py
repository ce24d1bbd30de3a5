"""Lease arithmetic shared by every secret type, in whole seconds."""

from __future__ import annotations

import time

from plugin.framework.errors import FrameworkError
from plugin.logical import BadRequestError, SystemView


def effective_ttls(
    system: SystemView, default_ttl: int, max_ttl: int
) -> tuple[int, int]:
    """Return the (ttl, max_ttl) a new lease gets.

    A zero `default_ttl` or `max_ttl` falls back to the mount's value; the
    max is capped by the mount's max, and the TTL by the max.
    """
    mount_max = system.max_lease_ttl()
    effective_max = max_ttl or mount_max
    if mount_max and effective_max > mount_max:
        effective_max = mount_max
    ttl = default_ttl or system.default_lease_ttl()
    if effective_max and ttl > effective_max:
        ttl = effective_max
    return ttl, effective_max


def extend_ttl(
    *, increment: int, default_ttl: int, max_ttl: int, issue_time: float
) -> int:
    """Return the TTL of a renewed lease, never past `issue_time + max_ttl`.

    `increment` is what the client asked for; zero means `default_ttl`.
    Raises BadRequestError when the lease already reached its max TTL.
    """
    if issue_time <= 0:
        raise FrameworkError("cannot renew a lease without its issue time")
    ttl = increment or default_ttl
    if max_ttl:
        remaining = int(issue_time + max_ttl - time.time())
        if remaining <= 0:
            raise BadRequestError(
                f"lease reached its max TTL of {max_ttl} s and cannot be renewed; "
                "read new credentials instead"
            )
        ttl = min(ttl, remaining) if ttl else remaining
    return ttl
