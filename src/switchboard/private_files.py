"""Files that hold callers' data or secrets are the owner's only: directories 0700, files 0600.

``switchboard up`` runs itself and every process it starts under ``OWNER_ONLY_UMASK``; the
writers of call records, recordings and secrets also create their files this way, so a worker
or orchestrator started on its own keeps them private too.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

OWNER_ONLY_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parent owner-only (existing parents are left as they are)."""
    missing = []
    at = path
    while not at.exists():
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
    return path


def tighten_dir(path: Path) -> Path:
    """``private_dir``, and make ``path`` itself owner-only even if it existed before (a data
    directory made by an older version, readable by everyone)."""
    private_dir(path)
    path.chmod(DIR_MODE)
    return path


def create_private_file(path: Path) -> Path:
    """Create ``path`` empty and owner-only if it does not exist (SQLite then gives its -wal and
    -shm files the database file's mode)."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, owner-only whatever the process's umask or the file's old mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
    finally:
        os.close(fd)


def local_secret(path: Path, nbytes: int = 24) -> str:
    """The secret kept in ``path``: made once (random, owner-only), then read back, so a deployment
    keeps one value across restarts."""
    if not path.exists():
        private_dir(path.parent)
        write_private(path, (secrets.token_urlsafe(nbytes) + "\n").encode())
    return path.read_text().strip()
