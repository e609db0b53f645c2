"""semhash serve with file and folder names that are not UTF-8 (issue 9's path keys): rows
store keys, files are opened through ``key_path``, paths and labels are shown as keys, and
the traversal checks still hold for such names.  Real files, real index, TestClient."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with or without tests/__init__.py

from index_fixtures import add_model, digits, write_png  # noqa: E402
from waiting import wait_for  # noqa: E402

from semhash.index import index_folder, path_key  # noqa: E402
from semhash.index.browse import _indexed_root  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from semhash.web.app import create_app  # noqa: E402

LATIN1_FOLDER = b"caf\xe9"  # a Latin-1 folder name: not UTF-8
LATIN1_FILE = b"d\xe9j\xe0-vu.png"


@pytest.fixture
def indexed(tmp_path: Path):
    if sys.platform == "darwin":  # pragma: no cover - APFS refuses names that are not UTF-8
        pytest.skip("this file system refuses file names that are not UTF-8")
    home = tmp_path / "ws"
    add_model(home, "m1", seed=0, n_bits=16)
    ws = Workspace(home)
    images, _ = digits()
    folder = tmp_path / "imgs"
    odd_dir = os.path.join(os.fsencode(folder), LATIN1_FOLDER)
    odd_file = Path(os.fsdecode(os.path.join(odd_dir, LATIN1_FILE)))
    write_png(odd_file, images[0])
    plain = write_png(folder / "plain" / "a.png", images[1])
    index_folder(folder, ws.model("m1"), ws.index_path, progress=False)
    with TestClient(create_app(ws.index_path, ws), base_url="http://127.0.0.1") as client:
        yield client, folder, odd_file, plain, ws.index_path


def _row_for(client, path: Path) -> dict | None:
    found = client.get("/api/search/code", params={"code": "0", "radius": 16, "limit": 100}).json()[0]["matches"]
    return next((m for m in found if m["path"] == path_key(path)), None)


def test_a_non_utf8_file_is_listed_by_its_key_and_served(indexed):
    client, folder, odd_file, _, _ = indexed
    match = _row_for(client, odd_file)
    assert match["path"].endswith("caf\\xe9/d\\xe9j\\xe0-vu.png") and match["label"] == "caf\\xe9"
    row = client.get(f"/api/images/{match['id']}").json()
    assert row["path"] == match["path"] and row["label"] == "caf\\xe9"
    got = client.get(row["file_url"])
    assert got.status_code == 200 and got.content == odd_file.read_bytes()
    assert "filename*=UTF-8''d%5Cxe9j%5Cxe0-vu.png" in got.headers["content-disposition"]
    thumb = client.get(row["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.content[:4] == b"\x89PNG"
    (by_id,) = client.get(f"/api/search/id/{match['id']}", params={"radius": 0}).json()
    assert by_id["query"] == match["path"] and match["id"] in [m["id"] for m in by_id["matches"]]


def test_a_non_utf8_symlink_out_of_the_folder_is_404(indexed, tmp_path):
    client, folder, odd_file, _, index_path = indexed
    outside = write_png(tmp_path / "outside" / "secret.png", digits()[0][7])
    link = Path(os.fsdecode(os.path.join(os.fsencode(odd_file.parent), b"l\xefnk.png")))
    link.symlink_to(outside)
    index_folder(folder, Workspace(index_path.parent.parent).model("m1"), index_path, progress=False)
    # indexed (a link to a file is followed when indexing) ...
    match = wait_for(lambda: _row_for(client, link), "the server to pick up the re-index")
    for url in (f"/api/images/{match['id']}/file", f"/api/images/{match['id']}/thumbnail"):
        response = client.get(url)  # ... but never served from outside the indexed folder
        assert response.status_code == 404 and outside.read_bytes() not in response.content


def test_indexed_root_of_a_non_utf8_label():
    odd = os.fsdecode(b"/data/caf\xe9/x/img.png")
    assert _indexed_root(Path(odd), path_key(os.fsdecode(b"caf\xe9"))) == Path("/data")
    assert _indexed_root(Path("/data/a/img.png"), "not\\a key") == Path("/data/a")
