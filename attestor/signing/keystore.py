"""The key directory: current, next and retired keys, and their rotation.

Layout of `key_dir` (mode 0700):
- `keys.json`: `{"current": KID, "next": KID, "retired": [{"kid", "retire_after"}]}`
- `KID.key`: a private key (PKCS8 PEM, mode 0600), for the current and next keys
- `KID.pub`: the public key of a retired key, published until `retire_after`

The daemon reads the directory and `agent-attestor keys rotate` writes it,
possibly at the same time, so both take an flock(2) on `.lock` and every file
is replaced by an atomic rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from attestor.signing.keys import (
    KeyFileError,
    PublicKey,
    SigningKey,
    generate_key,
    load_private,
    load_public,
    private_pem,
    public_pem,
)

logger = logging.getLogger(__name__)

STATE_FILE = "keys.json"
_LOCK_FILE = ".lock"


@dataclass(frozen=True)
class RetiredKey:
    """A former current key, still published until `retire_after` (Unix time)."""

    key: PublicKey
    retire_after: float


@dataclass(frozen=True)
class KeySet:
    """The keys of one state of the key directory."""

    current: SigningKey
    next: SigningKey
    retired: tuple[RetiredKey, ...]


class KeyStore:
    """Reads, creates and rotates the keys in `key_dir`."""

    def __init__(self, key_dir: str, algorithm: str) -> None:
        self.key_dir = key_dir
        self.algorithm = algorithm

    def state_stamp(self) -> tuple[int, int] | None:
        """Return (inode, mtime) of keys.json, which changes with every write."""
        try:
            info = os.stat(os.path.join(self.key_dir, STATE_FILE))
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_mtime_ns

    def load_or_create(self) -> KeySet:
        """Load the keys, first creating the directory and two keys if absent."""
        self._ensure_directory()
        with self._locked(fcntl.LOCK_EX):
            if not os.path.exists(os.path.join(self.key_dir, STATE_FILE)):
                current, upcoming = (
                    generate_key(self.algorithm),
                    generate_key(self.algorithm),
                )
                self._write_private(current)
                self._write_private(upcoming)
                self._write_state(current.kid, upcoming.kid, [])
                logger.info(
                    "created keys in %s: current %s, next %s",
                    self.key_dir,
                    current.kid,
                    upcoming.kid,
                )
            return self._read()

    def load(self) -> KeySet:
        self._check_directory()
        with self._locked(fcntl.LOCK_SH):
            return self._read()

    def rotate(self, *, keep_seconds: float) -> KeySet:
        """Promote next to current, add a new next key, retire the old current.

        The old current key stays published for `keep_seconds`, which must
        cover the longest token it can have signed.
        """
        self._check_directory()
        with self._locked(fcntl.LOCK_EX):
            keys = self._read()
            now = time.time()
            upcoming = generate_key(self.algorithm)
            self._write_private(upcoming)
            self._write_public(keys.current.public)

            retired = [entry for entry in keys.retired if entry.retire_after > now]
            retired.append(RetiredKey(keys.current.public, now + keep_seconds))
            self._write_state(
                keys.next.kid,
                upcoming.kid,
                [
                    {"kid": entry.key.kid, "retire_after": entry.retire_after}
                    for entry in retired
                ],
            )
            # A retired key only verifies; its private half can go at once.
            self._remove(f"{keys.current.kid}.key")
            for entry in keys.retired:
                if entry.retire_after <= now:
                    self._remove(f"{entry.key.kid}.pub")
            logger.info(
                "rotated keys in %s: current %s, next %s, retired %s",
                self.key_dir,
                keys.next.kid,
                upcoming.kid,
                keys.current.kid,
            )
            return self._read()

    def _read(self) -> KeySet:
        state = self._read_state()
        try:
            current = load_private(self._path(f"{state['current']}.key"))
            upcoming = load_private(self._path(f"{state['next']}.key"))
            retired = tuple(
                RetiredKey(
                    load_public(self._path(f"{entry['kid']}.pub")),
                    float(entry["retire_after"]),
                )
                for entry in state.get("retired", [])
            )
        except (KeyError, TypeError, ValueError) as err:
            raise KeyFileError(
                f"{self._path(STATE_FILE)}: malformed key state ({err!r}); restore it "
                "from a backup or move the key directory away to start afresh"
            ) from err
        return KeySet(current=current, next=upcoming, retired=retired)

    def _read_state(self) -> dict[str, Any]:
        path = self._path(STATE_FILE)
        try:
            with open(path, encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError) as err:
            raise KeyFileError(f"{path}: cannot read the key state: {err}") from err
        if not isinstance(state, dict):
            raise KeyFileError(f"{path}: the key state must be a JSON object")
        return state

    def _write_state(
        self, current: str, upcoming: str, retired: list[dict[str, Any]]
    ) -> None:
        state = {"current": current, "next": upcoming, "retired": retired}
        self._write_atomic(STATE_FILE, json.dumps(state, indent=2).encode() + b"\n")

    def _write_private(self, key: SigningKey) -> None:
        self._write_atomic(f"{key.kid}.key", private_pem(key))

    def _write_public(self, key: PublicKey) -> None:
        self._write_atomic(f"{key.kid}.pub", public_pem(key))

    def _write_atomic(self, name: str, data: bytes) -> None:
        owner = os.stat(self.key_dir)
        fd, temporary = tempfile.mkstemp(dir=self.key_dir, prefix=".tmp-")
        try:
            # mkstemp creates the file with mode 0600.
            if os.geteuid() == 0 and owner.st_uid != 0:
                # `keys rotate` run by root must leave files the daemon's
                # user, which owns the directory, can read.
                os.fchown(fd, owner.st_uid, owner.st_gid)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        # rename(2) is atomic: a reader sees the old file or the new one.
        os.replace(temporary, self._path(name))
        self._fsync_directory()

    def _remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name))

    def _fsync_directory(self) -> None:
        fd = os.open(self.key_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ensure_directory(self) -> None:
        if not os.path.isdir(self.key_dir):
            os.makedirs(self.key_dir, mode=0o700)
            # makedirs applies the umask; the mode must be exactly 0700.
            os.chmod(self.key_dir, 0o700)
            logger.info("created key directory %s", self.key_dir)
        self._check_directory()

    def _check_directory(self) -> None:
        try:
            info = os.stat(self.key_dir)
        except FileNotFoundError as err:
            raise KeyFileError(
                f"key directory {self.key_dir} does not exist; start the daemon "
                "once to create it, or fix key_dir in the config"
            ) from err
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise KeyFileError(
                f"key directory {self.key_dir} has mode "
                f"{stat.S_IMODE(info.st_mode):04o}; run chmod 700 {self.key_dir}"
            )

    @contextmanager
    def _locked(self, operation: int) -> Iterator[None]:
        # The lock file is empty and opened read-only, so the daemon's user can
        # lock a file that root created.
        fd = os.open(
            self._path(_LOCK_FILE), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        try:
            fcntl.flock(fd, operation)
            yield
        finally:
            os.close(fd)

    def _path(self, name: str) -> str:
        return os.path.join(self.key_dir, name)
