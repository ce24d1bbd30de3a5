"""Secret types: what a backend leases out, and how it renews and revokes it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plugin.logical import LeaseOptions, Request, Response, Secret

SecretHandler = Callable[[Request], Response | None]

# The key Vault's framework uses in `internal_data` to find the secret type.
SECRET_TYPE_KEY = "secret_type"  # noqa: S105 (a key name, not a secret)


@dataclass(frozen=True)
class SecretType:
    """One kind of leased secret, such as database credentials.

    `renew` may be None for secrets that cannot be extended; a renew
    request for them then fails with a 400.
    """

    name: str
    revoke: SecretHandler
    renew: SecretHandler | None = None

    def response(
        self,
        data: dict[str, Any],
        internal_data: dict[str, Any],
        *,
        ttl: int,
        max_ttl: int,
    ) -> Response:
        """Build a response that leases `data` with this secret type."""
        internal = {**internal_data, SECRET_TYPE_KEY: self.name}
        lease = LeaseOptions(
            ttl=ttl,
            max_ttl=max_ttl,
            renewable=self.renew is not None,
            issue_time=time.time(),
        )
        return Response(data=data, secret=Secret(lease=lease, internal_data=internal))


def renewed(request: Request, ttl: int) -> Response:
    """Build the response of a successful renew: the same secret, a new TTL."""
    if request.secret is None:
        raise ValueError("a renew request always carries its secret")
    old = request.secret.lease
    lease = LeaseOptions(
        ttl=ttl,
        max_ttl=old.max_ttl,
        renewable=True,
        increment=old.increment,
        issue_time=old.issue_time,
    )
    secret = Secret(
        lease=lease,
        internal_data=dict(request.secret.internal_data),
        lease_id=request.secret.lease_id,
    )
    return Response(secret=secret)
