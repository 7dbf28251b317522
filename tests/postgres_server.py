"""A PostgreSQL server for the test session: an existing one named by URL, or a throwaway one.

`provide_postgres(url)` yields the admin URL of a server where tests may create and drop
databases. Given a URL it only yields it. Otherwise it starts Debian's `postgresql` package
(`make tools` installs it): `initdb` into a new temporary directory, trust auth, listening on
127.0.0.1 only, on a free port, its socket in that directory; run as the `postgres` system user
when the tests run as root, since PostgreSQL refuses root. On leaving, the server is stopped
(immediate shutdown: nothing in it is worth keeping) and the directory removed, even if the
tests failed.

Raises PostgresUnavailable, naming how to get one, where no server binaries are installed or
(as root) no `postgres` user exists; raises RuntimeError with the server's log if it is installed
but will not start.
"""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from services.kafka.broker import free_loopback_port

BINARIES = "/usr/lib/postgresql/*/bin"
START_SECONDS = 30
# Superuser `postgres`, trust auth, and no fsync: a test server, on loopback only, thrown away.
INITDB_OPTIONS = ("-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")


class PostgresUnavailable(Exception):
    """No PostgreSQL server can be started here; the message says how to get one."""


def find_binaries() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian's layout), or None."""
    found = [Path(d) for d in glob.glob(BINARIES) if (Path(d) / "initdb").exists()]
    return max(found, key=lambda d: int(d.parent.name), default=None)


@contextlib.contextmanager
def provide_postgres(url: str | None = None) -> Iterator[str]:
    """The admin URL (postgresql://user@host:port/postgres) of `url`'s server or a new one."""
    if url:
        yield url
        return
    binaries = find_binaries()
    if binaries is None:
        raise PostgresUnavailable(
            f"no PostgreSQL server in {BINARIES}: `make tools` installs Debian's postgresql "
            "package, or set PLATELETWATCH_TEST_POSTGRES_URL to an existing server"
        )
    server = ThrowawayPostgres(binaries)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class ThrowawayPostgres:
    """One PostgreSQL cluster in a temporary directory, started and stopped with pg_ctl."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.owner = _server_user()
        self.directory = Path(tempfile.mkdtemp(prefix="plateletwatch-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self.port = free_loopback_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """initdb, then pg_ctl start, which waits until the server accepts connections.

        Raises RuntimeError with the command's output and the server log if either fails; the
        directory is removed then.
        """
        wait = str(START_SECONDS)
        if self.owner is not None:
            os.chown(self.directory, self.owner.pw_uid, self.owner.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), *INITDB_OPTIONS)
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    "listen_addresses = '127.0.0.1'\n"
                    f"port = {self.port}\n"
                    f"unix_socket_directories = '{self.directory}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                )
            self._run(
                "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", wait
            )
        except RuntimeError:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def stop(self) -> None:
        """Stop the server at once and remove its directory; never raises."""
        with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.binaries / program), *args]
        if self.owner is not None:
            command = ["runuser", "-u", self.owner.pw_name, "--", *command]
        done = subprocess.run(
            command, cwd=self.directory, capture_output=True, text=True, timeout=START_SECONDS + 30
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed with status {done.returncode}:\n"
                f"{done.stdout}{done.stderr}{log[-3000:]}"
            )


def _server_user() -> pwd.struct_passwd | None:
    """The user to run the server as: None (ourselves) unless we are root, then `postgres`."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no `postgres` user to run the server as: "
            "`make tools` installs Debian's postgresql package, which creates it"
        ) from None
