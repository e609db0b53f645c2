"""semhash.index on real SQLite, the real lookup cache and real PNG files (no mocks of either store).

Every test that takes ``index_path`` (or ``index_location``) runs twice: on a SQLite file and
on a real PostgreSQL database (the session server of tests/postgres_server.py, one fresh
database per test), through the same library calls."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with or without tests/__init__.py

from index_fixtures import SHAPE, add_model, digits, write_digit_folder, write_png  # noqa: E402

from semhash.data import decode_image  # noqa: E402
from semhash.errors import DatasetError, ImageError, IndexError_  # noqa: E402
from semhash.hashing import from_signed64, hamming, to_signed64  # noqa: E402
from semhash.index import (  # noqa: E402
    SCHEMA_VERSION,
    IndexSummary,
    index_folder,
    index_info,
    load_index_codes,
    open_index,
    query_files,
    search_codes,
)
from semhash.index import lookup as hamming_lookup  # noqa: E402
from semhash.index import search as index_search  # noqa: E402
from semhash.index.db import ImageRow, IndexLocation, MetaRow, bind_model, bump_generation, utc_now  # noqa: E402
from semhash.workspace import ModelInfo, Workspace  # noqa: E402

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "ws"
    add_model(home, "m1", seed=0, n_bits=16)
    add_model(home, "m2", seed=1, n_bits=16)
    add_model(home, "m8", seed=2, n_bits=8)
    return home


@pytest.fixture
def ws(home: Path) -> Workspace:
    return Workspace(home)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=5, classes=(0, 1, 2))
    return folder


@pytest.fixture(params=["sqlite", "postgresql"])
def index_location(request, tmp_path: Path):
    """Where the test's index lives: a SQLite file, or a fresh PostgreSQL database (its
    caches under tmp_path)."""
    if request.param == "sqlite":
        return tmp_path / "ws" / "index" / "index.sqlite"
    return IndexLocation.parse(request.getfixturevalue("postgres_url"), cache_root=tmp_path / "cache")


@pytest.fixture
def index_path(home: Path, index_location):
    return index_location


def is_sqlite(index_path) -> bool:
    return not isinstance(index_path, IndexLocation)


def lookup_path_of(index_path) -> Path:
    """Where the lookup cache of this index goes: beside the file, or in the database's cache folder."""
    base = index_path if is_sqlite(index_path) else index_path.cache_base
    return index_search.lookup_path_for(base)


def index_exists(index_path) -> bool:
    if is_sqlite(index_path):
        return index_path.exists()
    from sqlalchemy import create_engine, inspect

    engine = create_engine(index_path.url)
    try:
        return bool(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def run(folder: Path, model: ModelInfo, index_path: Path, **kw) -> tuple[IndexSummary, list[str]]:
    warnings: list[str] = []
    summary = index_folder(folder, model, index_path, progress=False, on_warning=warnings.append, **kw)
    return summary, warnings


def rows(index_path) -> dict[str, tuple]:
    """path -> (id, content_hash, size, mtime, label, uint64 code), read with plain SQL."""
    with open_index(index_path) as db, db.session() as s:
        result = s.connection().exec_driver_sql("SELECT path, id, content_hash, size, mtime, label, code FROM images")
        return {r[0]: (r[1], r[2], r[3], r[4], r[5], from_signed64(r[6])) for r in result}


def meta_value(index_path, key: str) -> str:
    with open_index(index_path) as db, db.session() as s:
        return s.scalar(select(MetaRow.value).where(MetaRow.key == key))


def bump_mtime(path: Path, seconds: float = 10.0) -> None:
    st = path.stat()
    os.utime(path, (st.st_atime + seconds, st.st_mtime + seconds))


# --------------------------------------------------------------------------- indexing
def test_index_then_reindex_is_all_unchanged(folder, ws, index_path):
    summary, warnings = run(folder, ws.model("m1"), index_path)
    assert (summary.added, summary.updated, summary.unchanged, summary.skipped, summary.removed) == (15, 0, 0, 0, 0)
    assert summary.total == 15 and warnings == []
    assert summary.index_path == index_path and summary.lookup_path == lookup_path_of(index_path)
    assert summary.lookup_path.is_file() and hamming_lookup.read_header(summary.lookup_path)["count"] == 15
    generation = meta_value(index_path, "generation")

    again, warnings = run(folder, ws.model("m1"), index_path)
    counts = (again.added, again.updated, again.unchanged, again.skipped, again.removed, again.total)
    assert counts == (0, 0, 15, 0, 0, 15)
    assert meta_value(index_path, "generation") == generation  # nothing written: the cache stays current


def test_rows_record_path_label_hash_and_code(folder, ws, index_path):
    run(folder, ws.model("m1"), index_path)
    hasher = ws.model("m1").load_hasher()
    stored = rows(index_path)
    for path in folder.rglob("*.png"):
        key = str(path.resolve())
        _, content_hash, size, mtime, label, code = stored[key]
        assert content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
        assert size == path.stat().st_size and mtime == path.stat().st_mtime
        assert label == path.parent.name
        assert code == int(hasher.hash(decode_image(path, SHAPE)[None])[0])
    assert meta_value(index_path, "model_name") == "m1"
    assert meta_value(index_path, "model_fingerprint") == hasher.fingerprint
    assert meta_value(index_path, "n_bits") == "16"
    assert json.loads(meta_value(index_path, "input_shape")) == list(SHAPE)
    assert meta_value(index_path, "schema_version") == str(SCHEMA_VERSION)


def test_touch_is_unchanged_and_modify_is_updated(folder, ws, index_path):
    run(folder, ws.model("m1"), index_path)
    touched = folder / "0" / sorted(os.listdir(folder / "0"))[0]
    modified = folder / "1" / sorted(os.listdir(folder / "1"))[0]
    before = rows(index_path)

    bump_mtime(touched)  # same bytes, new mtime: re-read, same hash, only mtime refreshed
    images, labels = digits()
    write_png(modified, images[np.flatnonzero(labels == 7)[0]])
    bump_mtime(modified)

    summary, _ = run(folder, ws.model("m1"), index_path)
    assert (summary.added, summary.updated, summary.unchanged, summary.removed) == (0, 1, 14, 0)
    after = rows(index_path)
    t, m = str(touched.resolve()), str(modified.resolve())
    assert after[t][3] == touched.stat().st_mtime != before[t][3]
    assert after[t][5] == before[t][5] and after[t][0] == before[t][0]
    assert after[m][1] == hashlib.sha256(modified.read_bytes()).hexdigest() != before[m][1]
    hasher = ws.model("m1").load_hasher()
    assert after[m][5] == int(hasher.hash(decode_image(modified, SHAPE)[None])[0])

    third, _ = run(folder, ws.model("m1"), index_path)
    assert (third.updated, third.unchanged) == (0, 15)


def test_added_and_removed_files_leave_other_folders_alone(tmp_path, folder, ws, index_path):
    other = tmp_path / "other"
    write_digit_folder(other, per_class=3, classes=(5,))
    run(other, ws.model("m1"), index_path)
    run(folder, ws.model("m1"), index_path)
    other_rows = {k: v for k, v in rows(index_path).items() if k.startswith(str(other.resolve()) + os.sep)}
    assert len(other_rows) == 3

    doomed = sorted((folder / "2").iterdir())[:3]
    for path in doomed:
        path.unlink()
    write_digit_folder(folder, per_class=2, classes=(3,))

    summary, _ = run(folder, ws.model("m1"), index_path)
    assert (summary.added, summary.removed, summary.unchanged, summary.total) == (2, 3, 12, 17)
    now = rows(index_path)
    assert all(str(p.resolve()) not in now for p in doomed)
    assert {k: v for k, v in now.items() if k in other_rows} == other_rows
    assert sum(1 for v in now.values() if v[4] == "3") == 2


def test_a_sibling_folder_sharing_a_name_prefix_is_not_removed(tmp_path, ws, index_path):
    a, ab = tmp_path / "a", tmp_path / "a_b"  # '_' would be a LIKE wildcard; 'a_b' > 'a/'
    write_digit_folder(a, per_class=2, classes=(0,))
    write_digit_folder(ab, per_class=2, classes=(1,))
    run(ab, ws.model("m1"), index_path)
    summary, _ = run(a, ws.model("m1"), index_path)
    assert summary.removed == 0 and summary.total == 4


def test_bad_files_are_skipped_with_a_warning_and_the_rest_indexes(folder, ws, index_path):
    run(folder, ws.model("m1"), index_path)
    before = rows(index_path)

    good_png = next((folder / "0").iterdir()).read_bytes()
    bad = {
        "corrupt.png": good_png[: len(good_png) // 2],
        "notes.png": b"this is a text file, not an image\n",
        "empty.png": b"",
    }
    for name, data in bad.items():
        (folder / "0" / name).write_bytes(data)
    locked = folder / "0" / "locked.png"
    locked.write_bytes(good_png)
    locked.chmod(0)
    write_digit_folder(folder, per_class=2, classes=(4,))
    try:
        summary, warnings = run(folder, ws.model("m1"), index_path)
    finally:
        locked.chmod(0o644)

    expected_bad = list(bad) + ([] if IS_ROOT else ["locked.png"])  # root can read a chmod 000 file
    assert summary.skipped == len(expected_bad) == len(warnings) == len(summary.skipped_files)
    for name in expected_bad:
        (message,) = [w for w in warnings if name in w]
        assert str(folder.resolve() / "0" / name) in message and "\n" not in message
    assert any("empty" in w for w in warnings if "empty.png" in w)
    assert any("not a recognised image" in w for w in warnings if "notes.png" in w)
    if not IS_ROOT:
        assert any("permission denied" in w for w in warnings if "locked.png" in w)
    assert summary.added == 2 + (1 if IS_ROOT else 0)
    after = rows(index_path)
    assert {k: after[k] for k in before} == before  # prior rows intact


def test_an_indexed_file_that_turns_corrupt_loses_its_stale_row(folder, ws, index_path):
    run(folder, ws.model("m1"), index_path)
    victim = next((folder / "1").iterdir())
    victim.write_bytes(b"garbage")
    bump_mtime(victim)
    summary, warnings = run(folder, ws.model("m1"), index_path)
    assert summary.skipped == 1 and str(victim.resolve()) in warnings[0]
    assert str(victim.resolve()) not in rows(index_path) and summary.total == 14


def test_unicode_file_names(tmp_path, ws, index_path):
    folder = tmp_path / "bilder ünï"
    images, _ = digits()
    target = write_png(folder / "Ωmega" / "ünïcødé 图像 ✓.png", images[0])
    write_png(folder / "Ωmega" / "plain.png", images[1])
    summary, _ = run(folder, ws.model("m1"), index_path)
    assert summary.added == 2
    (result,) = query_files(index_path, ws, [target], radius=0)
    assert result.matches[0].path == str(target.resolve())
    assert result.matches[0].label == "Ωmega" and result.matches[0].distance == 0


def test_missing_empty_and_non_folders_raise_dataset_error(tmp_path, ws, index_path):
    with pytest.raises(DatasetError, match="no such folder"):
        index_folder(tmp_path / "nope", ws.model("m1"), index_path, progress=False)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a folder"):
        index_folder(tmp_path / "file.png", ws.model("m1"), index_path, progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(DatasetError, match="no image files found"):
        index_folder(tmp_path / "empty", ws.model("m1"), index_path, progress=False)
    assert not index_exists(index_path)  # nothing created for a bad folder


# --------------------------------------------------------------------------- model binding
def test_a_different_model_is_refused_and_rebuild_rebinds(folder, ws, index_path):
    run(folder, ws.model("m1"), index_path)
    before = rows(index_path)
    for other in ("m2", "m8"):
        with pytest.raises(IndexError_) as err:
            run(folder, ws.model(other), index_path)
        message = str(err.value)
        assert "'m1'" in message and f"'{other}'" in message and "--rebuild" in message and "\n" not in message
        assert "--model m1" in message  # the way to add to the index as it is
    assert rows(index_path) == before  # never a mixed index

    summary, _ = run(folder, ws.model("m8"), index_path, rebuild=True)
    assert (summary.added, summary.removed, summary.total) == (15, 15, 15)
    assert meta_value(index_path, "model_name") == "m8" and meta_value(index_path, "n_bits") == "8"
    assert all(code < 256 for *_, code in rows(index_path).values())
    results = query_files(index_path, ws, [next(folder.rglob("*.png"))], radius=8)
    assert len(results[0].matches) == 15 and len(results[0].bits) == 8


def test_rebuild_drops_rows_of_every_folder(tmp_path, folder, ws, index_path):
    other = tmp_path / "other"
    write_digit_folder(other, per_class=2, classes=(9,))
    run(other, ws.model("m1"), index_path)
    run(folder, ws.model("m1"), index_path)
    summary, _ = run(folder, ws.model("m2"), index_path, rebuild=True)
    assert summary.removed == 17 and summary.total == 15


def test_query_refuses_a_model_changed_since_indexing(folder, home, ws, index_path):
    run(folder, ws.model("m1"), index_path)
    add_model(home, "m1", seed=42, n_bits=16)  # retrained / re-exported under the same name
    with pytest.raises(IndexError_, match="changed since indexing.*--rebuild"):
        query_files(index_path, ws, [next(folder.rglob("*.png"))])


def test_query_files_finds_itself_and_rejects_unreadable_queries(tmp_path, folder, ws, index_path):
    run(folder, ws.model("m1"), index_path)
    query = sorted(folder.rglob("*.png"))[4]
    (result,) = query_files(index_path, ws, [query], radius=2)
    hasher = ws.model("m1").load_hasher()
    code = int(hasher.hash(decode_image(query, SHAPE)[None])[0])
    assert result.query == str(query) and result.code == code and len(result.bits) == 16
    assert result.bits == "".join(str((code >> i) & 1) for i in range(16))
    assert str(query.resolve()) in [m.path for m in result.matches if m.distance == 0]
    assert all(m.distance == int(hamming(code, m.code)) <= 2 for m in result.matches)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="broken.png"):
        query_files(index_path, ws, [broken])


class _FailingHasher:
    """Wraps a hasher; the call hashing its second batch runs ``fail`` instead."""

    def __init__(self, inner, fail):
        self.inner, self.fail, self.calls = inner, fail, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def hash(self, images):
        self.calls += 1
        if self.calls == 2:
            self.fail()
        return self.inner.hash(images)


def _die() -> None:
    os._exit(9)


def failing_model(model: ModelInfo, fail) -> ModelInfo:
    class FailingModel(ModelInfo):
        def load_hasher(self):
            return _FailingHasher(super().load_hasher(), fail)

    return FailingModel(model.name, model.directory, model.meta)


def test_interrupted_run_keeps_committed_rows(tmp_path, folder, ws, index_path):
    run(folder, ws.model("m1"), index_path)
    before = rows(index_path)
    more = tmp_path / "more"
    write_digit_folder(more, per_class=4, classes=(6, 7, 8))  # 12 files, batches of 4

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        # in this process (workers=1): the interruption is raised by the second batch's hashing
        index_folder(more, failing_model(ws.model("m1"), interrupt), index_path, batch_size=4, progress=False,
                     workers=1)  # fmt: skip

    if is_sqlite(index_path):
        con = sqlite3.connect(index_path)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
    after = rows(index_path)
    assert {k: after[k] for k in before} == before
    assert len(after) == len(before) + 4  # the first batch was committed, the second was not

    summary, _ = run(more, ws.model("m1"), index_path, batch_size=4)
    assert (summary.added, summary.unchanged, summary.total) == (8, 4, 27)


# --------------------------------------------------------------------------- search
def make_code_index(path: Path, codes: list[int], n_bits: int) -> list[str]:
    """An index holding exactly ``codes`` (rows inserted directly; the model is fictitious)."""
    paths = [f"/synthetic/img-{i:05d}.png" for i in range(len(codes))]
    with open_index(path, create=True) as db:
        with db.write_session() as s, s.begin():
            bind_model(s, name="synthetic", fingerprint="0" * 16, n_bits=n_bits, input_shape=SHAPE)
            s.execute(
                insert(ImageRow),
                [
                    {"path": p, "content_hash": "-", "size": 1, "mtime": 0.0, "label": str(i % 3),
                     "code": to_signed64(c), "indexed_at": utc_now()}
                    for i, (p, c) in reversed(list(enumerate(zip(paths, codes))))
                ],  # ids in reverse path order: ties broken by path, never by id
            )  # fmt: skip
            bump_generation(s)
    return paths


def clustered_codes(rng: np.random.Generator, n_bits: int, n_centres: int = 12, per_centre: int = 15) -> list[int]:
    """Codes bunched around a few centres (so small radii find something), top bit often set."""
    top = (1 << n_bits) - 1
    codes = []
    for _ in range(n_centres):
        centre = int(rng.integers(0, 1 << 62)) * 4 + int(rng.integers(0, 4))
        centre = (centre | (1 << (n_bits - 1))) & top if rng.random() < 0.5 else centre & top
        codes.append(centre)
        for _ in range(per_centre):
            flips = rng.choice(n_bits, size=int(rng.integers(0, 5)), replace=False)
            codes.append(centre ^ sum(1 << int(f) for f in flips))
    return codes


@pytest.mark.parametrize("n_bits", [64, 16, 12])
def test_lookup_and_sql_search_agree_with_brute_force(index_location, n_bits):
    rng = np.random.default_rng(n_bits)
    codes = clustered_codes(rng, n_bits)
    if n_bits == 64:
        codes += [(1 << 64) - 1, 1 << 63, 0]
        assert any(c >= 1 << 63 for c in codes)
    index_path = index_location
    paths = make_code_index(index_path, codes, n_bits)
    top = (1 << n_bits) - 1
    queries = codes[::16] + [int(c) & top for c in rng.integers(0, 1 << 63, size=5, dtype=np.uint64) * 2 + 1]
    queries += [codes[3] ^ 0b101, codes[10] ^ 1]
    stored = np.array(codes, dtype=np.uint64)
    for radius in range(0, 4):
        by_lookup = search_codes(index_path, np.array(queries, dtype=np.uint64), radius, method="lookup")
        by_sql = search_codes(index_path, queries, radius, method="sql")
        assert by_lookup == by_sql
        for q, found in zip(queries, by_lookup):
            d = hamming(np.uint64(q), stored)
            expected = sorted((int(d[i]), paths[i]) for i in np.flatnonzero(d <= radius))
            assert [(m.distance, m.path) for m in found] == expected
            assert all(m.code == codes[paths.index(m.path)] for m in found)
        assert sum(len(f) for f in by_lookup) > len(queries) // 2  # the test is not vacuous
        for limit in (1, 3):  # a limit cuts the (distance, path) order, whatever the row ids' order
            limited = search_codes(index_path, queries, radius, limit=limit)
            assert limited == [found[:limit] for found in by_sql]


def test_results_sorted_by_distance_then_path_and_limit(index_location):
    centre = 0b1010_1010_1010_1010
    codes = [centre ^ 1, centre, centre ^ 0b11, centre ^ 2, centre, centre ^ 1]
    index_path = index_location
    paths = make_code_index(index_path, codes, 16)
    for method in ("lookup", "sql"):
        (found,) = search_codes(index_path, [centre], 2, method=method)
        assert [(m.distance, m.path) for m in found] == [
            (0, paths[1]), (0, paths[4]), (1, paths[0]), (1, paths[3]), (1, paths[5]), (2, paths[2])
        ]  # fmt: skip
        (limited,) = search_codes(index_path, [centre], 2, limit=3, method=method)
        assert limited == found[:3]
        (exact,) = search_codes(index_path, [centre], 0, method=method)
        assert [m.path for m in exact] == [paths[1], paths[4]]
    assert search_codes(index_path, [], 2) == []
    with pytest.raises(IndexError_, match="radius 17"):
        search_codes(index_path, [centre], 17)
    with pytest.raises(IndexError_, match="sql"):
        search_codes(index_path, [centre], 5, method="sql")
    assert len(search_codes(index_path, [centre], 16)[0]) == len(codes)  # radius n_bits: everything


def test_lookup_cache_rebuilt_when_missing_corrupt_or_stale(tmp_path, index_location):
    index_path = index_location
    make_code_index(index_path, [1, 2, 3, 7], 16)
    lookup_path = lookup_path_of(index_path)
    if is_sqlite(index_path):
        assert lookup_path == index_path.with_suffix(".lookup")
    else:  # a database's cache: in its own folder under the cache root, named without the password
        assert lookup_path.parent.parent == tmp_path / "cache" and index_path.url.database in lookup_path.parent.name
    expected = search_codes(index_path, [3], 1)
    assert lookup_path.is_file()

    lookup_path.unlink()
    assert search_codes(index_path, [3], 1) == expected and lookup_path.is_file()

    lookup_path.write_bytes(b"definitely not a lookup")
    assert search_codes(index_path, [3], 1) == expected
    assert lookup_path.read_bytes() != b"definitely not a lookup"

    whole = lookup_path.read_bytes()
    lookup_path.write_bytes(whole[: len(whole) // 2])  # truncated: the header names arrays past its end
    assert search_codes(index_path, [3], 1) == expected
    assert lookup_path.read_bytes() == whole

    with open_index(index_path) as db:  # a change behind the cache's back bumps the generation
        with db.write_session() as s, s.begin():
            new = ImageRow(path="/synthetic/new.png", content_hash="-", size=1, mtime=0.0, label=None, code=11)
            new.indexed_at = utc_now()
            s.add(new)
            bump_generation(s)
        assert not index_search.lookup_is_current(db)
    (found,) = search_codes(index_path, [3], 1)
    assert "/synthetic/new.png" in [m.path for m in found]
    with open_index(index_path) as db:
        assert index_search.lookup_is_current(db)
        assert hamming_lookup.read_header(lookup_path)["key"]["generation"] == db.meta().generation


def test_open_lookup_never_writes_and_builds_in_memory_when_stale(tmp_path):
    index_path = tmp_path / "codes.sqlite"
    make_code_index(index_path, [1, 2, 3, 7], 16)
    lookup_path = index_search.lookup_path_for(index_path)
    with open_index(index_path) as db:
        meta, searcher = index_search.open_lookup(db)
        assert searcher.source == "built in memory" and not lookup_path.exists()
        assert meta.generation == searcher.key["generation"]
        ids, distances = searcher.search([3], 1)[0]
        assert sorted(distances.tolist()) == [0, 1, 1, 1] and len(set(ids.tolist())) == 4
        index_search.refresh_lookup(db)  # what a writer does
        _, cached = index_search.open_lookup(db)
        assert cached.source == "cache file"
        assert cached.search([3], 1).equals(searcher.search([3], 1))


# --------------------------------------------------------------------------- opening
def test_open_index_refuses_files_it_does_not_understand(tmp_path):
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(IndexError_, match=r"missing\.sqlite: no index here: run 'semhash index DIR' first"):
        open_index(missing)
    assert not missing.exists()

    text = tmp_path / "notes.sqlite"
    text.write_text("just some notes\n" * 10)
    with pytest.raises(IndexError_, match=r"notes\.sqlite: not a semhash index \(not a SQLite database\)"):
        open_index(text, create=True)
    assert text.read_text() == "just some notes\n" * 10  # untouched

    foreign = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE people (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(IndexError_, match="without semhash tables"):
        open_index(foreign, create=True)

    future = tmp_path / "future.sqlite"
    open_index(future, create=True).close()
    con = sqlite3.connect(future)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(IndexError_, match=f"schema version {SCHEMA_VERSION + 1} is newer .* upgrade semhash"):
        open_index(future)

    with pytest.raises(IndexError_, match="is a folder"):
        open_index(tmp_path)


def test_an_empty_index_refuses_searches_clearly(index_location, ws):
    index_path = index_location
    open_index(index_path, create=True).close()
    with pytest.raises(IndexError_, match="empty.*semhash index"):
        search_codes(index_path, [1], 1)
    with pytest.raises(IndexError_, match="empty"):
        query_files(index_path, ws, [])
    assert index_info(index_path)["count"] == 0


def test_load_index_codes_and_index_info(folder, ws, index_path):
    run(folder, ws.model("m1"), index_path)
    indexed = load_index_codes(index_path)
    stored = rows(index_path)
    assert indexed.paths == sorted(stored) and indexed.codes.dtype == np.uint64
    assert [int(c) for c in indexed.codes] == [stored[p][5] for p in indexed.paths]
    assert indexed.labels == [stored[p][4] for p in indexed.paths]
    assert indexed.n_bits == 16 and indexed.model_name == "m1"
    assert indexed.model_fingerprint == ws.model("m1").load_hasher().fingerprint

    info = index_info(index_path)
    assert info["count"] == 15 and info["model"] == "m1" and info["bits"] == 16
    assert info["schema_version"] == SCHEMA_VERSION and info["labels"] == 3
    assert info["index_path"] == str(index_path) and info["lookup_path"] == str(lookup_path_of(index_path))
    assert info["lookup_current"] is True
    lookup_path_of(index_path).unlink()  # the figures from the record itself are the same
    assert index_info(index_path) == {**info, "lookup_current": False}


def test_meta_table_is_plain_key_value(index_path, folder, ws):
    run(folder, ws.model("m1"), index_path)
    with open_index(index_path) as db, db.session() as s:
        keys = set(s.scalars(select(MetaRow.key)))
    assert {"schema_version", "model_name", "model_fingerprint", "n_bits"} <= keys
    assert {"input_shape", "created_at", "generation"} <= keys


def test_index_and_search_never_import_tensorflow():
    code = (
        "import sys, semhash.index, semhash.index.search, semhash.index.indexer; "
        "assert 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- process pool
def test_a_process_pool_indexes_exactly_what_one_process_does(tmp_path, folder, ws):
    """workers=2 with small batches (so several are in flight): the same rows, codes,
    labels, skips and counts as hashing in this process, and the same on a re-run."""
    (folder / "1" / "broken.png").write_bytes(b"not an image")
    results = {}
    for workers in (1, 2):
        index_path = tmp_path / f"w{workers}.sqlite"
        warnings: list[str] = []
        summary = index_folder(folder, ws.model("m1"), index_path, batch_size=2, workers=workers, progress=False,
                               on_warning=warnings.append)  # fmt: skip
        counts = (summary.added, summary.skipped, summary.total)
        results[workers] = (counts, warnings, rows(index_path))
        bump_mtime(sorted((folder / "2").glob("*.png"))[0], 5)  # same bytes, new mtime: "unchanged" after a hash
        again = index_folder(folder, ws.model("m1"), index_path, batch_size=2, workers=workers, progress=False)
        assert (again.added, again.updated, again.unchanged, again.skipped) == (0, 0, 15, 1)
    assert results[1][0] == results[2][0] == (15, 1, 15)
    assert results[1][1] == results[2][1] and "broken.png" in results[1][1][0]
    same = lambda found: {p: (i, h, size, label, code) for p, (i, h, size, _, label, code) in found.items()}  # noqa: E731
    assert same(results[1][2]) == same(results[2][2])  # row ids too: batches commit in the order they were made


def test_workers_option_is_checked(folder, ws, index_path):
    with pytest.raises(ValueError, match="workers"):
        index_folder(folder, ws.model("m1"), index_path, workers=0, progress=False)


def test_a_hashing_process_that_dies_is_one_line_and_committed_batches_stay(tmp_path, folder, ws, index_path, monkeypatch):
    from semhash.index import indexer

    monkeypatch.setattr(indexer, "BATCHES_PER_WORKER", 1)  # batches of 2 (15 files would make batches of 1)
    m1 = ws.model("m1")
    with pytest.raises(IndexError_, match="a hashing process died") as err:  # as the OOM killer would
        index_folder(folder, failing_model(m1, _die), index_path, batch_size=2, workers=2,
                     progress=False)  # fmt: skip
    assert "\n" not in str(err.value)
    if is_sqlite(index_path):
        con = sqlite3.connect(index_path)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
    assert len(rows(index_path)) % 2 == 0  # whole batches only
    again, _ = run(folder, m1, index_path)
    assert again.total == 15


def test_batches_end_at_a_file_count_or_a_byte_budget():
    """Photos of a few MB make batches of a few files (a pool shares out whole batches);
    small files still go 256 at a time; order kept, nothing lost, a huge file alone."""
    from semhash.index.indexer import BATCH_BYTES, _batches, _Work

    def work(i: int, size: int) -> _Work:
        return _Work(Path(f"/x/{i}.jpg"), f"/x/{i}.jpg", None, False, size, 0.0, None)

    small = [work(i, 1000) for i in range(600)]
    assert [len(b) for b in _batches(small, 256)] == [256, 256, 88]
    photos = [work(i, 4 << 20) for i in range(10)]
    cut = _batches(photos, 256)
    assert [len(b) for b in cut] == [4, 4, 2] and sum(cut, []) == photos
    assert [len(b) for b in _batches([work(0, 3 * BATCH_BYTES), work(1, 10)], 256)] == [1, 1]
    assert _batches([], 256) == []
    # for a pool, at least 8 batches a worker: the last ones do not leave a worker idle
    webp = [work(i, 550_000) for i in range(40)]
    assert [len(b) for b in _batches(webp, 256)] == [30, 10]
    assert [len(b) for b in _batches(webp, 256, workers=2)] == [3] * 13 + [1]
    assert [len(b) for b in _batches(small * 100, 256, workers=2)][:2] == [256, 256]  # a large run: unchanged
