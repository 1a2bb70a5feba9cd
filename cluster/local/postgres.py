"""A throw-away PostgreSQL server for the local deployment and the tests.

:class:`PostgresServer` runs ``initdb`` and ``pg_ctl start`` in a temp directory, on a
free loopback port with its socket in that directory, waits (bounded) until it accepts
connections, and :meth:`PostgresServer.stop` always stops it (``pg_ctl stop -m
immediate``, then a kill of the postmaster if that fails) and removes the directory.

``initdb`` refuses to run as root, so when this process is root the server runs as an
unprivileged user (``postgres`` if it exists, else ``nobody``) that owns the temp dir.

Examples:
    >>> with PostgresServer() as pg:          # doctest: +SKIP
    ...     engine = sqlalchemy.create_engine(pg.url)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from geoshard.errors import BackendError

__all__ = ["PostgresServer", "find_pg_bin", "free_port"]

_SEARCH = ("/usr/lib/postgresql/{v}/bin", "/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_pg_bin() -> Path | None:
    """The directory that holds ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    ``$GEOSHARD_PG_BIN`` wins; then the newest ``/usr/lib/postgresql/<v>/bin``; then PATH.
    """
    env = os.environ.get("GEOSHARD_PG_BIN")
    candidates: list[Path] = [Path(env)] if env else []
    lib = Path("/usr/lib/postgresql")
    if lib.is_dir():
        versions = sorted(
            (p for p in lib.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name)
        )
        candidates += [v / "bin" for v in versions]
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).resolve().parent)
    candidates += [Path(p.format(v="")) for p in _SEARCH[1:]]
    for c in candidates:
        if all((c / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
            return c
    return None


class PostgresServer:
    """One PostgreSQL server in a temp dir on a free loopback port.

    Args:
        bin_dir: where ``initdb`` / ``pg_ctl`` live (default: :func:`find_pg_bin`).
        port: the TCP port (default: a free one).
        ready_timeout_s: how long :meth:`start` waits for connections.
        run_as: the unprivileged user to run as when this process is root.

    Attributes:
        url: ``postgresql+psycopg2://<user>@127.0.0.1:<port>/postgres`` once started.
    """

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        port: int | None = None,
        ready_timeout_s: float = 30.0,
        run_as: str | None = None,
    ) -> None:
        found = bin_dir or find_pg_bin()
        if found is None:
            raise BackendError(
                "PostgreSQL binaries (initdb, pg_ctl, postgres) not found; install "
                "postgresql or set GEOSHARD_PG_BIN to their directory"
            )
        self.bin_dir = found
        self.port = port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self.user = self._pick_user(run_as)
        self.tmp: Path | None = None
        self.url = ""
        self._started = False

    @staticmethod
    def _pick_user(run_as: str | None) -> str | None:
        if os.geteuid() != 0:
            return None
        for name in [run_as] if run_as else ["postgres", "nobody"]:
            try:
                pwd.getpwnam(name)
                return name
            except KeyError:
                continue
        raise BackendError(
            "running as root, and neither 'postgres' nor 'nobody' exists for "
            "initdb to run as; create an unprivileged user or pass run_as="
        )

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        assert self.tmp is not None
        return self.tmp / "data"

    def _run(self, args: list[str], *, timeout_s: float) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, cwd=str(self.tmp), check=False
        )

    def start(self) -> Self:
        """initdb, start and wait until the server accepts connections.

        Raises:
            BackendError: when initdb or start fail or the server is not ready in time
                (the log tail is in the message); everything started is stopped first.
        """
        self.tmp = Path(tempfile.mkdtemp(prefix="geoshard-pg-"))
        try:
            if self.user is not None:
                pw = pwd.getpwnam(self.user)
                os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            os.chmod(self.tmp, 0o700)
            r = self._run(
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-A",
                    "trust",
                    "-U",
                    "geoshard",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
                timeout_s=120,
            )
            if r.returncode != 0:
                raise BackendError(f"initdb failed ({r.returncode}): {r.stderr.strip()[-800:]}")
            opts = (
                f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c shared_buffers=16MB -c max_connections=40"
            )
            # set before pg_ctl runs: if it times out, the postmaster it spawned may still
            # be alive, and stop() must then stop it (stopping a server that never came up
            # is harmless)
            self._started = True
            r = self._run(
                [
                    "pg_ctl",
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.tmp / "log"),
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    str(int(self.ready_timeout_s)),
                ],
                timeout_s=self.ready_timeout_s + 10,
            )
            if r.returncode != 0:
                raise BackendError(f"pg_ctl start failed ({r.returncode}): {self._log_tail()}")
            self.url = f"postgresql+psycopg2://geoshard@127.0.0.1:{self.port}/postgres"
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tail(self) -> str:
        try:
            return (self.tmp / "log").read_text(errors="replace")[-800:] if self.tmp else ""
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        import psycopg2

        deadline = time.monotonic() + self.ready_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                psycopg2.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user="geoshard",
                    dbname="postgres",
                    connect_timeout=2,
                ).close()
                return
            except psycopg2.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        raise BackendError(
            f"PostgreSQL on port {self.port} not ready after "
            f"{self.ready_timeout_s:g}s ({last}); log: {self._log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove its directory. Safe to call twice."""
        if self.tmp is None:
            return
        if self._started:
            with contextlib.suppress(subprocess.TimeoutExpired):  # the kill below settles it
                self._run(
                    ["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w"],
                    timeout_s=30,
                )
            self._kill_postmaster()
            self._started = False
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def _kill_postmaster(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
