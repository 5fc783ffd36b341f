"""The config file on disk: its content hash, and atomic replacement.

`ConfigFile` remembers the SHA-256 of the bytes the running config came from (or that
the gateway last wrote). A mutation first checks the file still has that hash, so an
edit made on disk is never silently overwritten; the watcher compares against it to
skip the gateway's own writes.

`write` replaces the file atomically: a temporary file in the same directory (so the
rename never crosses a filesystem), written and fsynced, renamed over the target, then
the directory fsynced so the rename itself survives a crash. Readers see the old file
or the new one, never a mix.

`save` is what a change through the management API calls: it rewrites the file as its
author wrote it plus the change (`written.updated_text`), and first copies the previous
file to a timestamped backup (``admin.backups``: the newest ``keep`` copies stay). A
write that fails removes the backup it made, so a change that was not saved leaves no
trace.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import time
from pathlib import Path

from kairos_core import ConfigError, FieldError, GatewayConfig, load_config_file

from .written import updated_text

#: Attempts at reading a file that keeps changing while it is read.
_READ_ATTEMPTS = 3


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ChangedOnDisk(Exception):
    """The file no longer holds what the running config came from."""


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

    def save(self, old: GatewayConfig, new: GatewayConfig) -> str:
        """Rewrite the file (which gave ``old``) to give ``new``; returns its new hash.

        Only what changed is rewritten, and the previous file is backed up first.
        Raises `ChangedOnDisk` when the file was edited since it was loaded, `OSError`
        when the backup or the write fails; the file is then left as it was.
        """
        try:
            previous: bytes | None = self.path.read_bytes()
        except FileNotFoundError:
            previous = None
        if (None if previous is None else sha256(previous)) != self.digest:
            raise ChangedOnDisk(str(self.path))
        text = updated_text(None if previous is None else previous.decode(), old, new)
        if previous is not None and text.encode() == previous:
            return sha256(previous)  # the change changed nothing in the file
        backups = new.admin.backups
        backup = None
        if previous is not None and backups.keep > 0:
            backup = _write_backup(self._backup_dir(backups.dir), self.path, previous)
        try:
            digest = self.write(text)
        except BaseException:
            if backup is not None:
                with contextlib.suppress(OSError):
                    _remove_backup(backup)
            raise
        if backup is not None:
            _prune(backup.parent, self.path.name, backups.keep)
        return digest

    def _backup_dir(self, configured: str) -> Path:
        return self.path.parent / Path(configured).expanduser()

    def write(self, text: str) -> str:
        """Replace the file with ``text`` atomically; returns (and remembers) its hash.

        Raises `OSError` when any step fails; the old file is then left as it was.
        """
        data = text.encode()
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


def backup_name(name: str, at: float) -> str:
    """``config.json.20261207T183712.123456Z.bak``: sorts by time, newest last."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(at))
    return f"{name}.{stamp}.{int(at % 1 * 1_000_000):06d}Z.bak"


def _write_backup(directory: Path, source: Path, data: bytes) -> Path:
    """``data`` (the file's previous content) to a new backup in ``directory``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(source.stat().st_mode)
    except FileNotFoundError:
        mode = 0o600
    name = backup_name(source.name, time.time())
    for attempt in range(100):
        target = directory / (name if attempt == 0 else f"{name[:-4]}-{attempt}.bak")
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                _remove_backup(target)
            raise
        return target
    raise FileExistsError(f"no free backup name in {directory}")


def _remove_backup(backup: Path) -> None:
    backup.unlink()
    with contextlib.suppress(OSError):
        backup.parent.rmdir()  # only when that left it empty


def backups_of(directory: Path, name: str) -> list[Path]:
    """The backups of the file ``name`` in ``directory``, oldest first."""
    try:
        found = [p for p in directory.iterdir() if _is_backup(p.name, name)]
    except FileNotFoundError:
        return []
    return sorted(found, key=lambda p: p.name)


def _is_backup(candidate: str, name: str) -> bool:
    return candidate.startswith(name + ".") and candidate.endswith(".bak")


def _prune(directory: Path, name: str, keep: int) -> None:
    for old in backups_of(directory, name)[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink()
