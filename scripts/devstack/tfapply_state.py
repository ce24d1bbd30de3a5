"""The applier's state file: what the last apply wrote, in apply order.

Like Terraform's state it lets a later apply delete what the configuration
no longer declares (an agent removed from the map loses its JWT role and
policy) and lets destroy reuse computed attributes. Unlike Terraform's state
it never stores a sensitive argument: only a salted SHA-256 digest, enough to
tell whether the value changed since the last apply.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devstack.tfapply_errors import TfApplyError
from devstack.tfapply_plan import Instance
from devstack.tfapply_schema import Attrs

log = logging.getLogger(__name__)

STATE_FORMAT = "agent-bridge-tfapply/1"


@dataclass
class Record:
    address: str
    resource: str
    type: str
    values: dict[str, Any]
    blocks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    computed: dict[str, Any] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)

    def attrs(self) -> Attrs:
        """Rebuild the arguments a delete needs (sensitive ones are absent)."""
        blocks = {
            name: [Attrs(dict(b)) for b in found] for name, found in self.blocks.items()
        }
        return Attrs(dict(self.values), frozenset(self.values), blocks)


class State:
    """Records kept in memory, and in `path` when one is given."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.salt = secrets.token_hex(16)
        self.records: dict[str, Record] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise TfApplyError(f"cannot read state file {path}: {err}") from err
        if raw.get("format") != STATE_FORMAT:
            raise TfApplyError(
                f"state file {path} has format {raw.get('format')!r}, "
                f"expected {STATE_FORMAT!r}: move it away to start afresh"
            )
        self.salt = raw["salt"]
        for item in raw["records"]:
            record = Record(**item)
            self.records[record.address] = record

    def sensitive_changed(self, instance: Instance) -> frozenset[str]:
        """Name the sensitive arguments that differ from the recorded apply."""
        record = self.records.get(instance.address)
        current = self._digests(instance)
        if record is None:
            return frozenset(current)
        return frozenset(k for k, v in current.items() if record.digests.get(k) != v)

    def unchanged(self, instance: Instance) -> Record | None:
        """Return the recorded apply of `instance` if it had the same arguments."""
        record = self.records.get(instance.address)
        if record is None or record.type != instance.type.name:
            return None
        current = self._new_record(instance)
        parts = ("values", "blocks", "digests")
        same = all(
            _canonical(getattr(record, part)) == _canonical(getattr(current, part))
            for part in parts
        )
        return record if same else None

    def record(self, instance: Instance) -> None:
        self.records.pop(instance.address, None)
        self.records[instance.address] = self._new_record(instance)

    def _new_record(self, instance: Instance) -> Record:
        secret = set(instance.type.sensitive_arguments())
        values = {k: v for k, v in instance.attrs.values.items() if k not in secret}
        blocks = {
            name: [
                {k: v for k, v in b.values.items() if f"{name}.{k}" not in secret}
                for b in found
            ]
            for name, found in instance.attrs.blocks.items()
        }
        return Record(
            address=instance.address,
            resource=instance.resource.address,
            type=instance.type.name,
            values=values,
            blocks=blocks,
            computed=dict(instance.computed),
            digests=self._digests(instance),
        )

    def forget(self, address: str) -> None:
        self.records.pop(address, None)

    def orphans(self, keep: Iterable[str]) -> list[Record]:
        """Return records not in `keep`, latest applied first (deletion order)."""
        kept = set(keep)
        return [r for r in reversed(self.records.values()) if r.address not in kept]

    def save(self) -> None:
        if self.path is None:
            return
        document = {
            "format": STATE_FORMAT,
            "salt": self.salt,
            "records": [asdict(record) for record in self.records.values()],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Write a private temporary file, then rename: a crash never leaves
        # a half-written state, and no other user can read it.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tfapply-state-")
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
        log.debug("saved state with %d records to %s", len(self.records), self.path)

    def _digests(self, instance: Instance) -> dict[str, str]:
        digests = {}
        for name in instance.type.sensitive_arguments():
            block_name, _, arg = name.rpartition(".")
            holder = instance.attrs.block(block_name) if block_name else instance.attrs
            value = holder.get(arg) if holder is not None else None
            if value is not None:
                text = json.dumps(value, sort_keys=True)
                digest = hashlib.sha256(f"{self.salt}:{text}".encode())
                digests[name] = digest.hexdigest()
        return digests


def _canonical(value: Any) -> str:
    """Return `value` as JSON text that compares equal after a state round trip."""
    return json.dumps(value, sort_keys=True)
