"""`semhash index DIR --watch` (issue 23): the index follows the folder as files are added,
changed, moved and deleted, survives the folder going away and coming back, and stops
cleanly on SIGTERM and Ctrl-C.  A real watchdog observer (inotify here) on a real folder;
every wait is for the event, with a generous deadline."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from index_fixtures import digits, home, write_digit_folder, write_png  # noqa: F401  (home: the workspace with model m1)
from semhash.index.pathkeys import path_key
from semhash.workspace import Workspace
from waiting import wait_for

pytest.importorskip("watchdog", reason="the [watch] extra (watchdog) is not installed")


def rows(index: Path) -> dict[str, tuple]:
    """path key -> (id, label, code, content hash) of every row, read as another process would."""
    if not index.exists():
        return {}
    con = sqlite3.connect(index)
    try:
        return {p: (i, label, code, h) for p, i, label, code, h in con.execute("SELECT path, id, label, code, content_hash FROM images")}
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        con.close()


@pytest.fixture
def library(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_digit_folder(folder, per_class=3, classes=(0, 1))
    return folder


@contextmanager
def watching(home: Path, folder: Path, **options):
    """The library's watch in a thread (debounce shortened: the tests' files are written in
    one go); -> (changes, warnings, the summary once it ends)."""
    from semhash.index.watch import watch_folder

    ws = Workspace(home)
    stop = threading.Event()
    changes: list[str] = []
    warnings: list[str] = []
    result: dict = {}
    options = {"debounce": 0.3, "poll": 0.1, **options}

    def run():
        try:
            result["summary"] = watch_folder(folder, ws.model("m1"), ws.index_path, stop=stop, on_indexed=lambda s: changes.append("indexed"),
                                             on_change=changes.append, on_warning=warnings.append, **options)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: "indexed" in changes or "error" in result or any("no image files yet" in w for w in warnings), "the first run")
    try:
        yield changes, warnings, result
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the watch did not stop"
    assert "error" not in result, result.get("error")


def test_files_added_changed_and_deleted_are_followed(home, library):
    from fastapi.testclient import TestClient

    from semhash.web.app import create_app

    index = home / "index" / "index.sqlite"
    images, _ = digits()
    with watching(home, library) as (changes, _, _), TestClient(create_app(index, Workspace(home)), base_url="http://127.0.0.1") as web:
        assert len(rows(index)) == 6
        new = write_png(library / "2" / "new.png", images[2])
        key = path_key(new)
        assert web.get("/api/images", params={"path": key}).status_code == 404
        row = wait_for(lambda: rows(index).get(key), "the new file's row")
        assert row[1] == "2"  # labelled by its first-level folder, as a run labels it
        # a server started before sees it without a restart, and finds it by its picture
        assert web.get("/api/images", params={"path": key}).json()["id"] == row[0]
        (found,) = web.post("/api/search/upload?radius=0", files=[("files", ("q.png", new.read_bytes(), "image/png"))]).json()
        assert key in [m["path"] for m in found["matches"]]
        write_png(new, images[12])  # rewritten with another picture
        wait_for(lambda: rows(index).get(key, row)[3] != row[3], "the changed file's new hash")
        assert rows(index)[key][0] == row[0]  # the same row, updated
        new.unlink()
        wait_for(lambda: key not in rows(index), "the deleted file's row to go")
        (library / "notes.txt").write_text("not a picture")
        write_png(library / ".hidden.png", images[3])
        write_png(library / "0" / "late.png", images[20])  # a burst after the ignored files: they were seen and left out
        wait_for(lambda: path_key(library / "0" / "late.png") in rows(index), "the late file")
        assert len(rows(index)) == 7

        def lookup_current() -> bool:
            from semhash.index import open_index
            from semhash.index.search import lookup_is_current

            with open_index(index) as db:
                return lookup_is_current(db)

        wait_for(lookup_current, "the lookup files brought up to date once the folder is quiet")
    assert any("1 added" in line for line in changes) and any("1 removed" in line for line in changes)


def test_moves_keep_ids_labels_and_decisions(home, library):
    from semhash.duplicates import group_key, record_decision

    index = home / "index" / "index.sqlite"
    with watching(home, library) as (changes, _, result):
        before = rows(index)
        a, b = sorted(p for p in before if "/0/" in p)[:2]
        record_decision(index, [a, b], "keep", keeper=a)
        # a file renamed, then moved to another folder
        target = library / "1" / "renamed.png"
        os.rename(Path(a), target)
        wait_for(lambda: path_key(target) in rows(index), "the moved file's row")
        after = rows(index)
        assert a not in after and after[path_key(target)][:3] == (before[a][0], "0", before[a][2])  # id, label, code kept
        con = sqlite3.connect(index)
        decided = con.execute("SELECT group_key, members, keeper FROM decisions").fetchall()
        con.close()
        members = sorted([path_key(target), b])
        assert decided == [(group_key(members), json.dumps(members), path_key(target))]
        # a whole folder renamed: every row under it follows
        os.rename(library / "1", library / "ones")
        wait_for(lambda: sum("/ones/" in p for p in rows(index)) == 4, "the folder's rows under its new name")
        moved = rows(index)
        assert sorted(v[0] for p, v in moved.items() if "/ones/" in p) == sorted(v[0] for p, v in after.items() if "/1/" in p)
        assert not any("/1/" in p for p in moved)
        # out of the folder: gone; back in: a new row
        outside = library.parent / "outside.png"
        os.rename(library / "ones" / "renamed.png", outside)
        wait_for(lambda: len(rows(index)) == 5, "the row of the file moved out to go")
        os.rename(outside, library / "0" / "back.png")
        wait_for(lambda: path_key(library / "0" / "back.png") in rows(index), "the file moved back in")
    assert result["summary"].moved >= 5 and result["summary"].removed == 1


def test_the_folder_going_away_keeps_its_rows_and_is_caught_up_when_back(home, library):
    index = home / "index" / "index.sqlite"
    images, _ = digits()
    with watching(home, library) as (_, warnings, result):
        before = rows(index)
        away = library.with_name("photos.unmounted")
        os.rename(library, away)  # what an unmount looks like from here: the files vanish...
        library.mkdir()  # ...and an empty mount point is left
        wait_for(lambda: any("the folder is gone" in w for w in warnings), "the watch to notice")
        assert "6 indexed images are kept" in next(w for w in warnings if "the folder is gone" in w)
        write_png(away / "0" / "while-away.png", images[30])  # changed while unmounted
        write_png(library / "stray.png", images[31])  # and nothing is read from the empty mount point meanwhile
        (library / "stray.png").unlink()
        assert rows(index) == before
        library.rmdir()
        os.rename(away, library)  # mounted again
        wait_for(lambda: any("the folder is back" in w for w in warnings), "the watch to see it back")
        wait_for(lambda: path_key(library / "0" / "while-away.png") in rows(index), "the catch-up run")
        assert {p: v[0] for p, v in rows(index).items() if p in before} == {p: v[0] for p, v in before.items()}
        write_png(library / "1" / "after.png", images[40])  # and it is watched again
        wait_for(lambda: path_key(library / "1" / "after.png") in rows(index), "a file added after the return")
    assert result["summary"].away == 1


def test_an_empty_folder_is_watched_until_photos_arrive(home, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    index = home / "index" / "index.sqlite"
    images, _ = digits()
    with watching(home, folder) as (_, warnings, _):
        assert any("no image files yet" in w for w in warnings)
        write_digit_folder(folder / "import", per_class=2, classes=(3,))  # a folder of photos copied in at once
        wait_for(lambda: len(rows(index)) == 2, "the copied folder's rows")
        assert {v[1] for v in rows(index).values()} == {"import"}


def _semhash(*args: str, home: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "semhash", *args, "--home", str(home)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_stops_cleanly_on_sigterm_and_ctrl_c(home, library, sig):
    index = home / "index" / "index.sqlite"
    images, _ = digits()
    proc = _semhash("index", str(library), "--watch", "--quiet", "--json", home=home)
    try:
        wait_for(lambda: len(rows(index)) == 6 and proc.poll() is None, "the first run")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        wait_for(lambda: any("watching" in line for line in lines), "the watch to start")
        write_png(library / "0" / "new.png", images[50])
        wait_for(lambda: path_key(library / "0" / "new.png") in rows(index), "the new file")
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, lines
    data = json.loads(out)
    assert data["watch"]["added"] == 1 and data["watch"]["total"] == 7 and data["added"] == 6
    assert not any("Traceback" in line for line in lines)


def test_watch_without_watchdog_is_one_line(home, library, monkeypatch):
    from click.testing import CliRunner

    from semhash.cli import main

    monkeypatch.setitem(sys.modules, "watchdog.observers", None)
    result = CliRunner().invoke(main, ["index", str(library), "--watch", "--quiet", "--home", str(home)])
    assert result.exit_code == 1
    assert "--watch needs the watchdog package: pip install 'semhash[watch]'" in result.output and "Traceback" not in result.output
    assert rows(home / "index" / "index.sqlite") == {}  # refused before anything was indexed
