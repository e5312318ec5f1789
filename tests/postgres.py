"""A real PostgreSQL server for the tests: Debian's binaries, a cluster in a temporary directory.

``initdb`` refuses to run as root, and the tests run as root here and in CI, so the
server runs as the ``postgres`` system user that Debian's ``postgresql`` package
creates (``runuser -u postgres --``), in a directory chowned to it. It listens on
a free 127.0.0.1 port (and a unix socket in that directory), with durability off
(``fsync=off``): it is thrown away afterwards, also when the test session dies
(``atexit``). Each test gets a database of its own, made from ``template0``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from itertools import count
from pathlib import Path

#: The role the tests connect as, and its password (over TCP, scram-sha-256).
USER = "mirrorsync"
PASSWORD = "test-secret-pw"


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb and pg_ctl, if any."""
    found = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            try:
                found.append((int(bindir.parent.name), bindir))
            except ValueError:
                continue
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class PostgresServer:
    bindir: Path
    directory: Path
    port: int
    _numbers: count[int]

    @property
    def socket_dir(self) -> Path:
        return self.directory

    def url(self, dbname: str, *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str) -> str:
        """Run ``sql`` as the superuser over the unix socket; its first column, one a line."""
        import psycopg

        with psycopg.connect(
            host=str(self.directory),
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
        ) as conn:
            cursor = conn.execute(sql)
            rows = cursor.fetchall() if cursor.description else []
        return "".join(f"{row[0]}\n" for row in rows)

    def psql(self, sql: str) -> str:
        """Run ``sql`` as the superuser with psql (no driver involved); its output."""
        done = subprocess.run(
            _as_postgres(
                [
                    str(self.bindir / "psql"),
                    "-h",
                    str(self.directory),
                    "-p",
                    str(self.port),
                    "-d",
                    "postgres",
                    "-X",
                    "-q",
                    "-t",
                    "-A",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    sql,
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {done.stderr.strip()}")
        return done.stdout

    def new_database(self) -> str:
        """A fresh, empty database owned by the test role; its name."""
        name = f"t{os.getpid()}_{next(self._numbers)}"
        self.admin(f"CREATE DATABASE {name} OWNER {USER} TEMPLATE template0")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if not self.directory.exists():
            return
        subprocess.run(
            _as_postgres(
                [
                    str(self.bindir / "pg_ctl"),
                    "stop",
                    "-D",
                    str(self.directory / "data"),
                    "-m",
                    "immediate",
                    "-s",
                ]
            ),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start(bindir: Path) -> PostgresServer:
    """initdb and pg_ctl start a throw-away cluster; stopped at exit whatever happens."""
    directory = Path(tempfile.mkdtemp(prefix="mirrorsync-pg-"))
    directory.chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data = directory / "data"
    pwfile = directory / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    server = PostgresServer(bindir, directory, _free_port(), count(1))
    atexit.register(server.stop)

    def run(argv: list[str]) -> None:
        done = subprocess.run(_as_postgres(argv), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            server.stop()
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")

    run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={server.port}"
        f" -c unix_socket_directories={directory}"
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        " -c max_connections=100 -c shared_buffers=64MB"
    )
    run(
        [
            str(bindir / "pg_ctl"),
            "start",
            "-D",
            str(data),
            "-w",
            "-t",
            "30",
            "-s",
            "-l",
            str(directory / "server.log"),
            "-o",
            options,
        ]
    )
    server.admin(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
    return server
