"""A real PostgreSQL server for the tests (and the benchmarks), started from scratch.

pytest plugin (listed in conftest.py's ``pytest_plugins``) with two fixtures:

* ``postgres_server`` (session): one server for the whole run: ``initdb`` + ``pg_ctl`` in a
  fresh temporary folder, listening on 127.0.0.1 on a free port and on a Unix socket in
  that folder, fsync off.  Stopped (``pg_ctl stop -m immediate``) and its folder removed at
  session end, also after a failure or Ctrl-C (pytest finalizer, with ``atexit`` behind it).
* ``postgres_url`` (function): an SQLAlchemy URL ``postgresql+psycopg://...`` of a new,
  empty database, dropped (``WITH (FORCE)``) after the test.  Its text collation is ICU
  ``en-US`` (where the server has ICU), as on a typical production server, not the bytewise
  "C" order: code that assumes SQLite's bytewise TEXT order (path ranges) fails here as it
  would there.

PostgreSQL refuses to run as root, so when the tests run as root every server command runs
as the unprivileged ``postgres`` OS user that Debian's package creates (``subprocess`` with
``user=``/``group=``, supplementary groups dropped) and the folder is chowned to it; a normal
user runs the server as itself.

Authentication is real: TCP connections need the superuser's password (scram-sha-256), so
a wrong password is refused as on any server; the Unix socket is trust, for the folder's owner.

Where PostgreSQL is not installed the fixtures skip, saying why, except when
``SEMHASH_CI=1`` (set by .ci/run), where they fail: CI must run these tests.
The binaries are found in ``$SEMHASH_PG_BIN``, else the newest ``/usr/lib/postgresql/<v>/bin``
(Debian), else ``pg_ctl`` on PATH.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

SUPERUSER = "semhash"
DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
FAST_SETTINGS = {  # a throw-away server: durability buys nothing
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


@dataclass(frozen=True)
class PostgresInstall:
    bin_dir: Path
    version: str


def find_postgres(candidates: list[str] | None = None) -> tuple[PostgresInstall | None, str]:
    """The PostgreSQL binaries to use, or None with the reason none were found."""
    if candidates is None:
        explicit = os.environ.get("SEMHASH_PG_BIN")
        if explicit:
            candidates = [explicit]
        else:
            debian = sorted(glob.glob(DEBIAN_GLOB), key=_version_key, reverse=True)
            on_path = shutil.which("pg_ctl")
            candidates = debian + ([str(Path(on_path).parent)] if on_path else [])
    for directory in candidates:
        bin_dir = Path(directory)
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            out = subprocess.run([bin_dir / "pg_ctl", "--version"], capture_output=True, text=True)
            match = re.search(r"(\d+(?:\.\d+)*)", out.stdout)
            return PostgresInstall(bin_dir, match.group(1) if match else "unknown"), ""
    looked = ", ".join(candidates) if candidates else f"{DEBIAN_GLOB}, PATH"
    return None, f"PostgreSQL server binaries (initdb, pg_ctl) not found in {looked} (apt-get install postgresql)"


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", Path(path).parent.name)) or (0,)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster in its own temporary folder.  ``start()``, ``stop()``.

    As root, the server runs as ``run_as`` (default ``postgres``); otherwise as the caller.
    """

    def __init__(self, install: PostgresInstall, *, run_as: str = "postgres", settings: dict[str, str] | None = None):
        self.install = install
        self.settings = {**FAST_SETTINGS, **(settings or {})}
        self.password = secrets.token_hex(12)
        self.port = 0
        self.base: Path | None = None
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam(run_as)
            except KeyError:
                raise RuntimeError(
                    f"running as root and there is no {run_as!r} OS user to run PostgreSQL as "
                    "(PostgreSQL refuses to run as root)"
                ) from None
        self._admin = None  # psycopg connection to the maintenance database
        self._stopped = True

    # -- paths and URLs -------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.base / "data"  # type: ignore[operator]

    @property
    def socket_dir(self) -> Path:
        return self.base  # type: ignore[return-value]

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"  # type: ignore[operator]

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        """SQLAlchemy URL over TCP on 127.0.0.1 (password authentication)."""
        pw = self.password if password is None else password
        return f"postgresql+psycopg://{SUPERUSER}:{quote(pw, safe='')}@127.0.0.1:{self.port}/{dbname}"

    def socket_url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL over the Unix socket in the server's folder (trust authentication)."""
        return f"postgresql+psycopg://{SUPERUSER}@/{dbname}?host={quote(str(self.socket_dir), safe='')}&port={self.port}"

    def conninfo(self, dbname: str = "postgres") -> str:
        """libpq connection string (for psycopg.connect) over TCP."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} password={self.password} dbname={dbname}"

    # -- running server commands ----------------------------------------------------------
    def _run(self, *args, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        kw = {}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if self._user is not None:
            kw = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
            env["HOME"] = str(self.base)
        out = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, env=env, cwd=self.base, timeout=timeout, **kw
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"{Path(str(args[0])).name} failed ({out.returncode}): {(out.stdout + out.stderr).strip()}")
        return out

    def start(self) -> "PostgresServer":
        # mkdtemp under /tmp: a short path (Unix socket paths are limited to ~107 bytes) that
        # the server's user can reach (pytest's tmp folders are 0700 for the caller)
        self.base = Path(tempfile.mkdtemp(prefix="semhash-pg-", dir="/tmp"))
        self._stopped = False
        atexit.register(self.stop)
        try:
            pwfile = self.base / "pwfile"
            pwfile.write_text(self.password + "\n")
            if self._user is not None:
                os.chown(self.base, self._user.pw_uid, self._user.pw_gid)
                os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
            self._run(
                self.install.bin_dir / "initdb", "-D", self.data_dir, "-U", SUPERUSER, "--pwfile", pwfile,
                "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--no-locale",
            )  # fmt: skip
            pwfile.unlink()
            for attempt in range(5):  # the free port can be taken between choosing and binding
                self.port = _free_port()
                self._write_settings()
                out = self._run(
                    self.install.bin_dir / "pg_ctl", "-D", self.data_dir, "-l", self.log_path, "-w", "-t", "60",
                    "start", check=False,
                )  # fmt: skip
                if out.returncode == 0:
                    break
                log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                self.log_path.unlink(missing_ok=True)
                port_taken = "could not bind" in log or "already in use" in log
                if not port_taken or attempt == 4:
                    raise RuntimeError(f"pg_ctl start failed: {(out.stdout + out.stderr).strip()}\n{log[-2000:]}")
            import psycopg

            self._admin = psycopg.connect(self.conninfo(), autocommit=True)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_settings(self) -> None:
        lines = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            **{k: (v if re.fullmatch(r"[\w.]+", str(v)) else f"'{v}'") for k, v in self.settings.items()},
        }
        # a separate file included last, so a retry with another port replaces it wholesale
        (self.data_dir / "semhash.conf").write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
        conf = self.data_dir / "postgresql.conf"
        text = conf.read_text()
        if "include_if_exists = 'semhash.conf'" not in text:
            conf.write_text(text + "\ninclude_if_exists = 'semhash.conf'\n")

    @property
    def pid(self) -> int | None:
        """The postmaster's process id (first line of postmaster.pid), while it runs."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError, TypeError):
            return None

    def stop(self) -> None:
        """Stop the server at once and remove its folder.  Safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:
                pass
            self._admin = None
        pid = self.pid
        if pid is not None:
            try:
                self._run(self.install.bin_dir / "pg_ctl", "-D", self.data_dir, "stop", "-m", "immediate", "-w", check=False)
            except Exception:
                pass
            try:  # pg_ctl could not stop it: the postmaster's children go with it
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
        atexit.unregister(self.stop)

    def restart(self, while_down=None) -> None:
        """Stop the server (fast shutdown: every connection is cut), call ``while_down()`` and
        keep what it returns in ``answers_while_down``, then start it again on the same port."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self._run(self.install.bin_dir / "pg_ctl", "-D", self.data_dir, "stop", "-m", "fast", "-w", "-t", "60")
        self.answers_while_down = while_down() if while_down is not None else None
        self._run(self.install.bin_dir / "pg_ctl", "-D", self.data_dir, "-l", self.log_path, "-w", "-t", "60", "start")
        import psycopg

        self._admin = psycopg.connect(self.conninfo(), autocommit=True)

    # -- databases --------------------------------------------------------------------------
    @property
    def has_icu(self) -> bool:
        return bool(self._admin.execute("SELECT count(*) FROM pg_collation WHERE collprovider = 'i'").fetchone()[0])  # type: ignore[union-attr]

    def create_database(self, name: str | None = None, collation: str | None = "en-US") -> str:
        """Create an empty database with ICU ``collation`` (None, or a server without ICU:
        the cluster's bytewise "C" order); returns its name."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        locale = ""
        if collation and self.has_icu:
            locale = f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{collation}' LOCALE 'C.UTF-8'"
        self._admin.execute(f'CREATE DATABASE "{name}"{locale}')  # type: ignore[union-attr]
        return name

    def drop_database(self, name: str) -> None:
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[union-attr]

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def skip_or_fail(reason: str) -> None:
    """Skip with the reason, except under SEMHASH_CI=1 where a missing part is a failure."""
    if os.environ.get("SEMHASH_CI") == "1":
        pytest.fail(f"SEMHASH_CI=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def require_postgres() -> PostgresInstall:
    install, reason = find_postgres()
    if install is None:
        skip_or_fail(reason)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        skip_or_fail("psycopg is not installed (pip install -e '.[postgres]')")
    return install  # type: ignore[return-value]


@pytest.fixture(scope="session")
def postgres_server(request) -> PostgresServer:
    """One running PostgreSQL server for the session (see the module docstring)."""
    server = PostgresServer(require_postgres())
    request.addfinalizer(server.stop)
    started = time.perf_counter()
    server.start()
    print(f"\nPostgreSQL {server.install.version} on 127.0.0.1:{server.port} started in {time.perf_counter() - started:.1f} s")
    return server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer):
    """URL of a fresh, empty database (dropped after the test)."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
