"""Real databases for the call-record tests: a SQLite file, and a PostgreSQL server of the
tests' own (Debian's ``postgresql``: ``initdb`` + ``pg_ctl`` in a temporary directory, on a
free loopback port, run as the ``postgres`` user when the tests run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import process_guard
from conftest import free_port


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


class PostgresServer:
    """A throwaway PostgreSQL cluster."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
        self.port = free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            user = "postgres"
            try:
                pwd.getpwnam(user)
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
            shutil.chown(self.dir, user)
            os.chmod(self.dir, 0o700)
            self.run_as = ["runuser", "-u", user, "--"]

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.run_as, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        data = self.dir / "data"
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "switchboard",
            "--auth=trust",
            "-E",
            "UTF8",
        )
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        try:
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            )
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def postmaster_pid(self) -> int:
        return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://switchboard@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            f"postgresql://switchboard@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (Debian package postgresql) not installed")
    server = PostgresServer(bin_dir)
    server.start()
    postmaster = server.postmaster_pid()  # daemonized by pg_ctl: lives for the session
    process_guard.own_for_session(postmaster)
    yield server
    server.stop()
    process_guard.release(postmaster)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/history/switchboard.db"
    return request.getfixturevalue("postgres").new_database()
