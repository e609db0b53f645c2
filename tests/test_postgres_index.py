"""A PostgreSQL index of record, end to end against the real test server: the CLI with a URL,
its one-line refusals (nothing written), several writers at once, a killed writer, and the
web service reading a database.  The index/search suites themselves run on PostgreSQL too
(tests/test_index.py's ``index_location``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, select, text, update

sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_fixtures import SHAPE, add_model, write_digit_folder, home, ws  # noqa: E402
from postgres_server import _free_port  # noqa: E402

from semhash.data import decode_image  # noqa: E402
from semhash.errors import IndexError_  # noqa: E402
from semhash.hashing import from_signed64  # noqa: E402
from semhash.index import index_folder, open_index, query_files  # noqa: E402
from semhash.index.db import SCHEMA_VERSION, IndexLocation, MetaRow  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402


def _scalar(url: str, sql: str):
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def _cli(*args, home: Path):
    from click.testing import CliRunner

    from semhash.cli import main

    return CliRunner().invoke(main, [*map(str, args), "--home", str(home)])


def _semhash(*args, home: Path) -> subprocess.Popen:
    """`semhash ...` in its own process."""
    env = {**os.environ, "SEMHASH_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "semhash", *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# --------------------------------------------------------------------------- the CLI with a URL
def test_cli_index_query_status_remove_on_a_database_url(tmp_path, home, postgres_url):
    folder = tmp_path / "imgs"
    files = write_digit_folder(folder, per_class=4, classes=(0, 1))
    result = _cli("index", folder, "--index", postgres_url, "--model", "m1", "--json", home=home)
    assert result.exit_code == 0, result.output
    assert '"added": 8' in result.output
    password = IndexLocation.parse(postgres_url).password
    assert password and password not in result.output  # the index is named without it

    result = _cli("query", files[0], "--index", postgres_url, "--radius", "0", home=home)
    assert result.exit_code == 0 and str(files[0].resolve()) in result.output
    result = _cli("status", "--index", postgres_url, home=home)
    assert result.exit_code == 0 and "count: 8" in result.output and password not in result.output
    cache_dirs = list((home / "cache").iterdir())  # the derived caches live under HOME/cache
    assert len(cache_dirs) == 1 and (cache_dirs[0] / "index.lookup").is_file() and password not in cache_dirs[0].name
    result = _cli("evaluate", "--index", postgres_url, "--json", home=home)
    assert result.exit_code == 0, result.output
    assert "8 labelled images" in result.output and password not in result.output
    result = _cli("status", "--check", "--index", postgres_url, "--json", home=home)
    assert result.exit_code == 0 and '"missing": 0' in result.output
    result = _cli("remove", folder / "1", "--index", postgres_url, home=home)
    assert result.exit_code == 0 and "removed 4 rows" in result.output
    assert _scalar(postgres_url, "SELECT count(*) FROM images") == 4


def _refused(result, *fragments: str, password: str | None = None) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    if password:
        assert password not in result.output
    return lines[0]


def test_unreachable_server_wrong_password_missing_database_are_one_line_each(tmp_path, home, postgres_server, postgres_url):
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0,))
    good = IndexLocation.parse(postgres_url)
    closed_port = _free_port()  # nothing listens there
    cases = {
        "cannot connect to the database server": good.url.set(port=closed_port).render_as_string(hide_password=False),
        "refused the login": good.url.set(password="not-the-password-1234").render_as_string(hide_password=False),
        "no such database": good.url.set(database="no_such_db").render_as_string(hide_password=False),
    }
    for fragment, url in cases.items():
        for args in (["index", folder, "--model", "m1"], ["status"], ["query", next(folder.rglob("*.png"))]):
            _refused(_cli(*args, "--index", url, home=home), fragment, password=IndexLocation.parse(url).password)
    assert not (home / "cache").exists()  # nothing written anywhere
    assert _scalar(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    assert "no_such_db" not in {r[0] for r in postgres_server._admin.execute("SELECT datname FROM pg_database")}


def test_newer_schema_and_foreign_database_are_refused_and_left_alone(tmp_path, home, postgres_server, postgres_url):
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0,))
    open_index(postgres_url, create=True).close()
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(update(MetaRow).where(MetaRow.key == "schema_version").values(value=str(SCHEMA_VERSION + 1)))
    for args in (["index", folder, "--model", "m1"], ["status"]):
        _refused(_cli(*args, "--index", postgres_url, home=home), f"schema version {SCHEMA_VERSION + 1} is newer", "upgrade semhash")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM images")).scalar() == 0
        assert conn.execute(select(MetaRow.value).where(MetaRow.key == "generation")).scalar() == "0"
    engine.dispose()

    foreign = postgres_server.create_database()
    try:
        url = postgres_server.url(foreign)
        with create_engine(url).begin() as conn:
            conn.execute(text("CREATE TABLE people (name TEXT)"))
        _refused(_cli("index", folder, "--model", "m1", "--index", url, home=home), "without semhash tables")
        assert _scalar(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 1
    finally:
        postgres_server.drop_database(foreign)

    with pytest.raises(IndexError_, match="unsupported index location mysql://"):
        open_index("mysql://user:secret@host/db")
    with pytest.raises(IndexError_, match="names no database"):
        open_index("postgresql+psycopg://user@127.0.0.1:5432")


# --------------------------------------------------------------------------- several writers
def test_two_indexers_at_once_lose_nothing_and_a_query_during_indexing_succeeds(tmp_path, home, postgres_url):
    a, b = tmp_path / "a", tmp_path / "b"
    files_a = write_digit_folder(a, per_class=60, classes=(0, 1, 2, 3, 4))
    files_b = write_digit_folder(b, per_class=60, classes=(5, 6, 7, 8, 9))
    # both start on an empty database: the schema is created once, the model bound once
    procs = [_semhash("index", folder, "--model", "m1", "--index", postgres_url, "--batch-size", "2", "--quiet", home=home) for folder in (a, b)]
    ws, queried_while_indexing = Workspace(home), 0
    engine = create_engine(postgres_url)
    try:
        deadline = time.monotonic() + 120
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            with engine.connect() as conn:
                ready = "images" in {r[0] for r in conn.execute(text("SELECT tablename FROM pg_tables"))} and conn.execute(
                    text("SELECT count(*) FROM images")
                ).scalar()
            if ready:
                (result,) = query_files(postgres_url, ws, [files_a[0]], radius=16)
                assert result.total >= 1
                queried_while_indexing += any(p.poll() is None for p in procs)
            time.sleep(0.05)
        outputs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        with engine.connect() as conn:
            paths = conn.execute(text("SELECT path FROM images")).scalars().all()
            generation = int(conn.execute(text("SELECT value FROM meta WHERE key = 'generation'")).scalar())
    finally:
        engine.dispose()
    assert sorted(paths) == sorted(str(p.resolve()) for p in files_a + files_b)  # none lost, none twice
    assert generation == 1 + len(paths) // 2  # one bind, then one bump per committed batch
    assert queried_while_indexing >= 1


def test_a_killed_indexer_leaves_only_committed_batches(tmp_path, home, postgres_url):
    folder = tmp_path / "imgs"
    files = write_digit_folder(folder, per_class=100, classes=tuple(range(10)))
    proc = _semhash("index", folder, "--model", "m1", "--index", postgres_url, "--batch-size", "4", "--quiet", home=home)
    engine = create_engine(postgres_url)
    try:
        deadline, count = time.monotonic() + 60, 0
        while time.monotonic() < deadline and proc.poll() is None:
            with engine.connect() as conn:
                has_table = conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename = 'images'")).scalar()
                count = conn.execute(text("SELECT count(*) FROM images")).scalar() if has_table else 0
            if count >= 8:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the indexer finished before it could be killed"
        with engine.connect() as conn:
            stored = dict(conn.execute(text("SELECT path, code FROM images")).tuples().all())
            generation = int(conn.execute(text("SELECT value FROM meta WHERE key = 'generation'")).scalar())
    finally:
        engine.dispose()
    assert 8 <= len(stored) < len(files) and len(stored) % 4 == 0  # whole batches only
    assert generation == 1 + len(stored) // 4
    hasher = Workspace(home).model("m1").load_hasher()
    sample = sorted(stored)[:: max(1, len(stored) // 20)]
    codes = hasher.hash(np.stack([decode_image(p, SHAPE) for p in sample]))
    assert [from_signed64(stored[p]) for p in sample] == [int(c) for c in codes]

    summary = index_folder(folder, Workspace(home).model("m1"), postgres_url, progress=False)
    assert (summary.added, summary.unchanged, summary.total) == (len(files) - len(stored), len(stored), len(files))


# --------------------------------------------------------------------------- the web service
def test_the_web_service_reads_a_database_index(tmp_path, home, postgres_url):
    from fastapi.testclient import TestClient

    from semhash.web.app import create_app

    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=3, classes=(0, 1))
    location = IndexLocation.parse(postgres_url, cache_root=tmp_path / "cache")
    index_folder(folder, Workspace(home).model("m1"), location, progress=False)
    with TestClient(create_app(location, Workspace(home)), base_url="http://127.0.0.1") as client:
        response = client.get("/api/status")
        assert response.status_code == 200, response.text
        status = response.json()
        assert status["count"] == 6 and location.password not in status["index_path"]
        (found,) = client.get("/api/search/id/1", params={"radius": 16}).json()
        assert len(found["matches"]) == 6
        assert client.get("/api/images/1/file").status_code == 200


def test_semhash_serve_with_a_database_url(tmp_path, home, postgres_url):
    """The real command: its worker process gets the URL (and the cache folder) from the
    server process, and the password shows nowhere in what it prints."""
    import httpx

    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(3,))
    index_folder(folder, Workspace(home).model("m1"), IndexLocation.parse(postgres_url, cache_root=home / "cache"), progress=False)
    port = _free_port()
    proc = _semhash("serve", "--index", postgres_url, "--port", port, "--quiet", home=home)
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert status is not None and status["count"] == 2, proc.poll() is None or proc.communicate()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    password = IndexLocation.parse(postgres_url).password
    assert "serving postgresql+psycopg://" in out and password not in out + err


def test_semhash_import_into_a_database_url(tmp_path, home, postgres_url):
    """`semhash import` with a URL: the rows land once each (a path repeated, across files or
    in one: the last one wins, as on SQLite), the index is bound to the model, queries find them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = {"path": ["/data/0/a.png", "/data/1/b.png"], "code": pa.array([5, 9], pa.uint64()), "label": ["0", "1"]}
    second = {"path": ["/data/1/b.png", "/data/2/c.png", "/data/2/c.png"], "code": pa.array([7, 8, 6], pa.uint64()),
              "label": ["1", "2", "2"]}
    pq.write_table(pa.table(first), tmp_path / "a.parquet")
    pq.write_table(pa.table(second), tmp_path / "b.parquet")
    result = _cli("import", tmp_path / "a.parquet", tmp_path / "b.parquet", "--model", "m1", "--index", postgres_url, home=home)
    assert result.exit_code == 0, result.output
    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT path, code FROM images")).tuples().all())
    engine.dispose()
    assert rows == {"/data/0/a.png": 5, "/data/1/b.png": 7, "/data/2/c.png": 6}
    found = _cli("query", "--code", "7", "--radius", "0", "--index", postgres_url, "--json", home=home)
    assert found.exit_code == 0 and "/data/1/b.png" in found.output


# --------------------------------------------------------------------------- the tiers on PostgreSQL
def _photo_folder(folder: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    (folder / "a").mkdir(parents=True)
    china, flower = load_sample_images().images
    Image.fromarray(china[50:210, 100:260]).save(folder / "a" / "china.png")
    Image.fromarray(flower[100:260, 200:360]).save(folder / "a" / "flower.png")
    Image.fromarray(china[50:210, 100:260]).save(folder / "a" / "china-copy.jpg", quality=60)


def test_near_tier_duplicates_decisions_and_the_schema_upgrade_on_postgresql(tmp_path, home, postgres_url):
    import json

    from semhash.duplicates import record_decision

    folder = tmp_path / "photos"
    _photo_folder(folder)
    assert _cli("index", folder, "--index", postgres_url, "--model", "m1", "--quiet", home=home).exit_code == 0
    found = _cli("query", folder / "a" / "china.png", "--tier", "near", "--json", "--index", postgres_url, home=home)
    assert found.exit_code == 0, found.output
    assert {Path(m["path"]).name for m in json.loads(found.stdout)[0]["matches"]} == {"china.png", "china-copy.jpg"}

    def groups():
        result = _cli("duplicates", "--json", "--index", postgres_url, home=home)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    (group,) = groups()["groups"]
    assert {Path(m["path"]).name for m in [group["keeper"], *group["duplicates"]]} == {"china.png", "china-copy.jpg"}
    members = [group["keeper"]["path"], *(m["path"] for m in group["duplicates"])]
    record_decision(postgres_url, members, "keep", members[-1])
    assert groups()["groups"][0]["decided_keeper"] == members[-1]
    record_decision(postgres_url, members, "not_duplicates")  # the last decision wins
    assert groups()["totals"]["hidden_by_decisions"] == 1
    assert _scalar(postgres_url, "SELECT count(*) || ' ' || min(decision) FROM decisions") == "1 not_duplicates"
    # an index from before the near tier: upgraded in place when opened, filled by the next run
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        for column in ("near_code", "near_variants", "near_quality", "width", "height"):
            conn.execute(text(f"ALTER TABLE images DROP COLUMN {column}"))
        conn.execute(text("DROP TABLE decisions"))
        conn.execute(update(MetaRow).where(MetaRow.key == "schema_version").values(value="2"))
    engine.dispose()
    assert _cli("status", "--index", postgres_url, home=home).exit_code == 0
    assert _scalar(postgres_url, "SELECT value FROM meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
    assert _scalar(postgres_url, "SELECT count(*) FROM images WHERE near_code IS NULL") == 3
    assert _cli("index", folder, "--index", postgres_url, "--quiet", home=home).exit_code == 0
    assert _scalar(postgres_url, "SELECT count(*) FROM images WHERE near_code IS NULL") == 0
    assert groups()["totals"]["groups"] == 1  # the decision went with the dropped table
