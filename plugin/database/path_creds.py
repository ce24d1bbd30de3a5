"""Path `database/creds/<name>`: mint one PostgreSQL user for the calling agent."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from plugin.database.backend import DatabaseBackend
from plugin.database.config import DatabaseConfig, require_config
from plugin.database.credentials import (
    NameInputs,
    generate_config_password,
    render_username,
    scram_sha256_verifier,
)
from plugin.database.creds_access import AccessCheck
from plugin.database.errors import RequestCancelledError
from plugin.database.leases import (
    LiveRecord,
    completion_key,
    forget_live,
    record_live,
)
from plugin.database.postgres import create_user, revoke_user
from plugin.database.roles import RoleEntry
from plugin.database.rollback import WAL_KIND_CREDS, created_here
from plugin.database.secret_creds import expiration_text
from plugin.framework import (
    Field,
    FieldData,
    FieldType,
    Path,
    SecretType,
    delete_wal,
    effective_ttls,
    name_group,
    put_wal,
)
from plugin.identity import Caller
from plugin.logical import (
    LogicalError,
    Operation,
    Request,
    Response,
    Storage,
    SystemView,
)

logger = logging.getLogger(__name__)

# Up to this many PBKDF2 rounds, a verifier is computed on the request thread.
_INLINE_SCRAM_ITERATIONS = 64


@dataclass(frozen=True)
class Mint:
    """One credential being minted: who for, and from what."""

    role_name: str
    role: RoleEntry
    db_name: str
    config: DatabaseConfig
    caller: Caller
    username: str
    ttl: int
    max_ttl: int
    conninfo: dict[str, Any]  # the config's connection parameters, parsed once


CREDS_FIELDS = {
    "name": Field(FieldType.STRING, "Name of the role; no default."),
    # An extension: Vault's database engine has no such field. Vault's AWS
    # engine has one on aws/creds, so agent-exec --ttl works for both engines.
    "ttl": Field(
        FieldType.DURATION,
        "Requested lease TTL (extension); a value above the role's max_ttl or "
        "the mount's max lease TTL is capped to it, not rejected; default 0, "
        "meaning the role's default_ttl, else the mount's default lease TTL.",
    ),
}


def creds_paths(backend: DatabaseBackend, secret: SecretType) -> list[Path]:
    """Return the creds path; `secret` is the type its leases get."""
    handler = _CredsHandler(backend, secret)
    return [
        Path(
            pattern="database/creds/" + name_group("name"),
            fields=CREDS_FIELDS,
            operations={Operation.READ: handler.read},
            help_synopsis="Create a PostgreSQL user for the calling agent.",
            help_description=(
                "Checks that the caller's agent name matches the role's "
                "allowed_agents, creates a user with the role's creation "
                "statements and leases it. The response contains username, "
                "password, host, port and database. The optional ttl (an "
                "extension of Vault's API) requests a shorter lease."
            ),
        )
    ]


class _CredsHandler:
    def __init__(self, backend: DatabaseBackend, secret: SecretType) -> None:
        self.backend = backend
        self.secret = secret
        self.access = AccessCheck(backend)

    def read(self, request: Request, data: FieldData) -> Response:
        role_name = data.get("name")
        role, config, caller = self.access.check(request, role_name)
        ttl, max_ttl = lease_ttls(self.backend.system, role, data.get("ttl"))
        inputs = NameInputs(caller.agent, role_name, request.display_name)
        mint = Mint(
            role_name=role_name,
            role=role,
            db_name=role.db_name,
            config=config,
            caller=caller,
            username=render_username(config.username_template, inputs),
            ttl=ttl,
            max_ttl=max_ttl,
            conninfo=config.conninfo(),
        )
        with self.backend.minting(mint.db_name):
            # A config delete that finished after the check above also
            # dropped the config from the storage cache, so this read fails.
            require_config(request.storage, mint.db_name)
            return self._mint(request, mint)

    def _mint(self, request: Request, mint: Mint) -> Response:
        password = generate_config_password(mint.config, self.backend.system)
        secret = self._password_value(mint, password)
        issued = time.time()
        # The WAL entry is written while PostgreSQL runs the creation
        # statements, and the transaction commits only once the entry is
        # stored. A crash before the commit leaves no user; after it, the
        # periodic rollback finds the entry and drops the user.
        wal = self.backend.submit(
            put_wal, request.storage, WAL_KIND_CREDS, _rollback_data(mint)
        )
        commit_sent = False

        def before_commit() -> None:
            nonlocal commit_sent
            wal.result()
            _raise_if_cancelled(request)
            commit_sent = True

        try:
            self._create(request, mint, secret.result(), issued, before_commit)
            # Vault cancels the request when its client goes away; a user
            # created for it would have no lease, so it is dropped now.
            _raise_if_cancelled(request)
        except LogicalError as err:
            logger.error(
                "create failed: role=%s agent=%s username=%s error=%s",
                mint.role_name,
                mint.caller.agent,
                mint.username,
                err,
            )
            if wal.exception() is None:
                self._clean_up_failed_mint(
                    request, mint, wal.result(), commit_sent=commit_sent
                )
            raise
        # The live record and the end of the WAL entry wait until after the
        # response. If the process dies before the record is written, the
        # rollback drops the user while its lease still runs: the credential
        # ends early, and the lease's revoke then finds no user, which is
        # success.
        self.backend.defer(
            _complete,
            request.storage,
            _live_record(request, mint, issued),
            wal.result(),
            key=completion_key(mint.db_name, mint.username),
        )
        return self._respond(request, mint, password)

    def _password_value(self, mint: Mint, password: str) -> Future[str]:
        """Return what {{password}} becomes: the password, or its SCRAM verifier.

        The default 4096 rounds of PBKDF2 take 0.76-0.9 ms on one AMD EPYC
        core (Python 3.11), so they run on an I/O thread while the WAL entry
        is written. A few rounds cost less than that hand-off.
        """
        iterations = mint.config.scram_iterations
        if mint.config.sends_verifier() and iterations > _INLINE_SCRAM_ITERATIONS:
            return self.backend.submit(_verifier, password, iterations)
        value: Future[str] = Future()
        if mint.config.sends_verifier():
            value.set_result(_verifier(password, iterations))
        else:
            value.set_result(password)
        return value

    def _create(
        self,
        request: Request,
        mint: Mint,
        password_value: str,
        issued: float,
        before_commit: Callable[[], object],
    ) -> None:
        # Vault's engine adds 5 s so the role outlives its lease slightly.
        values = {
            "name": mint.username,
            "password": password_value,
            "expiration": expiration_text(issued + mint.ttl + 5),
        }
        comment = {
            "db": mint.db_name,
            "role": mint.role_name,
            "agent": mint.caller.agent,
            "token_accessor": request.client_token_accessor,
            # Alias metadata is the agent's latest login: a concurrent call
            # of the same agent may have overwritten these two.
            "alias_tool": _metadata(mint.caller, "asserted_tool", "tool"),
            "alias_call_id": _metadata(mint.caller, "call_id", "jti"),
        }
        with self.backend.connection(mint.db_name, mint.config) as conn:
            create_user(
                conn, mint.role.creation_statements, values, comment, before_commit
            )

    def _respond(self, request: Request, mint: Mint, password: str) -> Response:
        logger.info(
            "credential issued: role=%s agent=%s username=%s token_accessor=%s "
            "ttl=%d max_ttl=%d",
            mint.role_name,
            mint.caller.agent,
            mint.username,
            request.client_token_accessor,
            mint.ttl,
            mint.max_ttl,
        )
        data = {
            "username": mint.username,
            "password": password,
            **mint.config.endpoint(mint.conninfo),
        }
        return self.secret.response(
            data,
            _internal_data(mint, request.client_token_accessor),
            ttl=mint.ttl,
            max_ttl=mint.max_ttl,
        )

    def _clean_up_failed_mint(
        self, request: Request, mint: Mint, wal_id: str, *, commit_sent: bool
    ) -> None:
        """Drop the user of a failed mint if it may exist, and delete its WAL entry.

        A failure before the COMMIT rolled the transaction back, so the user
        does not exist. A role of that name that exists then belongs to
        someone else, such as another lease whose name the username_template
        repeated, and is left alone.
        """
        if commit_sent:
            self._roll_back(request, mint, wal_id)
        else:
            delete_wal(request.storage, wal_id)

    def _roll_back(self, request: Request, mint: Mint, wal_id: str) -> None:
        try:
            with self.backend.connection(mint.db_name, mint.config) as conn:
                if not created_here(conn, mint.db_name, mint.username):
                    # The role lacks this config's comment, so the COMMIT did
                    # not take effect and someone else created the role since.
                    logger.warning(
                        "rollback left a role this plugin did not create for "
                        "the config: config=%s username=%s",
                        mint.db_name,
                        mint.username,
                    )
                    delete_wal(request.storage, wal_id)
                    return
                revoke_user(
                    conn,
                    mint.username,
                    statements=mint.role.rollback_statements,
                    owner_role=mint.config.owner_role,
                )
        except LogicalError as err:
            # The WAL entry stays; the periodic rollback retries.
            logger.warning(
                "rollback failed, retried later: username=%s error=%s",
                mint.username,
                err,
            )
            return
        forget_live(request.storage, mint.db_name, mint.username)
        delete_wal(request.storage, wal_id)


def _verifier(password: str, iterations: int) -> str:
    return scram_sha256_verifier(password, iterations=iterations)


def _raise_if_cancelled(request: Request) -> None:
    if request.is_cancelled():
        raise RequestCancelledError(
            "Vault cancelled the request (its client went away); the user is "
            "not handed out"
        )


def lease_ttls(system: SystemView, role: RoleEntry, requested: int) -> tuple[int, int]:
    """Return the (ttl, max_ttl) of a new lease of `role`.

    A non-zero `requested` TTL replaces the role's default, and is capped by
    the role's max_ttl and the mount's max lease TTL like the default is.
    """
    ttl, max_ttl = effective_ttls(system, role.default_ttl, role.max_ttl)
    if requested:
        ttl = min(requested, max_ttl) if max_ttl else requested
    return ttl, max_ttl


def _live_record(request: Request, mint: Mint, issued: float) -> LiveRecord:
    return LiveRecord(
        db_name=mint.db_name,
        username=mint.username,
        data={
            "role": mint.role_name,
            "agent": mint.caller.agent,
            "token_accessor": request.client_token_accessor,
            "issued_at": issued,
            "expires_max": issued + mint.max_ttl if mint.max_ttl else 0,
        },
    )


def _complete(storage: Storage, record: LiveRecord, wal_id: str) -> None:
    """Mark a handed-out user as leased, then drop its WAL entry, in this order.

    Between the two writes the user has both, and the rollback keeps a user
    with a live record. Without either, `tidy` would take it for an orphan.
    A revoke of the user waits for this call, so the record it deletes is
    never written after it.
    """
    record_live(storage, record.db_name, record.username, record.data)
    delete_wal(storage, wal_id)


def _metadata(caller: Caller, *keys: str) -> str:
    """Return the first alias metadata value present among `keys`."""
    return next((caller.metadata[k] for k in keys if caller.metadata.get(k)), "")


def _rollback_data(mint: Mint) -> dict[str, Any]:
    return {
        "db_name": mint.db_name,
        "username": mint.username,
        "rollback_statements": mint.role.rollback_statements,
        "owner_role": mint.config.owner_role,
        "connection": mint.conninfo,
    }


def _internal_data(mint: Mint, token_accessor: str) -> dict[str, Any]:
    """Return what revoke and renew need, and their log lines; never the password.

    Revoke requests carry no token, so the minting token's accessor is kept
    here for the revoke log line, which joins it to the call's other records.
    """
    return {
        "username": mint.username,
        "db_name": mint.db_name,
        "role": mint.role_name,
        "agent": mint.caller.agent,
        "token_accessor": token_accessor,
        "revocation_statements": mint.role.revocation_statements,
        "renew_statements": mint.role.renew_statements,
        "owner_role": mint.config.owner_role,
        "connection": mint.conninfo,
        "default_ttl": mint.ttl,
        "max_ttl": mint.max_ttl,
    }
