"""A small backend that exercises every part of the bridge, for tests only.

Paths (relative to the mount):
- `kv/<key>`: read, create/update (stores the JSON body), delete; `kv/` lists.
- `info`: the mount's setup config, TTLs and Vault version from the system
  view, and the caller's identity fields.
- `creds/<name>`: a leased secret; revoke and renew record themselves in
  storage under `revoked/` and `renewed/`. Body field `revoke_delay_ms`
  makes the revoke of that secret sleep first.
- `creds-status/<serial>`: whether that secret is issued, revoked, renewed.
- `ping`: returns `{"pong": true}` and touches nothing (for benchmarks).
- `sleep`: sleeps `ms` milliseconds, then returns.
- `fail/<kind>`: raises the LogicalError of that kind (`bad_request`,
  `permission_denied`, `unsupported_path`, `unsupported_operation`,
  `internal`), or a RuntimeError for `crash`.
- `stats`: counts of rollback, resolve-path and revoke calls seen.
- help on any path returns `HELP_TEXT`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping

from plugin.logical import (
    BadRequestError,
    ErrorKind,
    LeaseOptions,
    LogicalError,
    Operation,
    Request,
    Response,
    Secret,
    Storage,
    SystemView,
    UnsupportedOperationError,
    UnsupportedPathError,
)

HELP_TEXT = "The echo test backend stores JSON under kv/ and issues leases."
LEASE_TTL = 300


class EchoBackend:
    """Implements `plugin.logical.Backend` with in-storage bookkeeping."""

    def __init__(self) -> None:
        self.config: dict[str, str] = {}
        self.system: SystemView | None = None
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def setup(self, config: Mapping[str, str], system: SystemView) -> None:
        self.config = dict(config)
        self.system = system

    def initialize(self, storage: Storage) -> None:
        storage.put("initialized", str(os.getpid()).encode())

    def special_paths(self) -> dict[str, list[str]]:
        return {"local_storage": ["local/"]}

    def invalidate(self, key: str) -> None:
        self._count("invalidate")

    def cleanup(self) -> None:
        self._count("cleanup")

    def backend_type(self) -> int:
        return 1  # logical.TypeLogical

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def handle_request(self, request: Request) -> Response | None:
        operation = request.operation
        self._count(operation.value)
        if operation is Operation.HELP:
            return Response(data={"help": HELP_TEXT, "see_also": []})
        if operation is Operation.ROLLBACK:
            return None
        if operation is Operation.RESOLVE_PATH:
            raise UnsupportedPathError("unsupported path")
        if operation is Operation.REVOKE:
            return self._revoke(request)
        if operation is Operation.RENEW:
            return self._renew(request)
        return self._route(request)

    def handle_existence_check(self, request: Request) -> tuple[bool, bool]:
        if not request.path.startswith("kv/"):
            return False, False
        self._count("existence-check")
        return True, request.storage.get(request.path) is not None

    def _route(self, request: Request) -> Response | None:
        path = request.path
        if path in {"kv/", "kv"}:
            return self._list(request)
        for prefix, handler in (
            ("kv/", self._kv),
            ("creds/", self._creds),
            ("creds-status/", self._creds_status),
        ):
            if path.startswith(prefix):
                return handler(request, path.removeprefix(prefix))
        if path.startswith("fail/"):
            _fail(path.removeprefix("fail/"))
        if path == "ping":
            return Response(data={"pong": True})
        if path == "info":
            return self._info(request)
        if path == "sleep":
            time.sleep(float(request.data.get("ms", 0)) / 1000)
            return Response(data={"slept_ms": request.data.get("ms", 0)})
        if path == "stats":
            with self._lock:
                return Response(data={"counts": dict(self.counts), "pid": os.getpid()})
        raise UnsupportedPathError(f"no path {path!r} in the echo backend")

    def _kv(self, request: Request, key: str) -> Response | None:
        storage = request.storage
        if request.operation is Operation.READ:
            raw = storage.get(f"kv/{key}")
            return None if raw is None else Response(data=json.loads(raw))
        if request.operation in (Operation.CREATE, Operation.UPDATE):
            storage.put(f"kv/{key}", json.dumps(request.data).encode())
            return None
        if request.operation is Operation.DELETE:
            storage.delete(f"kv/{key}")
            return None
        raise UnsupportedOperationError(
            f"{request.operation.value} is not supported on kv/"
        )

    def _list(self, request: Request) -> Response:
        if request.operation is not Operation.LIST:
            raise UnsupportedOperationError("kv/ supports list only")
        if "page_limit" in request.data:  # one page, through ListPage
            after = str(request.data.get("page_after", ""))
            limit = int(request.data["page_limit"])
            return Response(
                data={"keys": request.storage.list_page("kv/", after, limit)}
            )
        return Response(data={"keys": request.storage.list("kv/")})

    def _info(self, request: Request) -> Response:
        assert self.system is not None
        entity = (
            self.system.entity_info(request.entity_id) if request.entity_id else None
        )
        return Response(
            data={
                "config": self.config,
                "default_lease_ttl": self.system.default_lease_ttl(),
                "max_lease_ttl": self.system.max_lease_ttl(),
                "vault_version": self.system.plugin_env_vault_version(),
                "mount_point": request.mount_point,
                "display_name": request.display_name,
                "entity_name": entity.name if entity else "",
                "pid": os.getpid(),
                # The PID of the process whose `initialize` ran last.
                "initialized_by": int(request.storage.get("initialized") or 0),
            }
        )

    def _creds(self, request: Request, name: str) -> Response:
        serial = uuid.uuid4().hex
        delay = int(request.data.get("revoke_delay_ms", 0))
        request.storage.put(f"issued/{serial}", name.encode())
        secret = Secret(
            lease=LeaseOptions(ttl=LEASE_TTL, max_ttl=LEASE_TTL * 2, renewable=True),
            internal_data={"secret_type": "echo", "serial": serial, "delay_ms": delay},
        )
        return Response(
            data={"username": f"echo-{name}", "serial": serial}, secret=secret
        )

    def _creds_status(self, request: Request, serial: str) -> Response:
        storage = request.storage
        return Response(
            data={
                state: storage.get(f"{state}/{serial}") is not None
                for state in ("issued", "revoked", "renewed")
            }
        )

    def _revoke(self, request: Request) -> Response | None:
        internal = request.secret.internal_data if request.secret else {}
        serial = str(internal.get("serial", ""))
        if not serial:
            raise BadRequestError("revoke without a serial in internal_data")
        time.sleep(float(internal.get("delay_ms", 0)) / 1000)
        request.storage.put(f"revoked/{serial}", b"1")
        request.storage.delete(f"issued/{serial}")
        return None

    def _renew(self, request: Request) -> Response:
        if request.secret is None:
            raise BadRequestError("renew without a secret")
        serial = str(request.secret.internal_data.get("serial", ""))
        request.storage.put(f"renewed/{serial}", b"1")
        lease = LeaseOptions(ttl=LEASE_TTL, max_ttl=LEASE_TTL * 2, renewable=True)
        return Response(
            secret=Secret(lease=lease, internal_data=request.secret.internal_data)
        )


def _fail(kind: str) -> None:
    if kind == "crash":
        raise RuntimeError("echo backend crashed on purpose; secret=do-not-leak")
    try:
        error_kind = ErrorKind(kind)
    except ValueError as err:
        raise BadRequestError(f"unknown failure kind {kind!r}") from err
    raise LogicalError(f"echo failure of kind {kind}", kind=error_kind)


def new_backend() -> EchoBackend:
    return EchoBackend()
