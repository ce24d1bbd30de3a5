"""Revoke a call's leases and token, and check that each lease is gone.

Each lease is revoked synchronously, so Vault returns only after the secrets
engine dropped the database role or deleted the access key. A lookup then
confirms that Vault no longer tracks the lease. The token is revoked last,
which also revokes, asynchronously, any lease the list missed (one minted
just before an interruption). A credential whose revocation failed still
ends at its lease's expiry, which Vault enforces and retries on its own.
"""

from __future__ import annotations

from attestor.agent_exec.errors import ExecError
from attestor.agent_exec.logs import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from attestor.agent_exec.vault import VaultClient

log = get_logger(__name__)

FORBIDDEN = 403


class RevocationReport:
    """The outcome of revoking each lease and the token."""

    def __init__(self) -> None:
        self.revoked: list[str] = []
        self.failed: dict[str, str] = {}
        self.token_revoked = False
        self.token_error = ""
        # revoke-self returned 403: the token was already revoked or expired,
        # and Vault revokes the token's leases with it.
        self.token_gone = False

    @property
    def ok(self) -> bool:
        return not self.failed and self.token_revoked

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "leases_revoked": self.revoked,
            "leases_failed": self.failed,
            "token_revoked": self.token_revoked,
            "token_error": self.token_error,
        }


def revoke_call(
    vault: VaultClient,
    lease_ids: list[str],
    *,
    meanwhile: Callable[[], None] | None = None,
) -> RevocationReport:
    """Revoke every lease, then the token; never raises on a Vault error.

    Each revocation is logged at info level. Failures go into the report and
    are not logged, because the caller prints each one once, with what it
    means for the credential. `meanwhile`
    runs while Vault handles the first request, unless that request cannot
    be sent.
    """
    report = RevocationReport()
    for lease_id in lease_ids:
        error = _revoke_lease(vault, lease_id, meanwhile)
        meanwhile = None
        if error:
            report.failed[lease_id] = error
        else:
            report.revoked.append(lease_id)
            log.info("revoked lease_id=%s", lease_id)

    try:
        vault.revoke_self(meanwhile=meanwhile)
        report.token_revoked = True
        log.info("revoked the call's token")
    except ExecError as err:
        report.token_error = str(err)
        report.token_gone = getattr(err, "status", 0) == FORBIDDEN
    return report


def _revoke_lease(
    vault: VaultClient, lease_id: str, meanwhile: Callable[[], None] | None
) -> str:
    """Return an empty string once the lease is gone, else the error."""
    try:
        vault.revoke_lease(lease_id, meanwhile=meanwhile)
        if vault.lease_exists(lease_id):
            return "Vault still lists the lease after a successful revoke"
    except ExecError as err:
        return str(err)
    return ""
