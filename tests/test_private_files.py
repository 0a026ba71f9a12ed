"""Caller data at rest is the owner's only: the call history, recordings and secrets the stack
writes are 0600 in 0700 directories, even when the process runs under a permissive umask.

``test_local_redis.py`` checks Redis's files; ``test_up_security.py`` checks what a whole
``switchboard up`` leaves in ``var/``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from switchboard.private_files import local_secret, tighten_dir
from switchboard.records.storage import LocalRecordingStorage
from switchboard.records.store import create_db_engine, migrate


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # what a login shell usually has
    yield
    os.umask(previous)


def test_the_sqlite_call_history_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    database = tmp_path / "var" / "db" / "switchboard.db"
    engine = create_db_engine(f"sqlite:///{database}")
    try:
        migrate(engine)
        with engine.begin() as connection:  # keep it open: -wal and -shm exist while it is
            connection.execute(text("CREATE TABLE probe (said TEXT)"))
            connection.execute(text("INSERT INTO probe VALUES ('what a caller said')"))
            files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
            assert all(f.exists() for f in files), list(database.parent.iterdir())
            for path in files:
                assert _mode(path) == 0o600, path
        assert _mode(database.parent) == 0o700 and _mode(database.parent.parent) == 0o700
        assert _mode(Path(f"{database}.migrate.lock")) == 0o600
    finally:
        engine.dispose()


def test_recordings_and_their_date_directories_are_owner_only(tmp_path: Path) -> None:
    storage = LocalRecordingStorage(tmp_path / "recordings")
    storage.put("2026/12/03/call-CA1.flac", b"fLaC voice")
    storage.put("2026/12/03/call-CA2.flac", b"fLaC voice")
    root = tmp_path / "recordings"
    for path in [root, *root.rglob("*")]:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert storage.get("2026/12/03/call-CA1.flac") == b"fLaC voice"


def test_a_local_secret_is_made_once_owner_only_and_a_data_dir_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir(mode=0o755)  # made by an older version, readable by everyone
    tighten_dir(data)
    assert _mode(data) == 0o700
    secret = local_secret(data / "operator-key")
    assert _mode(data / "operator-key") == 0o600 and len(secret) >= 24
    assert local_secret(data / "operator-key") == secret
