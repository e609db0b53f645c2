"""Index robustness (issue 9): file names that are not UTF-8, unreadable folders, labels,
two indexers at once, read-only / full / locked / damaged index files, and counts of what a
folder walk leaves out.  Real SQLite, real files, real processes; nothing is mocked.

Running as root defeats chmod-based tests, so the parts that need a permission to be denied
run in a child process without root's permission bypass (``setpriv`` drops
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH); they skip, saying why, only where that is
impossible.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with or without tests/__init__.py

from index_fixtures import SHAPE, add_model, digits, write_digit_folder, write_png, home, ws  # noqa: E402
from unprivileged import cli_unprivileged, small_disk, unprivileged  # noqa: E402
from waiting import wait_for  # noqa: E402

from semhash.cli import main  # noqa: E402
from semhash.errors import IndexError_, SemhashError  # noqa: E402
from semhash.hashing import hamming, to_signed64  # noqa: E402
from semhash.index import (  # noqa: E402
    SCHEMA_VERSION,
    check_index,
    index_folder,
    key_bytes,
    key_path,
    open_index,
    path_key,
    query_files,
    remove_paths,
    search_codes,
)
from semhash.index import db as index_db  # noqa: E402
from semhash.index.search import lookup_path_for  # noqa: E402
from semhash.index.db import ImageRow, IndexLocation, bind_model, bump_generation, utc_now  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402

ONE_LINE = re.compile(r"^Error: [^\n]+\n$")


# --------------------------------------------------------------------------- helpers
@pytest.fixture
def index_path(home: Path) -> Path:
    return home / "index" / "index.sqlite"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_index(request, home: Path):
    """The workspace's SQLite file, or a fresh PostgreSQL database (caches under HOME/cache,
    where the CLI puts them too): for the tests where the store makes a difference (keys
    with escaped bytes and their ranges, labels, the cache against the record)."""
    if request.param == "sqlite":
        return home / "index" / "index.sqlite"
    return IndexLocation.parse(request.getfixturevalue("postgres_url"), cache_root=home / "cache")


def index_arg(index_path) -> str:
    """``--index`` for the CLI: the file, or the URL as given (password included)."""
    return str(index_path) if isinstance(index_path, Path) else str(index_path.to_config()["index"])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=5, classes=(0, 1, 2))
    return folder


def run(folder, ws: Workspace, index_path: Path, **kw):
    warnings: list[str] = []
    summary = index_folder(folder, ws.model("m1"), index_path, progress=False, on_warning=warnings.append, **kw)
    return summary, warnings


def cli(*args, home: Path, ok: bool = True):
    result = CliRunner().invoke(main, [*map(str, args), "--home", str(home)], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def rows(index_path) -> dict[str, tuple]:
    """key -> (id, label, code) read with plain sqlite3 (so keys must be valid UTF-8 text), or
    plain SQL on a database."""
    if isinstance(index_path, IndexLocation):
        with open_index(index_path) as db, db.session() as s:
            result = s.connection().exec_driver_sql("SELECT path, id, label, code FROM images")
            return {r[0]: tuple(r[1:]) for r in result}
    con = sqlite3.connect(index_path)
    try:
        return {r[0]: r[1:] for r in con.execute("SELECT path, id, label, code FROM images")}
    finally:
        con.close()


def integrity(index_path: Path) -> str:
    con = sqlite3.connect(index_path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def bad_name_files(folder: Path) -> list[bytes]:
    """Real files whose names are not valid UTF-8 (as unpacked from old zip archives), one in a
    label folder whose own name is not UTF-8 either, and one with a backslash in its name."""
    images, _ = digits()
    base = os.fsencode(folder)
    paths = [
        base + b"/0/caf\xe9.png",
        base + b"/0/\xff\xfe-\xed\xa0\x80.png",  # lone bytes and a UTF-8-encoded surrogate
        base + b"/cat\xe9gorie/photo \xe9t\xe9.png",
        base + b"/1/back\\slash \\xe9.png",  # looks like an escape, is not one
    ]
    for i, raw in enumerate(paths):
        write_png(Path(os.fsdecode(raw)), images[20 + i])
    return paths


# --------------------------------------------------------------------------- 1. path keys
@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")), min_size=1, max_size=4))
def test_path_keys_are_utf8_text_reversible_and_keep_folder_prefixes(parts):
    raw = b"/" + b"/".join(parts)
    key = path_key(raw)
    key.encode("utf-8")  # storable as SQLite / PostgreSQL TEXT: no lone surrogates
    assert key_bytes(key) == raw
    assert key_path(key) == os.fsdecode(raw) and path_key(os.fsdecode(raw)) == key == path_key(Path(os.fsdecode(raw)))
    parent = b"/" + b"/".join(parts[:-1]) if len(parts) > 1 else b""
    assert key == path_key(parent) + "/" + path_key(parts[-1])  # folder ranges stay prefix ranges


def test_path_keys_of_ordinary_and_odd_names():
    assert path_key("/data/ünïcødé 数字/x.png") == "/data/ünïcødé 数字/x.png"  # UTF-8 names as they are
    assert path_key(b"/data/caf\xe9.png") == "/data/caf\\xe9.png"  # printed escaped, like Python's repr
    assert path_key("/data/a\\b.png") == "/data/a\\\\b.png"  # a real backslash doubles, so keys stay unambiguous
    assert key_bytes("/data/caf\\xe9.png") == b"/data/caf\xe9.png"
    for malformed in ("/a\\q", "/a\\x4", "/a\\xZZ", "/a\\", "/a\\xE9", "/a\udce9"):
        with pytest.raises(ValueError):
            key_bytes(malformed)


def test_non_utf8_names_are_indexed_found_and_round_trip(tmp_path, ws, home, any_index):
    index_path = any_index
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=3, classes=(0, 1))
    odd = bad_name_files(folder)
    summary, warnings = run(folder, ws, index_path)
    assert (summary.added, summary.skipped, summary.total, warnings) == (10, 0, 10, [])

    stored = rows(index_path)  # plain sqlite3 reads every key as text
    expected = {path_key(os.path.realpath(raw)): raw for raw in odd}
    assert set(expected) <= set(stored)
    for key, raw in expected.items():
        assert key_bytes(key) == os.path.realpath(raw)  # the exact bytes come back
        assert Path(key_path(key)).is_file()
    assert stored[path_key(os.path.realpath(odd[2]))][1] == "cat\\xe9gorie"  # label folder escaped too
    assert stored[path_key(os.path.realpath(odd[0]))][1] == "0"

    for raw in odd:  # found by search, each with its own stored key
        (result,) = query_files(index_path, ws, [os.fsdecode(raw)], radius=0)
        assert path_key(os.path.realpath(raw)) in [m.path for m in result.matches]
        assert result.query == path_key(raw)

    again, warnings = run(folder, ws, index_path)
    assert (again.added, again.updated, again.unchanged, again.removed, warnings) == (0, 0, 10, 0, [])

    out = cli("index", folder, "--quiet", "--index", index_arg(index_path), home=home)  # printed escaped, without error
    assert "10 unchanged" in out.output
    found = cli("query", os.fsdecode(odd[0]), "--radius", "0", "--json", "--index", index_arg(index_path), home=home)
    data = json.loads(found.stdout)
    assert data[0]["query"] == path_key(odd[0])
    assert path_key(os.path.realpath(odd[0])) in [m["path"] for m in data[0]["matches"]]


# --------------------------------------------------------------------------- 1. schema upgrade
V1_DDL = [
    "CREATE TABLE images (id INTEGER NOT NULL, path TEXT NOT NULL, content_hash TEXT NOT NULL, "
    "size INTEGER NOT NULL, mtime FLOAT NOT NULL, label TEXT, code INTEGER NOT NULL, "
    "indexed_at DATETIME NOT NULL, PRIMARY KEY (id), UNIQUE (path))",
    "CREATE INDEX ix_images_code ON images (code)",
    'CREATE TABLE meta ("key" TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"))',
]


def write_v1_index(path: Path, paths: list[str], codes: list[int]) -> None:
    """An index exactly as schema version 1 (semhash before issue 9) wrote it."""
    con = sqlite3.connect(path)
    with con:
        for ddl in V1_DDL:
            con.execute(ddl)
        meta = {"schema_version": "1", "created_at": "2026-01-01T00:00:00.000000+00:00", "generation": "3",
                "model_name": "synthetic", "model_fingerprint": "0" * 16, "n_bits": "16", "input_shape": "[8, 8, 1]"}  # fmt: skip
        con.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        con.executemany(
            "INSERT INTO images (path, content_hash, size, mtime, label, code, indexed_at) VALUES (?, '-', 1, 0.0, ?, ?, '2026-01-01 00:00:00.000000')",
            [(p, Path(p).parent.name, c) for p, c in zip(paths, codes)],
        )
    con.close()


def test_a_schema_1_index_is_upgraded_in_place_and_keeps_working(tmp_path):
    path = tmp_path / "old.sqlite"
    # the 4th path, once escaped, is the 5th's old text: a one-step rewrite would collide
    old_paths = ["/data/a/plain.png", "/data/we\\ird/back\\slash.png", "/data/b/ünï.png", "/data/c\\d.png", "/data/c\\\\d.png"]
    write_v1_index(path, old_paths, [1, 3, 0b1111, 0xFF00, 0xFF00])
    with open_index(path) as db:
        meta = db.meta()
        assert meta.schema_version == SCHEMA_VERSION == 4 and meta.generation == 4
    stored = rows(path)
    assert sorted(stored) == sorted(path_key(p) for p in old_paths)
    assert {key_path(k) for k in stored} == set(old_paths)  # v1 paths were raw text: same files
    assert stored[path_key(old_paths[1])][1] == "we\\\\ird"
    assert path_key(old_paths[3]) == old_paths[4]
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    (found,) = search_codes(path, [1], 1)
    assert [m.path for m in found] == [path_key(old_paths[0]), path_key(old_paths[1])]
    with open_index(path) as db:  # a second open has nothing to do
        assert db.meta().generation == 4


# --------------------------------------------------------------------------- 3. unreadable folders
def test_an_unreadable_subfolder_is_a_warning_and_its_rows_stay(folder, ws, home, index_path):
    unprivileged()
    run(folder, ws, index_path)
    before = rows(index_path)
    locked = folder / "1"
    locked.chmod(0)
    try:
        result, itself = cli_unprivileged(
            ["index", folder, "--quiet", "--json", "--home", home], ["index", locked, "--quiet", "--home", home]
        )
    finally:
        locked.chmod(0o755)
    assert itself["exit_code"] == 1 and "cannot read the folder (permission denied)" in itself["stderr"], itself
    assert result["exit_code"] == 0, result
    data = json.loads(result["stdout"])
    assert (data["removed"], data["unreadable_folders"], data["total"]) == (0, 1, 15)
    (warning,) = result["stderr"].splitlines()
    assert str(locked.resolve()) in warning and "permission denied" in warning and "kept" in warning
    assert rows(index_path) == before


def test_remove_drops_rows_of_gone_files_and_folders(tmp_path, folder, home, index_path):
    other = tmp_path / "other"
    write_digit_folder(other, per_class=3, classes=(5,))
    cli("index", folder, "--quiet", home=home)
    cli("index", other, "--quiet", home=home)
    assert len(rows(index_path)) == 18

    shutil.rmtree(other)  # the folder itself is gone: index refuses and says how to drop its rows
    gone = cli("index", other, home=home, ok=False)
    assert gone.exit_code == 1 and "no such folder" in gone.output and "semhash remove" in gone.output
    removed = cli("remove", other, "--json", home=home)
    assert json.loads(removed.stdout)["removed"] == 3 and len(rows(index_path)) == 15
    again = cli("remove", other, home=home, ok=False)  # nothing there any more: said, nothing done
    assert again.exit_code == 1 and ONE_LINE.match(again.output) and "nothing in the index" in again.output

    single = sorted((folder / "0").iterdir())[0]
    assert "removed 1" in cli("remove", single, home=home).output
    assert path_key(single.resolve()) not in rows(index_path)

    for png in (folder / "2").glob("*.png"):  # emptied: index refuses, rows stay, hint given
        png.unlink()
    (folder / "2" / "notes.txt").write_text("no images here now")
    emptied = cli("index", folder / "2", home=home, ok=False)
    assert emptied.exit_code == 1 and "5 indexed images" in emptied.output and "semhash remove" in emptied.output
    assert len(rows(index_path)) == 14


def test_status_reports_missing_files_only_when_asked(folder, home, index_path):
    cli("index", folder, "--quiet", home=home)
    for png in sorted((folder / "1").iterdir())[:2]:
        png.unlink()
    plain = json.loads(cli("status", "--json", home=home).stdout)
    assert plain["count"] == 15 and plain.get("missing") is None  # no per-row stat by default
    checked = json.loads(cli("status", "--check", "--json", home=home).stdout)
    assert checked["integrity"] == "ok" and checked["missing"] == 2 and len(checked["missing_examples"]) == 2
    table = cli("status", "--check", home=home).output
    assert "missing: 2" in table and "semhash remove --missing" in table
    pruned = json.loads(cli("remove", "--missing", "--json", home=home).stdout)
    assert pruned["removed"] == 2 and len(rows(index_path)) == 13


# --------------------------------------------------------------------------- 4. labels
def test_reindexing_a_subfolder_keeps_labels_and_says_so(tmp_path, ws, home, any_index):
    index_path = any_index
    big = tmp_path / "big"
    write_digit_folder(big, per_class=2, classes=(0,))
    for i in range(2):
        write_digit_folder(big / "3" / f"copy{i}", per_class=2, classes=(3,), start=i * 2)
    first, _ = run(big, ws, index_path)
    assert first.added == 6 and sorted(v[1] for v in rows(index_path).values()) == ["0", "0", "3", "3", "3", "3"]

    sub, warnings = run(big / "3", ws, index_path)
    assert (sub.unchanged, sub.labels_kept, sub.relabelled) == (4, 4, 0)
    assert sorted(v[1] for v in rows(index_path).values()) == ["0", "0", "3", "3", "3", "3"]  # not "copy0"
    (warning,) = warnings
    assert "4 indexed images" in warning and "--relabel" in warning

    out = cli("index", big / "3", "--quiet", "--index", index_arg(index_path), home=home)
    assert "4 kept their label" in out.output
    relabelled, _ = run(big / "3", ws, index_path, relabel=True)
    assert (relabelled.relabelled, relabelled.labels_kept) == (4, 0)
    assert sorted(v[1] for v in rows(index_path).values()) == ["0", "0", "copy0", "copy0", "copy1", "copy1"]
    assert "--relabel" in cli("index", "--help", home=home).output


# --------------------------------------------------------------------------- 5. concurrency, locks, read-only, full
CHILD_INDEXER = """
import pathlib, sys, time
from semhash.cli import main
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.touch()
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.005)
main(sys.argv[3:])
"""


def test_two_indexers_at_once_on_overlapping_folders(tmp_path, home, index_path):
    big = tmp_path / "big"
    files = write_digit_folder(big, per_class=25, classes=(0, 1, 2, 3))
    go = tmp_path / "go"
    children = []
    for name, target in (("a", big), ("b", big / "3")):
        ready = tmp_path / f"ready-{name}"
        args = [str(ready), str(go), "index", str(target), "--batch-size", "3", "--quiet", "--home", str(home)]
        children.append((ready, subprocess.Popen([sys.executable, "-c", CHILD_INDEXER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    wait_for(lambda: all(ready.exists() for ready, _ in children), "both indexers to start")
    go.touch()  # both start indexing the same fresh index at the same moment
    outputs = [child.communicate(timeout=120) for _, child in children]
    for (_, child), (stdout, stderr) in zip(children, outputs):
        assert child.returncode == 0 and "Traceback" not in stderr, stdout + stderr
    stored = rows(index_path)
    assert sorted(stored) == sorted(path_key(p.resolve()) for p in files)  # none lost, none twice
    for key, (_, label, _) in stored.items():  # labels as first indexed: from big/, or none from big/3
        parent = key.rsplit("/", 2)[-2]
        assert label == parent or (parent == "3" and label is None), (key, label)
    assert integrity(index_path) == "ok"
    again, _ = run(big, Workspace(home), index_path)
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, 100, 0)


def test_a_writer_holding_the_lock_too_long_is_one_line(monkeypatch, folder, ws, index_path):
    run(folder, ws, index_path)
    before = rows(index_path)
    write_digit_folder(folder, per_class=2, classes=(7,))
    monkeypatch.setattr(index_db, "_BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(index_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer, stuck
    try:
        with pytest.raises(IndexError_) as err:
            run(folder, ws, index_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    message = str(err.value)
    assert str(index_path) in message and "locked" in message and "\n" not in message
    assert rows(index_path) == before


def test_a_reader_in_a_long_transaction_does_not_block_indexing(monkeypatch, folder, ws, index_path):
    run(folder, ws, index_path)
    write_digit_folder(folder, per_class=2, classes=(7,))
    monkeypatch.setattr(index_db, "_BUSY_TIMEOUT_S", 0.5)
    reader = sqlite3.connect(index_path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM images").fetchone()[0] == 15  # holds its snapshot
    try:
        summary, _ = run(folder, ws, index_path)
        assert (summary.added, summary.total) == (2, 17)
        assert reader.execute("SELECT count(*) FROM images").fetchone()[0] == 15  # still its snapshot
    finally:
        reader.execute("ROLLBACK")
        reader.close()


def test_a_read_only_index_answers_queries_and_refuses_writes_in_one_line(tmp_path, folder, ws, home, index_path):
    unprivileged()
    run(folder, ws, index_path)
    before = rows(index_path)
    query = sorted(folder.rglob("*.png"))[0]
    write_digit_folder(folder, per_class=1, classes=(8,))  # something new to write
    v1 = tmp_path / "v1" / "old.sqlite"  # an old index on read-only media with nothing to rewrite
    v1.parent.mkdir()
    write_v1_index(v1, [f"/data/x/{i}.png" for i in range(3)], [1, 2, 3])
    v1_odd = tmp_path / "v1" / "odd.sqlite"  # ... and one whose keys would need rewriting
    write_v1_index(v1_odd, ["/data/a\\b.png"], [1])
    locked = [index_path.parent, index_path, v1.parent, v1, v1_odd]
    modes = [p.stat().st_mode for p in locked]
    for p in locked:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        status, found, refused, old, odd = cli_unprivileged(
            ["status", "--json", "--home", home],
            ["query", query, "--json", "--home", home],
            ["index", folder, "--quiet", "--home", home],
            ["status", "--json", "--index", v1, "--home", home],
            ["status", "--index", v1_odd, "--home", home],
        )
    finally:
        for p, mode in zip(locked, modes):
            p.chmod(mode)
    assert status["exit_code"] == 0 and json.loads(status["stdout"])["count"] == 15, status
    assert found["exit_code"] == 0 and json.loads(found["stdout"])[0]["matches"], found
    assert refused["exit_code"] == 1 and refused["exception"] is None, refused
    (line,) = refused["stderr"].splitlines()
    assert str(index_path) in line and "read-only" in line
    assert rows(index_path) == before
    assert old["exit_code"] == 0 and json.loads(old["stdout"])["count"] == 3, old
    assert odd["exit_code"] == 1 and "write access" in odd["stderr"] and len(odd["stderr"].splitlines()) == 1, odd


def test_a_full_disk_is_one_line_and_keeps_what_was_committed(tmp_path, folder, ws, index_path):
    run(folder, ws, index_path)
    before = rows(index_path)
    more = tmp_path / "more"
    write_digit_folder(more, per_class=60, classes=(4, 5, 6))
    con = sqlite3.connect(index_path)
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.close()

    def cap_size(dbapi_connection, _record):  # SQLite's own limit: writes past it fail with SQLITE_FULL
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 6}")

    event.listen(Engine, "connect", cap_size)
    try:
        with pytest.raises(IndexError_) as err:
            run(more, ws, index_path, batch_size=8)
    finally:
        event.remove(Engine, "connect", cap_size)
    message = str(err.value)
    assert str(index_path) in message and "full" in message and "\n" not in message
    after = rows(index_path)
    assert {k: after[k] for k in before} == before and 15 < len(after) < 15 + 180  # some batches committed
    assert integrity(index_path) == "ok"
    summary, _ = run(more, ws, index_path)  # space back: the run finishes what was left
    assert summary.total == 195 and summary.added == 195 - len(after)


def test_a_full_disk_on_a_real_tmpfs(tmp_path, folder, home):
    with small_disk(tmp_path / "disk", "160k") as disk:
        index_path = disk / "index.sqlite"
        more = tmp_path / "more"
        write_digit_folder(more, per_class=120, classes=(4, 5, 6, 7, 8))
        result = cli("index", more, "--index", index_path, "--batch-size", "16", "--quiet", home=home, ok=False)
        assert result.exit_code == 1 and ONE_LINE.match(result.output), result.output
        assert str(index_path) in result.output and "full" in result.output
        assert 0 < len(rows(index_path)) < 600 and integrity(index_path) == "ok"


# --------------------------------------------------------------------------- 6. damage
def synthetic_rows(index_path: Path, n: int) -> None:
    with open_index(index_path) as db:
        with db.write_session() as s, s.begin():
            s.execute(
                insert(ImageRow),
                [{"path": f"/synthetic/{i % 97}/img-{i:06d}.png", "content_hash": f"{i:064x}", "size": 1000 + i,
                  "mtime": float(i), "label": str(i % 97), "code": i % 65536, "indexed_at": utc_now()}
                 for i in range(n)],
            )  # fmt: skip
            bump_generation(s)


def damage(path: Path, n_bytes: int = 64 * 1024) -> None:
    """Seeded garbage over the middle of the file (header and first pages intact)."""
    size = path.stat().st_size
    assert size > 3 * n_bytes
    garbage = np.random.default_rng(0).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    with open(path, "r+b") as fh:
        fh.seek(size // 2 - n_bytes // 2)
        fh.write(garbage)


def test_a_damaged_index_is_one_line_everywhere_and_rebuild_recovers(folder, home, ws, index_path):
    from semhash.pipeline import evaluate_index

    cli("index", folder, "--quiet", home=home)
    synthetic_rows(index_path, 4000)
    query = sorted(folder.rglob("*.png"))[0]
    cli("query", query, "--radius", "16", home=home)  # the lookup cache is now current
    damage(index_path)

    # plain `status` is left out: while the lookup is current it answers from the lookup's
    # header and reads no row (int10: status at 10^7 rows), so only --check finds the damage
    for args in (["index", folder, "--quiet"], ["query", query, "--radius", "16"], ["status", "--check"]):
        result = cli(*args, home=home, ok=False)
        assert result.exit_code == 1, (args, result.output)
        assert ONE_LINE.match(result.output), (args, result.output)
        assert str(index_path) in result.output and "damaged" in result.output, (args, result.output)
        assert "--rebuild" in result.output, (args, result.output)
    with pytest.raises(SemhashError) as err:
        evaluate_index(ws, index_path, home / "report")
    assert "damaged" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(IndexError_, match="damaged"):
        check_index(index_path)

    rebuilt = cli("index", folder, "--rebuild", "--quiet", home=home)
    assert "15 added" in rebuilt.output and "damaged" in rebuilt.stderr
    kept = [p for p in index_path.parent.iterdir() if ".damaged" in p.name]
    assert kept and kept[0].stat().st_size > 0  # the damaged file is kept, not deleted
    assert integrity(index_path) == "ok" and len(rows(index_path)) == 15
    assert json.loads(cli("query", query, "--json", home=home).stdout)[0]["matches"]


def make_code_index(path: Path, codes: list[int]) -> list[str]:
    paths = [f"/synthetic/img-{i:05d}.png" for i in range(len(codes))]
    with open_index(path, create=True) as db:
        with db.write_session() as s, s.begin():
            bind_model(s, name="synthetic", fingerprint="0" * 16, n_bits=16, input_shape=SHAPE)
            s.execute(
                insert(ImageRow),
                [{"path": p, "content_hash": "-", "size": 1, "mtime": 0.0, "label": None, "code": to_signed64(c),
                  "indexed_at": utc_now()} for p, c in zip(paths, codes)],
            )  # fmt: skip
            bump_generation(s)
    return paths


def test_the_cache_answers_only_what_the_record_confirms(any_index):
    path = any_index
    paths = make_code_index(path, [0b0, 0b1, 0b11, 0xF0F0, 0xFFFF])
    assert [m.path for m in search_codes(path, [0], 2)[0]] == paths[:3]
    with open_index(path) as db, db.engine.begin() as con:  # edited behind semhash's back: no generation bump
        con.exec_driver_sql(f"UPDATE images SET code = {0xF00F} WHERE path = '{paths[1]}'")
        con.exec_driver_sql(f"DELETE FROM images WHERE path = '{paths[2]}'")
    (found,) = search_codes(path, [0], 2)
    assert [m.path for m in found] == [paths[0]]
    assert all(m.distance == int(hamming(np.uint64(0), np.uint64(m.code))) for m in found)


def test_an_older_cache_file_swapped_in_is_not_trusted(tmp_path):
    path = tmp_path / "codes.sqlite"
    paths = make_code_index(path, [0b0, 0xFF00, 0xFFFF])
    search_codes(path, [0], 2)
    cache = lookup_path_for(path)
    old = cache.read_bytes()
    with open_index(path) as db:  # same row count, one code moved next to the query
        with db.write_session() as s, s.begin():
            s.query(ImageRow).filter(ImageRow.path == paths[1]).update({"code": 0b1})
            bump_generation(s)
    assert [m.path for m in search_codes(path, [0], 2)[0]] == paths[:2]  # cache rebuilt for the new state
    tmp = cache.with_name("swap.tmp")
    tmp.write_bytes(old)  # two writers interleaved: the older state's file renamed last
    os.replace(tmp, cache)
    assert [m.path for m in search_codes(path, [0], 2)[0]] == paths[:2]


# --------------------------------------------------------------------------- 12. bar, counts
def test_warnings_go_through_the_progress_bars_writer(folder, home):
    (folder / "1" / "broken.png").write_bytes(b"not an image")
    result = cli("index", folder, home=home)  # progress bar on
    assert "indexing" in result.stderr and "broken.png" in result.stderr
    assert re.search(r"[^\r\n]warning:", result.stderr) is None, result.stderr  # never glued to the bar


def test_what_a_walk_leaves_out_is_counted(tmp_path, folder, ws, home, index_path):
    images, _ = digits()
    write_png(folder / "0" / ".hidden.png", images[40])
    write_png(folder / ".cache" / "thumb.png", images[41])
    (folder / "1" / "notes.txt").write_text("not an image")
    (folder / "README").write_text("no extension")
    elsewhere = tmp_path / "elsewhere"
    write_digit_folder(elsewhere, per_class=2, classes=(9,))
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (folder / "2" / "link.png").symlink_to(elsewhere / "9" / sorted(os.listdir(elsewhere / "9"))[0])
    summary, warnings = run(folder, ws, index_path)
    counts = (summary.added, summary.hidden, summary.other_files, summary.symlinked_folders, summary.unreadable_folders)
    assert counts == (16, 2, 2, 1, 0) and warnings == []
    data = json.loads(cli("index", folder, "--quiet", "--json", home=home).stdout)
    assert (data["hidden"], data["other_files"], data["symlinked_folders"], data["unreadable_folders"]) == (2, 2, 1, 0)
    line = cli("index", folder, "--quiet", home=home).output
    assert "not indexed: 2 hidden, 2 other files, 1 symlinked folder (not followed)" in line
