"""The config file on disk: its content hash, and atomic replacement.

`ConfigFile` remembers the SHA-256 of the bytes the running config came from (or that
the gateway last wrote). A mutation first checks the file still has that hash, so an
edit made on disk is never silently overwritten; the watcher compares against it to
skip the gateway's own writes.

`write` replaces the file atomically: a temporary file in the same directory (so the
rename never crosses a filesystem), written and fsynced, renamed over the target, then
the directory fsynced so the rename itself survives a crash. Readers see the old file
or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from kairos_core import ConfigError, FieldError, GatewayConfig, load_config_file

#: Attempts at reading a file that keeps changing while it is read.
_READ_ATTEMPTS = 3


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ConfigFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        #: Hash of the content the running config matches; None: there was no file.
        self.digest: str | None = self.current_digest()

    def current_digest(self) -> str | None:
        try:
            return sha256(self.path.read_bytes())
        except FileNotFoundError:
            return None

    def changed_on_disk(self) -> bool:
        return self.current_digest() != self.digest

    def load(self) -> tuple[GatewayConfig, str]:
        """Parse and validate the file; returns the config and the hash of what was read.

        Raises `ConfigError` (the file is missing, unreadable or invalid).
        """
        for _ in range(_READ_ATTEMPTS):
            before = self.current_digest()
            config = load_config_file(self.path)
            after = self.current_digest()
            if before == after and after is not None:
                return config, after
        raise ConfigError([FieldError((), "the file kept changing while it was read")])

    def write(self, text: str) -> str:
        """Replace the file with ``text`` atomically; returns (and remembers) its hash.

        Raises `OSError` when any step fails; the old file is then left as it was.
        """
        data = text.encode()
        if not data.endswith(b"\n"):
            data += b"\n"
        directory = self.path.parent
        try:
            mode: int | None = stat.S_IMODE(self.path.stat().st_mode)
        except FileNotFoundError:
            mode = None  # a new file keeps mkstemp's 0600: it may hold secrets
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_directory(directory)
        self.digest = sha256(data)
        return self.digest


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
