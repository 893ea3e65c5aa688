"""Real services for the tests, started by the repository's own scripts."""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Postgres:
    """A PostgreSQL server on loopback, run by scripts/postgres.sh."""

    data_dir: Path
    port: int

    @classmethod
    def start_new(cls) -> Postgres:
        # not pytest's tmp_path: the server runs as the postgres user, which
        # cannot enter root's 0700 pytest directories
        data_dir = Path(tempfile.mkdtemp(prefix="eventflow-pg-"))
        data_dir.chmod(0o755)
        server = cls(data_dir, free_port())
        atexit.register(server.remove)
        server.start()
        return server

    def remove(self) -> None:
        """Stop the server if it runs and delete its data (a test store can hold gigabytes)."""
        subprocess.run(
            [str(ROOT / "scripts" / "postgres.sh"), "stop", str(self.data_dir)],
            capture_output=True,
            timeout=300,
            check=False,
        )
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _script(self, *args: str) -> None:
        subprocess.run(
            [str(ROOT / "scripts" / "postgres.sh"), *args],
            check=True,
            capture_output=True,
            timeout=300,
        )

    def start(self) -> None:
        self._script("start", str(self.data_dir), str(self.port))

    def stop(self) -> None:
        self._script("stop", str(self.data_dir))

    def kill(self) -> None:
        self._script("kill", str(self.data_dir))

    def url(self, database: str = "eventflow") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database `create_database` made, and checkpoint: the next user of
        the server does not pay for writing out this one's pages."""
        name = url.rsplit("/", 1)[1]
        self.sql(f"DROP DATABASE {name} WITH (FORCE)")
        self.sql("CHECKPOINT")

    def sql(self, statement: str) -> None:
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "eventflow",
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                statement,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
