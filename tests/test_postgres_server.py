"""The PostgreSQL test server itself (tests/postgres_server.py): it really runs, as an
unprivileged user, hands each test an empty database, takes concurrent connections,
checks passwords, and is gone after the session, also after Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

import postgres_server as pgs  # tests/ is on sys.path through conftest.py's pytest_plugins

TESTS = Path(__file__).resolve().parent


def _engine(url: str):
    return create_engine(url, pool_pre_ping=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) is not a running server
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def postgres_url_has_icu(conn) -> bool:
    return conn.execute(text("SELECT datlocprovider FROM pg_database WHERE datname = current_database()")).scalar() == "i"


def test_connect_create_a_table_in_an_empty_database(postgres_url):
    assert postgres_url.startswith("postgresql+psycopg://")
    engine = _engine(postgres_url)
    try:
        assert inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT NOT NULL)"))
            conn.execute(text("INSERT INTO t VALUES (:i, :n)"), [{"i": -(2**63), "n": "min"}, {"i": 2**63 - 1, "n": "max"}])
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM t ORDER BY id")).scalars().all() == ["min", "max"]
            assert conn.execute(text("SHOW fsync")).scalar() == "off"
            assert conn.execute(text("SHOW server_encoding")).scalar() == "UTF8"
            # a production-like collation: not SQLite's bytewise order ("B" < "a" in bytes)
            order = conn.execute(text("SELECT x FROM (VALUES ('B'), ('a')) v(x) ORDER BY x")).scalars().all()
            assert order == (["a", "B"] if postgres_url_has_icu(conn) else ["B", "a"])
    finally:
        engine.dispose()


def test_each_test_database_is_separate(postgres_server, postgres_url):
    other = postgres_server.create_database()
    try:
        a, b = _engine(postgres_url), _engine(postgres_server.url(other))
        with b.begin() as conn:
            conn.execute(text("CREATE TABLE only_in_other (x INT)"))
        assert inspect(a).get_table_names() == []
        assert inspect(b).get_table_names() == ["only_in_other"]
        a.dispose(), b.dispose()
    finally:
        postgres_server.drop_database(other)
    with postgres_server._admin.execute("SELECT datname FROM pg_database") as cur:
        assert other not in {row[0] for row in cur}


def test_concurrent_connections_all_commit(postgres_url):
    engine = create_engine(postgres_url, pool_size=6)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE hits (writer INT, n INT, PRIMARY KEY (writer, n))"))
    writers, rows = 6, 200
    all_connected = threading.Barrier(writers, timeout=30)
    seen_at_barrier: list[int] = []
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            with engine.begin() as conn:  # one open transaction per thread, all at once
                conn.execute(text("INSERT INTO hits VALUES (:w, :n)"), [{"w": writer, "n": n} for n in range(rows)])
                if writer == 0:
                    seen_at_barrier.append(0)
                all_connected.wait()
                sessions = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                ).scalar()
                if writer == 0:
                    seen_at_barrier[0] = sessions
                all_connected.wait()
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert seen_at_barrier[0] >= writers  # six sessions held open transactions at the same time
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), count(DISTINCT writer) FROM hits")).one() == (writers * rows, writers)
    engine.dispose()


def test_server_runs_as_an_unprivileged_user(postgres_server):
    pid = postgres_server.pid
    assert pid is not None and _alive(pid)
    uid = int(next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("Uid:")).split()[1])
    if os.geteuid() == 0:
        assert uid != 0 and uid == pgs.pwd.getpwnam("postgres").pw_uid
    else:
        assert uid == os.geteuid()
    assert postgres_server.base.stat().st_uid == uid


def test_wrong_password_is_refused_and_the_socket_works(postgres_server, postgres_url):
    import psycopg
    from sqlalchemy.exc import OperationalError

    dbname = postgres_url.rsplit("/", 1)[1]
    bad = _engine(postgres_server.url(dbname, password="wrong"))
    with pytest.raises(OperationalError) as info:
        bad.connect()
    assert isinstance(info.value.orig, psycopg.OperationalError)
    assert "password authentication failed" in str(info.value.orig)
    via_socket = _engine(postgres_server.socket_url(dbname))
    with via_socket.connect() as conn:
        assert conn.execute(text("SELECT current_database()")).scalar() == dbname
        assert conn.execute(text("SELECT inet_server_addr()")).scalar() is None  # a Unix socket, not TCP
    bad.dispose(), via_socket.dispose()


def test_missing_postgres_skips_with_the_reason_or_fails_in_ci(tmp_path, monkeypatch):
    install, reason = pgs.find_postgres([str(tmp_path)])
    assert install is None and str(tmp_path) in reason and "apt-get install postgresql" in reason
    monkeypatch.setattr(pgs, "find_postgres", lambda: (None, reason))
    monkeypatch.delenv("SEMHASH_CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        pgs.require_postgres()
    monkeypatch.setenv("SEMHASH_CI", "1")
    with pytest.raises(pytest.fail.Exception, match="SEMHASH_CI=1 and PostgreSQL server binaries"):
        pgs.require_postgres()


def test_the_server_is_stopped_after_an_interrupted_session(tmp_path):
    """A session cut short by Ctrl-C (KeyboardInterrupt inside a test) still stops its server."""
    if pgs.find_postgres()[0] is None:
        pytest.skip("PostgreSQL not installed")
    record = tmp_path / "server.json"
    (tmp_path / "test_interrupted.py").write_text(
        "import json\n"
        "def test_interrupted(postgres_server, postgres_url):\n"
        f"    open({str(record)!r}, 'w').write(json.dumps([postgres_server.pid, str(postgres_server.base)]))\n"
        "    raise KeyboardInterrupt\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # installed plugins (schemathesis, ...) cost 5 s to load
    }
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "postgres_server", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "KeyboardInterrupt" in out.stdout + out.stderr, out.stdout + out.stderr
    pid, base = json.loads(record.read_text())
    assert not _alive(pid) and not Path(base).exists()
