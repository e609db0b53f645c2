"""No wrong answers under faults (issue 19): each test reproduces one audit finding on real
files, a real index and real processes, and fails without its fix."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from index_fixtures import SHAPE, add_model, digits, write_digit_folder, write_png  # noqa: E402

from semhash.data import decode_image  # noqa: E402
from semhash.hashing import from_signed64  # noqa: E402
from semhash.index import index_folder, open_index, path_key, query_files  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    add_model(tmp_path / "home", "m1")
    return Workspace(tmp_path / "home")


def stored(index_path: Path) -> dict[str, tuple[str, int]]:
    """path key -> (content hash, code) as the record holds them."""
    with open_index(index_path) as db, db.session() as s:
        result = s.connection().exec_driver_sql("SELECT path, content_hash, code FROM images")
        return {path: (digest, from_signed64(code)) for path, digest, code in result}


# --------------------------------------------------------------------------- 1. one read per file
@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_rewritten_while_indexed_never_keeps_a_wrong_code(tmp_path, ws, monkeypatch, workers):
    """A writer replaces a file between the indexer's read (for the hash) and its decode:
    the row must hold the hash and the code of one and the same content, so that later runs,
    which trust an unchanged hash, never keep a code of other pixels."""
    import semhash.index.indexer as indexer

    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=4, classes=(0, 1))
    target = sorted((folder / "1").glob("*.png"))[0]
    original = target.read_bytes()
    other = write_png(tmp_path / "other.png", digits()[0][300]).read_bytes()  # another digit
    real = indexer.decode_views

    def rewritten_meanwhile(path, shape, *args, **kwargs):
        if Path(path) == target and target.read_bytes() == original:
            swap = target.with_name(".swap")
            swap.write_bytes(other)
            os.replace(swap, target)  # an atomic rewrite, as editors and sync tools do
        return real(path, shape, *args, **kwargs)

    monkeypatch.setattr(indexer, "decode_views", rewritten_meanwhile)
    index_folder(folder, ws.model("m1"), ws.index_path, progress=False, workers=workers)
    monkeypatch.undo()
    hasher = ws.model("m1").load_hasher()
    for content in (original, other):  # the writer puts the first content back, then runs are quiet
        swap = target.with_name(".swap")
        swap.write_bytes(content)
        os.replace(swap, target)
        index_folder(folder, ws.model("m1"), ws.index_path, progress=False, workers=workers)
        index_folder(folder, ws.model("m1"), ws.index_path, progress=False, workers=workers)
        digest, code = stored(ws.index_path)[path_key(target.resolve())]
        assert digest == hashlib.sha256(content).hexdigest()
        assert code == int(hasher.hash(decode_image(target, SHAPE)[None])[0]), "the code is of other pixels"
        (found,) = query_files(ws.index_path, ws, [target], radius=0)
        assert str(target.resolve()) in [m.path for m in found.matches], "radius 0 does not find the file itself"


# --------------------------------------------------------------------------- 2. no false "damaged"
def test_opening_an_index_never_opens_its_file_outside_sqlite(tmp_path, ws, monkeypatch):
    """Closing any descriptor of a file drops every POSIX lock the process holds on it, the
    locks of its SQLite connections included: semhash must leave the database file to SQLite."""
    import builtins

    from semhash.index import index_info, search_codes
    from semhash.index.browse import IndexReader

    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0, 1))
    index_folder(folder, ws.model("m1"), ws.index_path, progress=False)
    watched = {os.path.realpath(ws.index_path)}
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.realpath(file) in watched:
            opened.append(f"open({file})")
        return real_open(file, *args, **kwargs)

    def spy_os_open(file, *args, **kwargs):
        if os.path.realpath(file) in watched:
            opened.append(f"os.open({file})")
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    with IndexReader(ws.index_path, ws) as reader:  # what `semhash serve` holds open
        reader.status()
        reader.search_codes([0], radius=2)
        open_index(ws.index_path).close()
        index_info(ws.index_path)
        search_codes(ws.index_path, [0], 2)
        index_folder(folder, ws.model("m1"), ws.index_path, progress=False)
        reader.status()
    assert opened == [], opened


def test_a_server_queried_during_writes_never_says_damaged(tmp_path, ws):
    """`semhash index`, `remove` and `index --rebuild` in another process while the server's
    status and search routes are queried: every answer is 200 (503 'try again' at worst),
    never 409 'damaged', and the file is intact."""
    import subprocess
    import threading

    from fastapi.testclient import TestClient

    from semhash.web.app import create_app

    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0,))
    index_folder(folder, ws.model("m1"), ws.index_path, progress=False)
    more = tmp_path / "more"
    write_digit_folder(more, per_class=30, classes=tuple(range(10)))
    env = {**os.environ, "SEMHASH_HOME": str(ws.root)}
    steps = [["index", str(more), "--batch-size", "2", "--workers", "1", "--quiet"], ["remove", str(more)],
             ["index", str(more), "--rebuild", "--batch-size", "3", "--workers", "1", "--quiet"]]
    failed: list[str] = []
    answers: dict[int, int] = {}
    bad: list[str] = []
    with TestClient(create_app(ws.index_path, ws), base_url="http://127.0.0.1") as client:
        done = threading.Event()

        def writer() -> None:
            try:
                for step in steps:
                    run = subprocess.run([sys.executable, "-m", "semhash", *step], env=env, capture_output=True,
                                         text=True, timeout=300)
                    if run.returncode:
                        failed.append(f"{step}: {run.stderr}")
                        return
            finally:
                done.set()

        lock = threading.Lock()

        def reader(url: str) -> None:
            for _ in range(100_000):  # bounded; ends with the writer
                if done.is_set():
                    return
                response = client.get(url)
                with lock:
                    answers[response.status_code] = answers.get(response.status_code, 0) + 1
                    if response.status_code not in (200, 503):
                        bad.append(f"{url}: {response.status_code} {response.text}")

        urls = ["/api/status", "/api/search/code?code=0&radius=3&limit=5", "/api/buckets?n=3", "/api/status"]
        threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(u,)) for u in urls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    assert not failed, failed
    assert not bad, bad[:3]
    assert answers.get(200, 0) > 20, answers
    import sqlite3

    con = sqlite3.connect(ws.index_path)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()


# --------------------------------------------------------------------------- 6. secrets in URLs
SECRET = "Zx9-secret"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://me:{SECRET}@127.0.0.1:1/semhash",
        f"postgresql://me@127.0.0.1:1/semhash?password={SECRET}",
        f"postgresql+psycopg://me@127.0.0.1:1/semhash?sslmode=disable&password={SECRET}&application_name=x",
        f"postgres://me:{SECRET}%40home@127.0.0.1:1/semhash",
        f"postgresql+psycopg://me@127.0.0.1:1/semhash?sslpassword={SECRET}",
        f"postgresql+psycopg://me:{SECRET}@word@127.0.0.1:1/semhash",  # an unencoded @: refused, never printed
        f"postgresql+psycopg://me:{SECRET}@127.0.0.1:notaport/semhash",  # not a valid URL
    ],
)
def test_no_form_of_password_is_ever_printed(url, tmp_path, cli):
    from semhash.index.db import IndexLocation

    try:
        location = IndexLocation.parse(url)
    except Exception as exc:  # refused: the message names the URL without its secret
        assert SECRET not in str(exc) and "word" not in str(exc).split("@")[0]
    else:
        assert SECRET not in str(location) and "%40home" not in str(location)
        assert SECRET not in location.scrub(f"could not connect with {url}")
    for args in (["status", "--index", url], ["query", "--code", "1", "--index", url],
                 ["status", "--index", url, "--json"], ["index", str(tmp_path), "--model", "m1", "--index", url]):
        result = cli(*args, home=tmp_path / "home", ok=False)
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert SECRET not in result.output + result.stderr, (args, result.output)


# --------------------------------------------------------------------------- 8. a model is saved whole or not at all
def _train_itq(home: Path, name: str = "q", **kw):
    from semhash.train import train

    return train("digits", "itq", {"bits": 8}, name=name, workspace=Workspace(home), verbose=0, **kw)


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_a_training_interrupted_while_saving_leaves_the_name_free(tmp_path, monkeypatch, failure):
    from semhash.errors import ModelError
    from semhash.models.baselines import ITQHashModel

    home = tmp_path / "home"

    def fails(self, directory):
        (Path(directory) / "half-written.npz").write_bytes(b"partial")
        raise failure

    monkeypatch.setattr(ITQHashModel, "save", fails)
    expected = KeyboardInterrupt if isinstance(failure, KeyboardInterrupt) else ModelError
    with pytest.raises(expected) as err:
        _train_itq(home)
    if expected is ModelError:
        assert "disk is full" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.undo()
    assert sorted(p.name for p in (home / "models").iterdir()) == [], "nothing half-written is left"
    result = _train_itq(home)  # the name is free
    assert Workspace(home).model("q").meta["fingerprint"] == result.model.meta["fingerprint"]
    assert all(p.is_file() and p.parent.name == "q" for p in result.paths)


def test_what_an_older_interrupted_training_left_is_named_and_replaced(tmp_path, cli):
    home = tmp_path / "home"
    left = home / "models" / "q"
    left.mkdir(parents=True)
    (left / "hasher.npz").write_bytes(b"partial")  # killed before meta.json
    result = cli("index", str(tmp_path), "--model", "q", home=home, ok=False)
    assert result.exit_code == 1 and "holds no finished model" in result.stderr and "semhash train --name q" in result.stderr
    (left / "meta.json").write_text('{"name": "q", "ki')  # truncated by a full disk
    result = cli("index", str(tmp_path), "--model", "q", home=home, ok=False)
    assert result.exit_code == 1 and "cannot be read (not valid JSON)" in result.stderr and "Traceback" not in result.output
    stale = home / "models" / ".q.partial-999999999-0a1b"  # a staging folder of a process that is gone
    stale.mkdir()
    _train_itq(home)
    assert sorted(p.name for p in (home / "models").iterdir()) == ["q"]
    assert Workspace(home).model("q").meta["kind"] == "itq" and not (left / "hasher.npz").read_bytes() == b"partial"


# --------------------------------------------------------------------------- 9. leftovers of a killed process
def test_sigterm_during_an_import_leaves_no_temporary_file(tmp_path):
    """SIGTERM ends `semhash import` like Ctrl-C: the bulk-load file beside the index goes."""
    import signal
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    home = tmp_path / "home"
    add_model(home, "m1")
    n = 3_000_000
    table = pa.table({"path": pa.array([f"/data/{i:08d}.png" for i in range(n)]),
                      "code": pa.array(np.arange(n, dtype=np.uint64) % 65536)})  # fmt: skip
    pq.write_table(table, tmp_path / "codes.parquet")
    index = home / "index" / "index.sqlite"
    argv = [sys.executable, "-m", "semhash", "import", str(tmp_path / "codes.parquet"), "--model", "m1", "--quiet"]
    proc = subprocess.Popen(argv, env={**os.environ, "SEMHASH_HOME": str(home)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        from waiting import wait_for

        def building() -> bool:
            return proc.poll() is None and index.parent.is_dir() and any(".importing-" in p.name for p in index.parent.iterdir())

        wait_for(building, "the bulk load to start writing its file")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = sorted(p.name for p in index.parent.iterdir())
    assert "Traceback" not in err
    assert not [name for name in left if ".importing-" in name or name.endswith(".tmp")], (left, err)
    if proc.returncode == 143 and "index.sqlite" not in left:
        assert left == [], "no index, no temporary file"
    else:  # the signal came as the load was linked into place: the index is whole
        assert proc.returncode in (0, 143), err
        with open_index(index) as db:
            assert db.count() == n


def test_the_next_open_removes_what_a_killed_process_left(tmp_path, ws, cli):
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0,))
    index_folder(folder, ws.model("m1"), ws.index_path, progress=False)
    where = ws.index_path.parent
    dead, alive = 999_999_999, os.getpid()
    left = [f".index.sqlite.importing-{dead}-00ff", f".index.sqlite.importing-{dead}-00ff-wal",
            f"index.lookup.{dead}.k2j3h4.tmp"]  # fmt: skip
    kept = [f".index.sqlite.importing-{alive}-00ff", f"index.lookup.{alive}.k2j3h4.tmp", "index.lookup.notes.tmp"]
    for name in left + kept:
        (where / name).write_bytes(b"x" * 1000)
    cli("status", home=ws.root)
    names = {p.name for p in where.iterdir()}
    assert not names & set(left) and set(kept) <= names


# --------------------------------------------------------------------------- 10. Ctrl-C inside a long statement
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_long_statement_and_rolls_it_back(tmp_path, ws, signame):
    """A statement that would run for minutes (SQLite does not return to Python meanwhile)
    stops once the signal arrives: KeyboardInterrupt for Ctrl-C, exit 143 for SIGTERM, and
    nothing it wrote is kept."""
    import signal
    import threading
    import time

    import semhash.lifetime as lifetime
    from semhash.index.db import database_errors

    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0,))
    index_folder(folder, ws.model("m1"), ws.index_path, progress=False)
    started = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    if signame == "SIGTERM":
        lifetime.terminate_as_interrupt()

    def send_once_running() -> None:
        if started.wait(60):
            signal.pthread_kill(threading.main_thread().ident, getattr(signal, signame))

    expected = KeyboardInterrupt if signame == "SIGINT" else SystemExit
    sender = threading.Thread(target=send_once_running)
    try:
        with open_index(ws.index_path) as db, db.engine.connect() as con:
            raw = con.connection.dbapi_connection
            raw.create_function("started", 0, lambda: started.set() or 0)
            sender.start()
            begun = time.monotonic()
            with pytest.raises(expected) as err, database_errors(db.path):
                raw.execute("BEGIN IMMEDIATE")
                # ~10^10 rows: hours, unless stopped
                raw.execute("INSERT INTO meta (key, value) WITH RECURSIVE n(i) AS (SELECT started() UNION ALL "
                            "SELECT i + 1 FROM n WHERE i < 10000000000) SELECT 'k' || i, i FROM n")
            stopped_after = time.monotonic() - begun
            raw.execute("ROLLBACK") if raw.in_transaction else None
    finally:
        sender.join(timeout=60)
        signal.signal(signal.SIGTERM, previous)
        lifetime._terminated = False
    assert stopped_after < 60, f"the statement ran {stopped_after:.0f} s after the signal"
    if expected is SystemExit:
        assert err.value.code == 143
    with open_index(ws.index_path) as db, db.session() as s:
        assert s.connection().exec_driver_sql("SELECT count(*) FROM meta WHERE key LIKE 'k%'").scalar() == 0


# --------------------------------------------------------------------------- 11. a read-only workspace
def _read_only(root: Path) -> None:
    for folder, dirs, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


def test_a_read_only_workspace_serves_and_every_write_is_one_line(tmp_path, ws):
    """On a read-only copy (a backup, a mounted snapshot): serve reads it as query does, and
    the commands that must write say where and why in one line, with no traceback."""
    import subprocess

    from unprivileged import cli_unprivileged, unprivileged

    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0, 1))
    index_folder(folder, ws.model("m1"), ws.index_path, progress=False)
    root = tmp_path / "ro"
    (root / "work").mkdir(parents=True)
    os.rename(ws.root, root / "home")
    _read_only(root)
    home = root / "home"
    serve = (
        "import sys\nfrom semhash.index.browse import IndexReader\nfrom semhash.workspace import Workspace\n"
        "with IndexReader(sys.argv[1], Workspace(sys.argv[2])) as r:\n"
        "    print(r.status()['count'], r.search_codes([0], radius=16)[0].total)\n"
    )
    done = subprocess.run([*unprivileged(), sys.executable, "-c", serve, str(home / "index" / "index.sqlite"), str(home)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["4", "4"], done.stderr
    results = cli_unprivileged(
        ["export-dataset", "digits", str(root / "work" / "out")],
        ["evaluate", "--index", str(home / "index" / "index.sqlite"), "--home", str(home)],
        ["train", "--model", "itq", "--name", "x", "--home", str(home)],
        ["status", "--home", str(home)],
    )
    for result in results[:3]:
        errors = [line for line in result["stderr"].splitlines() if line.startswith("Error:")]
        assert result["exit_code"] == 1 and result["exception"] is None, result
        assert len(errors) == 1 and str(root) in errors[0] and ("cannot write here" in errors[0] or "cannot save" in errors[0]), result
    assert results[3]["exit_code"] == 0 and "count: 4 images" in results[3]["stdout"]


# --------------------------------------------------------------------------- 4. one request never stalls the others
def test_a_small_search_answers_at_once_while_a_huge_one_runs(tmp_path):
    """A real `semhash serve` on 200,000 codes: while clients keep asking for the largest
    search allowed (64 codes x every code of the index), a one-code search still answers
    within a second; asking for more than 10,000 matches in all is a 422."""
    import threading
    import time

    import httpx
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semhash.index.importer import import_parquet
    from semhash.web.local_server import LocalServer

    home = tmp_path / "home"
    add_model(home, "m1")  # 16 bits: radius 16 reaches every code
    n = 200_000
    rng = np.random.default_rng(0)
    table = pa.table({"path": [f"/data/{i % 10}/{i:07d}.png" for i in range(n)],
                      "code": pa.array(rng.integers(0, 1 << 16, n, dtype=np.uint64))})  # fmt: skip
    pq.write_table(table, tmp_path / "codes.parquet")
    index = Workspace(home).index_path
    import_parquet(index, [tmp_path / "codes.parquet"], Workspace(home).model("m1"))
    huge = {"code": [str(c) for c in range(64)], "radius": 16, "limit": 156}
    with LocalServer(index, home) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        too_big = client.get("/api/search/code", params={**huge, "limit": 157})
        assert too_big.status_code == 422 and "10,000" in too_big.json()["detail"]
        stop = threading.Event()
        answered: list[int] = []

        def keep_asking_for_everything() -> None:
            with httpx.Client(base_url=server.url, timeout=120) as other:
                for _ in range(50):  # bounded
                    if stop.is_set():
                        return
                    response = other.get("/api/search/code", params=huge)
                    answered.append(response.status_code)
                    assert sum(r["total"] for r in response.json()) == 64 * n

        heavy = [threading.Thread(target=keep_asking_for_everything)]
        for thread in heavy:
            thread.start()
        latencies = []
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(latencies) < 200:
                started = time.monotonic()
                small = client.get("/api/search/code", params={"code": "5", "radius": 0, "limit": 3})
                latencies.append(time.monotonic() - started)
                assert small.status_code == 200 and small.json()[0]["code"] == 5
        finally:
            stop.set()
            for thread in heavy:
                thread.join(timeout=300)
    assert answered and set(answered) == {200}, "the huge searches were answered too"
    assert max(latencies) < 1.0, f"a one-code search waited {max(latencies):.2f} s behind the huge ones"


# --------------------------------------------------------------------------- 5. a database restart
def test_serve_on_postgresql_answers_503_while_it_is_down_and_recovers(tmp_path):
    """A PostgreSQL of its own, restarted under a running server: while it is down every
    route says 503 'unavailable' (never a 500, never a stale 409), and the first requests after
    it is back are answered, without restarting semhash serve."""
    import httpx

    from postgres_server import PostgresServer, require_postgres
    from semhash.index.db import IndexLocation
    from semhash.web.local_server import LocalServer

    home = tmp_path / "home"
    add_model(home, "m1")
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0, 1))
    with PostgresServer(require_postgres()) as server:
        url = server.url(server.create_database())
        index_folder(folder, Workspace(home).model("m1"), IndexLocation.parse(url, cache_root=home / "cache"), progress=False)
        routes = ["/api/status", "/api/search/code?code=0&radius=16", "/api/images/1", "/api/search/id/1?radius=16"]
        with LocalServer(url, home) as served, httpx.Client(base_url=served.url, timeout=60) as client:
            assert [client.get(r).status_code for r in routes] == [200] * 4
            server.restart(lambda: [(r, client.get(r)) for r in routes])  # asked while it is down
            down = server.answers_while_down
            assert [a.status_code for _, a in down] == [503] * 4, [(r, a.status_code, a.text) for r, a in down]
            assert all("unavailable" in a.json()["detail"] or "cannot connect" in a.json()["detail"] for _, a in down)
            assert all(a.headers.get("retry-after") == "1" for _, a in down)
            back = [client.get(r) for r in routes]
            assert [a.status_code for a in back] == [200] * 4, [a.text for a in back]
            assert back[0].json()["count"] == 4


# --------------------------------------------------------------------------- 3. uploads within a memory budget
def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


@pytest.fixture(scope="module")
def near_limit_png(tmp_path_factory) -> bytes:
    """A 6300 x 6300 RGBA PNG: just under serve's 40-megapixel limit, 150 KB of stripes."""
    from PIL import Image

    side = 6300
    pixels = np.zeros((side, side, 4), dtype=np.uint8)
    pixels[::64, :, :] = 255
    path = tmp_path_factory.mktemp("big") / "big.png"
    Image.fromarray(pixels, "RGBA").save(path, compress_level=9)
    return path.read_bytes()


def test_fifty_near_limit_uploads_at_once_stay_within_memory(tmp_path, near_limit_png):
    """50 clients upload a 6300 x 6300 RGBA PNG (150 KB, just under the 40-megapixel limit)
    at once to a real `semhash serve`: its peak memory stays under 2 GB (it reached 8 GB), the
    uploads it cannot take now get 503 + Retry-After, the rest are answered, and once idle it
    is back under 500 MB."""
    import threading

    import httpx

    from semhash.web.local_server import LocalServer

    home = tmp_path / "home"
    add_model(home, "m1")
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0, 1))
    index_folder(folder, Workspace(home).model("m1"), Workspace(home).index_path, progress=False)
    data = near_limit_png
    assert len(data) < 2 << 20
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    with LocalServer(Workspace(home).index_path, home) as server:
        pid = server.process.pid
        start = threading.Barrier(50, timeout=60)

        def upload() -> None:
            with httpx.Client(base_url=server.url, timeout=180) as client:
                start.wait()
                response = client.post("/api/search/upload?radius=2&limit=3", files=[("files", ("big.png", data, "image/png"))])
            with lock:
                answers.append(response)

        clients = [threading.Thread(target=upload) for _ in range(50)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(timeout=300)
        peak_mb = _status_kb(pid, "VmHWM") / 1024
        from waiting import wait_for

        idle_mb = wait_for(lambda: (mb := _status_kb(pid, "VmRSS") / 1024) < 500 and mb, "the idle server to give memory back",
                           timeout_s=30)  # fmt: skip
    statuses = [a.status_code for a in answers]
    assert len(statuses) == 50 and set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(200) >= 2, statuses
    assert all(a.headers.get("retry-after") for a in answers if a.status_code == 503)
    assert peak_mb < 2048, f"the server peaked at {peak_mb:.0f} MB"
    assert idle_mb < 500


# --------------------------------------------------------------------------- 12. smaller ones
def test_head_on_an_image_file_answers_like_get_without_the_body(tmp_path, ws):
    from fastapi.testclient import TestClient

    from semhash.web.app import create_app

    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0,))
    index_folder(folder, ws.model("m1"), ws.index_path, progress=False)
    with TestClient(create_app(ws.index_path, ws), base_url="http://127.0.0.1") as client:
        for url in ("/api/images/1/file", "/api/images/1/thumbnail"):
            got, head = client.get(url), client.head(url)
            assert head.status_code == 200 and head.content == b"", url
            assert head.headers["etag"] == got.headers["etag"] and head.headers["content-length"] == str(len(got.content))
        assert client.head("/api/images/999/file").status_code == 404


def test_a_folder_named_like_a_built_in_dataset_is_not_guessed(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    write_digit_folder(tmp_path / "digits", per_class=2, classes=(0, 1))
    result = cli("train", "digits", "--model", "itq", "--bits", "4", home=tmp_path / "home", ok=False)
    assert result.exit_code == 1 and "both a built-in dataset and a folder here: write ./digits" in result.stderr
    cli("train", "./digits", "--model", "itq", "--bits", "4", "--image-size", "8", home=tmp_path / "home")
    assert Workspace(tmp_path / "home").list_models()[0].meta["n_train_images"] < 10  # the folder's 4 images


def test_a_full_disk_during_an_import_into_an_index_says_so(tmp_path, cli):
    """On a real 400 KiB tmpfs: an import into an existing index that runs out of space (its
    staged rows in SQLite's temporary files on the same disk) says 'the disk is full' and
    keeps the index as it was."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from unprivileged import small_disk

    with small_disk(tmp_path / "disk", "400k") as disk:
        home = tmp_path / "home"
        add_model(home, "m1")
        index = disk / "index.sqlite"

        def codes(n: int, start: int) -> Path:
            path = tmp_path / f"codes-{start}.parquet"
            pq.write_table(pa.table({"path": [f"/data/{i:08d}.png" for i in range(start, start + n)],
                                     "code": pa.array(np.arange(n, dtype=np.uint64) % 65536)}), path)  # fmt: skip
            return path

        cli("import", codes(100, 0), "--model", "m1", "--index", index, "--quiet", home=home)
        # SQLite's temporary files (the staged rows) on the same full disk, as when TMPDIR and
        # the index share one: those writes fail as I/O errors
        result = cli("import", codes(50_000, 1000), "--model", "m1", "--index", index, "--quiet", home=home, ok=False,
                     env={"SQLITE_TMPDIR": str(disk), "TMPDIR": str(disk)})  # fmt: skip
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert "the disk is full" in result.stderr and str(index) in result.stderr, result.stderr
        with open_index(index) as db:
            assert db.count() == 100


def test_an_io_error_on_a_full_disk_is_named_a_full_disk(tmp_path, monkeypatch):
    """SQLite reports some writes that found no space as I/O errors (the audit's 'input/output
    error' on a full disk): with under 1 MiB free, the message says the disk is full."""
    import shutil
    import sqlite3
    from collections import namedtuple

    from semhash.index.db import index_error

    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = 10 | (3 << 8)  # SQLITE_IOERR_WRITE
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, 10 << 30, 4096))
    assert "the disk is full (disk I/O error)" in str(index_error(tmp_path / "index.sqlite", error))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, 5 << 30, 5 << 30))
    assert "input/output error on the index" in str(index_error(tmp_path / "index.sqlite", error))


def test_stopping_serve_with_uploads_in_flight_logs_no_traceback(tmp_path, near_limit_png):
    """SIGTERM while uploads wait for their turn to be decoded: the waiting ones are answered
    503 at once, the server stops within its grace period, and its log has no traceback."""
    import signal
    import threading

    import httpx

    from semhash.web.local_server import LocalServer

    home = tmp_path / "home"
    add_model(home, "m1")
    write_digit_folder(tmp_path / "imgs", per_class=2, classes=(0,))
    index_folder(tmp_path / "imgs", Workspace(home).model("m1"), Workspace(home).index_path, progress=False)
    log = tmp_path / "serve.log"
    answers: list[int] = []
    with LocalServer(Workspace(home).index_path, home, log_path=log) as server:
        def upload() -> None:
            try:
                with httpx.Client(base_url=server.url, timeout=120) as client:
                    files = [("files", ("big.png", near_limit_png, "image/png"))]
                    answers.append(client.post("/api/search/upload?radius=2&limit=3", files=files).status_code)
            except httpx.HTTPError:
                answers.append(0)  # the connection closed as the server stopped

        clients = [threading.Thread(target=upload) for _ in range(16)]
        for thread in clients:
            thread.start()
        from waiting import wait_for

        wait_for(lambda: server.process.poll() is None and "big.png" not in log.read_text(), "uploads to reach the server")
        wait_for(lambda: len(answers) >= 1, "the first upload to be answered")  # the rest are decoding or waiting
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) in (0, 143)  # 143: the SIGTERM, passed on once uvicorn has stopped
        for thread in clients:
            thread.join(timeout=120)
    text = log.read_text()
    assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]
    assert len(answers) == 16 and set(answers) <= {0, 200, 503}, answers
