"""SHA-256 of open files, cached by the file's identity on disk.

The cache key is (device, inode, size, mtime, ctime). A process can set a
file's mtime back with utime(2), but any change to the file moves its ctime,
which no unprivileged call can set, so a rewritten file never hits a stale
entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1024 * 1024

FileKey = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class FileDigest:
    """The hash of one regular file and what identifies it on disk.

    `sha256` is None when the file is larger than the cache's size limit.
    """

    sha256: str | None
    device: int
    inode: int
    size: int
    link_count: int


class HashCache:
    """Hashes open files, skipping files above `max_bytes`; thread-safe."""

    def __init__(self, *, max_bytes: int, max_entries: int = 4096) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[FileKey, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def digest_fd(self, fd: int) -> FileDigest:
        """Hash the regular file open at `fd`, reading from its start.

        Raises ValueError for anything but a regular file.
        """
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"not a regular file (mode {stat.filemode(info.st_mode)})")

        key = _file_key(info)
        found, sha256 = self._lookup(key)
        if not found:
            sha256 = self._hash_new_file(fd, info, key)
        return FileDigest(
            sha256=sha256,
            device=info.st_dev,
            inode=info.st_ino,
            size=info.st_size,
            link_count=info.st_nlink,
        )

    def _hash_new_file(self, fd: int, info: os.stat_result, key: FileKey) -> str | None:
        if info.st_size > self.max_bytes:
            # Remembered as None, so the warning comes once per file version.
            logger.warning(
                "file of %d bytes on device %d inode %d exceeds max_hash_bytes %d, "
                "so it is left unhashed",
                info.st_size,
                info.st_dev,
                info.st_ino,
                self.max_bytes,
            )
            self._store(key, None)
            return None

        sha256 = _hash_fd(fd, info.st_size)
        # A file written to while it was read gets a new ctime: its hash is
        # returned for this request but not cached.
        if _file_key(os.fstat(fd)) == key:
            self._store(key, sha256)
        return sha256

    def _lookup(self, key: FileKey) -> tuple[bool, str | None]:
        with self._lock:
            if key not in self._entries:
                return False, None
            self._entries.move_to_end(key)
            return True, self._entries[key]

    def _store(self, key: FileKey, sha256: str | None) -> None:
        with self._lock:
            self._entries[key] = sha256
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def _file_key(info: os.stat_result) -> FileKey:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _hash_fd(fd: int, size: int) -> str:
    # Reading exactly `size` bytes ties the hash to the size in the cache key,
    # even if the file grows during the read.
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(_CHUNK_BYTES, size - offset), offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
