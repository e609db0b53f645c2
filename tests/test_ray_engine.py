"""semhash.index.ray_engine on a real local Ray (2 CPUs, started once per session): the codes
and the bad-file lines are the local indexer's, row for row and word for word."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_fixtures import add_model, write_digit_folder, write_png, digits  # noqa: E402
from postgres_server import skip_or_fail  # noqa: E402

from semhash.data import decode_image, iter_image_files  # noqa: E402
from semhash.hashing import from_signed64  # noqa: E402
from semhash.index import index_folder  # noqa: E402
from semhash.index import ray_engine  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray with 2 CPUs for the whole session, shut down at the end."""
    try:
        import ray
    except ImportError:
        skip_or_fail("ray is not installed (pip install -e '.[distributed]')")
    ray_engine.start_ray(num_cpus=2)
    try:
        yield ray
    finally:
        ray_engine.stop_ray()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A labelled folder with bad files among good ones, a model, and extra files the walk
    does not give (a non-UTF-8 name, a listed file that is gone)."""
    base = tmp_path_factory.mktemp("ray")
    root = base / "imgs"
    write_digit_folder(root, per_class=8, classes=(0, 1, 2))
    images, _ = digits()
    write_png(root / "in-root.png", images[40])  # no label
    good = (root / "1").iterdir().__next__().read_bytes()
    (root / "0" / "corrupt.png").write_bytes(good[: len(good) // 2])
    (root / "1" / "notes.png").write_text("this is a text file, not an image\n")
    (root / "2" / "empty.png").write_bytes(b"")
    other = os.fsencode(str(base)) + b"/d\xe9j\xe0"  # a folder whose name is not valid UTF-8
    os.mkdir(other)
    latin1 = other + b"/caf\xe9.png"
    with open(latin1, "wb") as fh:
        fh.write(good)
    home = base / "ws"
    add_model(home, "m1", seed=0, n_bits=16)
    model = Workspace(home).model("m1")
    gone = base / "gone.png"
    return {"root": root.resolve(), "latin1": latin1, "gone": gone, "model": model, "home": home}


def _local_rows(index_path: Path) -> dict[str, tuple]:
    con = sqlite3.connect(index_path)
    try:
        return {
            p: (from_signed64(c), label, h, size, mtime)
            for p, c, label, h, size, mtime in con.execute(
                "SELECT path, code, label, content_hash, size, mtime FROM images"
            )
        }
    finally:
        con.close()


def test_ray_codes_and_errors_are_the_local_runs(local_ray, corpus, tmp_path):
    import pyarrow.parquet as pq

    model = corpus["model"]
    warnings: list[str] = []
    index_folder(corpus["root"], model, tmp_path / "local.sqlite", progress=False, on_warning=warnings.append)
    local = _local_rows(tmp_path / "local.sqlite")
    assert len(local) == 25 and len(warnings) == 3

    files = list(iter_image_files(corpus["root"]))
    files += [(os.fsdecode(corpus["latin1"]), os.fsdecode(b"d\xe9j\xe0")), (corpus["gone"], None)]
    batches: list[int] = []
    run = ray_engine.hash_files(
        files, model.hasher_path, tmp_path / "shards", batch_size=4, rows_per_shard=10, on_batch=batches.append
    )

    # every shard has the documented columns and types; the rows are split at rows_per_shard
    schema = ray_engine.shard_schema()
    tables = [pq.read_table(p) for p in run.shards]
    assert [p.name for p in run.shards] == [f"codes-{i:05d}.parquet" for i in range(3)]
    assert all(t.schema.equals(schema) for t in tables) and [t.num_rows for t in tables] == [10, 10, 6]
    rows = [row for t in tables for row in t.to_pylist()]
    assert run.rows == len(rows) == 26 and run.workers == 2 and sum(batches) == len(files)
    assert 0 < run.worker_cpu_seconds < 60 and 0 < run.first_batch_seconds <= run.seconds

    # the 25 files of the folder: identical to the local indexer's rows, field for field
    by_path = {r["path"]: r for r in rows}
    by_code_path = {p: r["code"] for p, r in by_path.items()}
    assert len(by_path) == len(rows)
    for path, (code, label, content_hash, size, mtime) in local.items():
        r = by_path.pop(path)
        assert (r["code"], r["label"], r["content_hash"], r["size"], r["mtime"]) == (code, label, content_hash, size, mtime)
        assert r["path_bytes"] == os.fsencode(path)
    assert local[str(corpus["root"] / "in-root.png")][1] is None

    # ... and to Hasher.hash of decode_image over all of them in one batch
    hasher = model.load_hasher()
    paths = sorted(local)
    expected = hasher.hash(np.stack([decode_image(p, hasher.input_shape) for p in paths]))
    assert [by_code_path[p] for p in paths] == expected.tolist()

    # the non-UTF-8 name: kept exactly in path_bytes, shown escaped in path, hashed like locally
    (latin1_row,) = by_path.values()
    assert latin1_row["path_bytes"] == corpus["latin1"] and latin1_row["path"].endswith("caf\\xe9.png")
    expected = hasher.hash(decode_image(os.fsdecode(corpus["latin1"]), hasher.input_shape)[None])
    assert latin1_row["code"] == int(expected[0]) and latin1_row["label"] == "d\\xe9j\\xe0"
    assert latin1_row["label_bytes"] == b"d\xe9j\xe0"

    # bad files: the local run's own lines, plus the gone file worded as the indexer words it
    assert run.errors == sorted(warnings + [f"{corpus['gone']}: no such file"])
    assert all("\n" not in e for e in run.errors)


def test_the_shard_folder_must_be_new_or_empty(corpus, tmp_path):
    (tmp_path / "old.parquet").write_bytes(b"x")
    with pytest.raises(ValueError, match="must be new or empty"):
        ray_engine.hash_files([], corpus["model"].hasher_path, tmp_path)


def _odd_folder(root: Path) -> Path:
    """Digits in label folders plus what makes engines differ if they can: bad files, names
    that are not UTF-8 (a good and a bad one, and a label folder), a backslash in a name."""
    write_digit_folder(root, per_class=5, classes=(0, 1, 2))
    images, _ = digits()
    good = next((root / "0").iterdir()).read_bytes()
    (root / "0" / "corrupt.png").write_bytes(good[: len(good) // 2])
    (root / "1" / "notes.png").write_text("this is a text file, not an image\n")
    write_png(root / "2" / "back\\slash.png", images[50])
    odd = os.fsencode(str(root)) + b"/cat\xe9gorie"
    os.mkdir(odd)
    with open(odd + b"/caf\xe9.png", "wb") as fh:
        fh.write(good)
    with open(odd + b"/bad\xff.png", "wb") as fh:
        fh.write(b"not an image")
    write_png(root / "in-root.png", images[60])
    return root


def _all_rows(index_path) -> dict[str, tuple]:
    from semhash.index import open_index

    with open_index(index_path) as db, db.session() as s:
        # every tier's code: the near codes and pixel sizes too
        result = s.connection().exec_driver_sql(
            "SELECT path, code, label, content_hash, size, mtime, near_code, near_variants, near_quality, width, height FROM images"
        )
        return {r[0]: (from_signed64(r[1]), *r[2:6], *(bytes(v) if isinstance(v, memoryview) else v for v in r[6:])) for r in result}


def _counts(summary) -> tuple:
    return (summary.added, summary.updated, summary.unchanged, summary.removed, summary.skipped, summary.total, summary.relabelled, summary.labels_kept)


def test_index_with_the_ray_engine_is_the_local_run_row_for_row(local_ray, corpus, tmp_path):
    """``index_folder(..., engine="ray")``: the same rows, counts and bad-file lines as a local
    run, first time, after changes (touched, modified, deleted, added) and relabelling."""
    root = _odd_folder(tmp_path / "imgs").resolve()
    model = corpus["model"]

    def both(folder, **kw):
        out = []
        for engine, index in (("local", tmp_path / "local.sqlite"), ("ray", tmp_path / "ray.sqlite")):
            warnings: list[str] = []
            summary = index_folder(folder, model, index, progress=False, on_warning=warnings.append, engine=engine, **kw)
            out.append((_counts(summary), warnings, _all_rows(index)))
        assert out[0] == out[1]  # counts, warnings (words and order), every row field for field
        return out[0]

    counts, warnings, rows = both(root)
    assert counts[:6] == (18, 0, 0, 0, 3, 18) and len(warnings) == 3
    assert any("bad\\xff.png" in w for w in warnings) and any("corrupt.png" in w for w in warnings)
    assert rows[str(root / "2" / "back\\\\slash.png")][1] == "2"  # keys: backslash doubled
    assert rows[str(root) + "/cat\\xe9gorie/caf\\xe9.png"][1] == "cat\\xe9gorie"

    files = sorted((root / "1").glob("img-*.png"))
    os.utime(files[0], (files[0].stat().st_atime + 10, files[0].stat().st_mtime + 10))  # same bytes
    images, _ = digits()
    write_png(files[1], images[99])  # new bytes
    os.utime(files[1], (files[1].stat().st_atime + 10, files[1].stat().st_mtime + 10))
    files[2].unlink()
    write_png(root / "1" / "new.png", images[123])
    counts, warnings, _ = both(root)
    assert counts[:6] == (1, 1, 16, 1, 3, 18)

    counts, _, _ = both(root / "1", relabel=True)  # labels from the subfolder's point of view
    assert counts[6] == 5


def test_semhash_index_engine_ray_into_postgresql(local_ray, corpus, tmp_path, postgres_url, cli):
    from semhash.index.db import IndexLocation

    run_cli = cli

    root = _odd_folder(tmp_path / "imgs")
    home = corpus["home"]
    result = run_cli("index", root, "--engine", "ray", "--index", postgres_url, "--quiet", home=home)
    assert "18 added" in result.stdout and "3 skipped" in result.stdout
    lines = result.stderr.splitlines()  # the bad files' lines, and nothing of Ray's
    assert len(lines) == 3 and all(line.startswith(f"warning: {root.resolve()}/") for line in lines), lines
    index_folder(root, corpus["model"], tmp_path / "local.sqlite", progress=False)
    assert _all_rows(IndexLocation.parse(postgres_url, cache_root=tmp_path / "cache")) == _all_rows(tmp_path / "local.sqlite")
    wrong = run_cli("index", root, "--address", "127.0.0.1:1", home=home, ok=False)
    assert wrong.exit_code == 2 and "--address is for --engine ray" in wrong.output


def test_importing_semhash_never_imports_ray():
    code = (
        "import sys, semhash, semhash.index, semhash.index.indexer, semhash.index.search, "
        "semhash.index.ray_engine, semhash.cli; "
        "bad = [m for m in ('ray', 'tensorflow', 'psycopg') if m in sys.modules]; "
        "assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_an_unreachable_cluster_is_one_line_before_anything_is_written(corpus, tmp_path, cli):
    from postgres_server import _free_port

    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    result = cli("index", corpus["root"], "--engine", "ray", "--address", address, "--index", tmp_path / "i.sqlite",
                 home=corpus["home"], ok=False)  # fmt: skip
    assert result.exit_code == 1 and result.output.strip() == f"Error: cannot reach the Ray cluster at {address}: Connection refused"
    assert not (tmp_path / "i.sqlite").exists()
