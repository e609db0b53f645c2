"""semhash serve's API through FastAPI's TestClient, on a real index of real PNG files made
with a tiny TensorFlow-free model: every route, every error, the path-traversal cases, the
upload limits, read-only access and re-index pick-up."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with or without tests/__init__.py

from index_fixtures import add_model, digits, write_digit_folder, write_png, home, ws  # noqa: E402
from waiting import wait_for  # noqa: E402

from semhash.cli import main  # noqa: E402
from semhash.errors import IndexError_  # noqa: E402
from semhash.hashing import to_signed64  # noqa: E402
from semhash.index import index_folder, open_index, search_codes  # noqa: E402
from semhash.index.browse import KEY_REUSE_S, IndexReader, UploadLimits, _indexed_root, parse_code  # noqa: E402
from semhash.index.db import ImageRow, bump_generation, utc_now  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from semhash.web.app import create_app  # noqa: E402

LIMITS = UploadLimits(max_request_bytes=200_000, max_files=4, max_pixels=1_000_000)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=6, classes=(0, 1, 2))
    return folder


@pytest.fixture
def index_path(ws: Workspace, folder: Path) -> Path:
    index_folder(folder, ws.model("m1"), ws.index_path, progress=False)
    return ws.index_path


def make_client(index_path: Path, ws: Workspace, **kw) -> TestClient:
    return TestClient(create_app(index_path, ws, limits=LIMITS, **kw), base_url="http://127.0.0.1")


@pytest.fixture
def client(index_path: Path, ws: Workspace):
    with make_client(index_path, ws) as c:
        yield c


def upload(client: TestClient, *paths: Path, radius: int = 2, limit: int = 100):
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths]
    return client.post(f"/api/search/upload?radius={radius}&limit={limit}", files=files)


def first_png(folder: Path, label: str = "1") -> Path:
    return sorted((folder / label).glob("*.png"))[0]


def assert_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["detail"], str) and "\n" not in body["detail"], body
    for word in words:
        assert word in body["detail"], (word, body["detail"])
    return body["detail"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height 1-bit pixels but carries one row of data: a
    decompression bomb's header (the limit must refuse it before decoding anything)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + (width + 7) // 8))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def insert_row(index_path: Path, path: str, label: str | None = None, code: int = 0) -> int:
    """A row written straight into the record (as a hostile or hand-edited index could
    hold), through the index's own tables."""
    with open_index(index_path) as db, db.write_session() as s, s.begin():
        row = {"path": path, "content_hash": "x", "size": 1, "mtime": 0.0, "label": label, "code": to_signed64(code), "indexed_at": utc_now()}
        new_id = s.execute(insert(ImageRow).returning(ImageRow.id), [row]).scalar_one()
        bump_generation(s)
    return int(new_id)


def file_digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


# --------------------------------------------------------------------------- status, page, docs
def test_status(client, folder):
    s = client.get("/api/status").json()
    assert s["count"] == 18 and s["labels"] == 3 and s["model"] == "m1" and s["bits"] == 16
    assert s["empty"] is False and s["model_available"] is True and s["model_error"] is None
    assert s["input_shape"] == [8, 8, 1] and s["generation"] >= 1 and s["search_cache"] == "lookup (cache file)"


def test_page_docs_and_schema(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<input id="file"' in page.text and 'id="radius"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    for path in (
        "/api/status", "/api/search/upload", "/api/search/id/{image_id}", "/api/search/code",
        "/api/images", "/api/images/{image_id}", "/api/images/{image_id}/file", "/api/images/{image_id}/thumbnail",
        "/api/buckets", "/api/buckets/{code}", "/api/report", "/api/report/figures/{name}",
    ):
        assert path in schema["paths"], path


def test_static_files_load_nothing_from_elsewhere():
    static = Path(__file__).resolve().parents[1] / "web" / "static"
    for path in static.iterdir():
        text = path.read_text(encoding="utf-8")
        for marker in ("http://", "https://", 'src="//', "href=\"//", "url(//", "@import"):
            assert marker not in text, (path.name, marker)
    # the pages' own JavaScript and CSS, unminified, stay small (issue 21: under 100 KB)
    assert sum(p.stat().st_size for p in static.iterdir() if p.suffix in (".js", ".css")) < 100_000


def test_host_header_other_than_localhost_is_refused(client):
    assert_error(client.get("/api/status", headers={"host": "evil.example"}), 400, "Host")
    assert client.get("/api/status", headers={"host": "localhost:8000"}).status_code == 200


# --------------------------------------------------------------------------- searching
def test_upload_matches_semhash_query_json(client, home, index_path, folder):
    """Same shape and content as `semhash query --json`, plus ids and totals."""
    query = first_png(folder, "2")
    api = upload(client, query, radius=3, limit=10_000).json()
    cli = CliRunner().invoke(main, ["query", str(query), "--radius", "3", "--json", "--home", str(home)])
    assert cli.exit_code == 0, cli.output
    expected = json.loads(cli.stdout)
    assert len(api) == len(expected) == 1
    got, want = api[0], expected[0]
    assert got["query"] == query.name and got["code"] == want["code"] and got["bits"] == want["bits"]
    assert [{k: m[k] for k in ("path", "tier", "distance", "label")} for m in got["matches"]] == want["matches"]
    assert got["total"] == len(want["matches"])
    assert got["matches"][0]["distance"] == 0
    own = client.get(f"/api/images/{got['matches'][0]['id']}").json()
    assert own["code"] == got["code"]


def test_several_images_in_one_request(client, folder):
    a, b = first_png(folder, "0"), first_png(folder, "1")
    results = upload(client, a, b).json()
    assert [r["query"] for r in results] == [a.name, b.name]
    assert all(r["matches"] and r["matches"][0]["distance"] == 0 for r in results)


def test_search_by_id_and_by_code_agree_with_the_library(client, index_path):
    rows = client.get("/api/search/code", params={"code": "0", "radius": 16, "limit": 10_000}).json()[0]["matches"]
    assert len(rows) == 18
    some = rows[5]
    by_id = client.get(f"/api/search/id/{some['id']}?radius=2&limit=100&tier=similar").json()
    assert len(by_id) == 1 and by_id[0]["query"] == some["path"]
    code, bits = by_id[0]["code"], by_id[0]["bits"]
    by_bits = client.get("/api/search/code", params={"code": bits, "radius": 2}).json()[0]
    by_int = client.get("/api/search/code", params={"code": str(code), "radius": 2}).json()[0]
    assert by_bits["matches"] == by_int["matches"] == by_id[0]["matches"]
    assert by_bits["query"] == bits and by_int["code"] == code
    library = search_codes(index_path, [code], radius=2)[0]
    assert [(m["path"], m["distance"]) for m in by_id[0]["matches"]] == [(m.path, m.distance) for m in library]
    both = client.get("/api/search/code", params=[("code", bits), ("code", "0")]).json()
    assert len(both) == 2 and both[0] == by_bits


def test_limit_keeps_the_nearest_then_by_path(client):
    full = client.get("/api/search/code", params={"code": "0", "radius": 16, "limit": 10_000}).json()[0]
    keys = [(m["distance"], m["path"]) for m in full["matches"]]
    assert keys == sorted(keys) and full["total"] == len(keys)
    for limit in (1, 2, 5, 11, 17):
        part = client.get("/api/search/code", params={"code": "0", "radius": 16, "limit": limit}).json()[0]
        assert part["matches"] == full["matches"][:limit] and part["total"] == full["total"]
    # pages: offset then limit, the same order, for code, id and upload searches alike
    first = full["matches"][0]["id"]
    by_id = client.get(f"/api/search/id/{first}", params={"radius": 16, "limit": 10_000}).json()[0]["matches"]
    for offset, limit in ((0, 5), (5, 5), (7, 4), (len(keys) - 2, 10)):
        page = {"radius": 16, "limit": limit, "offset": offset}
        assert client.get("/api/search/code", params={"code": "0", **page}).json()[0]["matches"] == full["matches"][offset : offset + limit]
        assert client.get(f"/api/search/id/{first}", params=page).json()[0]["matches"] == by_id[offset : offset + limit]
    assert_error(client.get("/api/search/code", params={"code": "0", "offset": 9_999, "limit": 2}), 422, "at most 10,000")


def test_search_parameter_errors(client):
    assert_error(client.get("/api/search/code", params={"code": "abc"}), 422, "16 bits")
    assert_error(client.get("/api/search/code", params={"code": "2" * 16}), 422, "above")
    assert_error(client.get("/api/search/code", params={"code": str(1 << 16)}), 422, "above")
    assert_error(client.get("/api/search/code"), 422, "code")
    assert_error(client.get("/api/search/code", params={"code": "0", "radius": 17}), 422, "radius 17")
    assert_error(client.get("/api/search/code", params={"code": "0", "radius": -1}), 422, "radius")
    assert_error(client.get("/api/search/code", params={"code": "0", "limit": 0}), 422, "limit")
    assert_error(client.get("/api/search/id/123456"), 404, "no indexed image with id 123456")
    assert_error(client.get("/api/search/id/abc"), 404)


def test_parse_code():
    assert parse_code("1000", 4) == 1 and parse_code("0001", 4) == 8 and parse_code("12", 4) == 12
    assert parse_code(" 0 ", 16) == 0
    for bad in ("", "-1", "0x10", "16", "10101", "1.5", "١٢"):
        with pytest.raises(Exception):
            parse_code(bad, 4)


def test_a_code_that_reads_two_ways_says_which_reading_was_used(client):
    """0/1 digits of another length than n_bits are an integer, and the answer says so; a
    code that is unambiguous gets no note (issue 18: '0101' on a 30-bit model)."""
    (short,) = client.get("/api/search/code", params={"code": "0101", "radius": 16}).json()
    assert short["code"] == 101 and "read as the integer 101" in short["note"] and "16 characters" in short["note"]
    bits = "1" + "0" * 15
    for plain in (bits, "101" + "2", "7"):
        (found,) = client.get("/api/search/code", params={"code": plain, "radius": 16}).json()
        assert "note" not in found, found
    (leading,) = client.get("/api/search/code", params={"code": "0" * 15 + "1", "radius": 16}).json()
    assert leading["code"] == 1 << 15 and "read as 16 bits" in leading["note"]


# --------------------------------------------------------------------------- uploads
def test_bad_uploads_are_422_naming_the_file_and_cause(client, folder):
    good = first_png(folder).read_bytes()
    cases = {
        "notes.png": (b"this is a text file, not an image\n", "not a recognised image format"),
        "empty.png": (b"", "empty file"),
        "cut.png": (good[:60], "corrupt or truncated"),
        "doc.eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a recognised image format"),
    }
    for name, (data, cause) in cases.items():
        response = client.post("/api/search/upload", files=[("files", (name, data, "image/png"))])
        assert_error(response, 422, name, cause)
    assert_error(client.post("/api/search/upload"), 422, "files")


def test_decompression_bombs_are_refused_from_the_header(client):
    over_limit = png_header_only(2000, 2000)  # 4 MP, over this app's 1 MP; 100-odd bytes
    detail = assert_error(client.post("/api/search/upload", files=[("files", ("big.png", over_limit, "image/png"))]), 413, "big.png")
    assert "2000x2000" in detail and "pixels" in detail
    huge = png_header_only(100_000, 100_000)  # 10^10 pixels: past Pillow's own bomb limit too
    started = time.monotonic()
    assert_error(client.post("/api/search/upload", files=[("files", ("bomb.png", huge, "image/png"))]), 413, "bomb.png")
    assert time.monotonic() - started < 10  # refused, not decoded


def test_request_size_and_file_count_limits(client, folder):
    big = os.urandom(300_000)
    assert_error(client.post("/api/search/upload", files=[("files", ("a.png", big, "image/png"))]), 413, "limit")

    def chunks():  # no Content-Length: refused while streaming
        for _ in range(40):
            yield b"x" * 10_000

    streamed = client.post(
        "/api/search/upload", content=chunks(), headers={"content-type": "multipart/form-data; boundary=zzz"}
    )
    assert_error(streamed, 413, "limit")
    png = first_png(folder)
    assert_error(upload(client, *[png] * 5), 413, "at most 4")
    assert upload(client, *[png] * 4).status_code == 200


# --------------------------------------------------------------------------- rows, files, thumbnails
def test_image_row_file_and_thumbnail(client, folder):
    path = first_png(folder, "0")
    match = upload(client, path).json()[0]["matches"][0]
    row = client.get(f"/api/images/{match['id']}").json()
    assert row["path"] == str(path) and row["label"] == "0" and len(row["bits"]) == 16
    got = client.get(row["file_url"])
    assert got.status_code == 200 and got.content == path.read_bytes() and got.headers["content-type"] == "image/png"
    again = client.get(row["file_url"], headers={"if-none-match": got.headers["etag"]})
    assert again.status_code == 304 and not again.content
    assert client.get("/api/images", params={"path": str(path)}).json() == row  # the same row by its path
    assert_error(client.get("/api/images", params={"path": str(path) + "x"}), 404, "no indexed image at")
    assert_error(client.get("/api/images", params={"path": "a\x00b"}), 404, "no indexed image at")
    thumb = client.get(row["thumbnail_url"] + "?size=16")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    from io import BytesIO

    with Image.open(BytesIO(thumb.content)) as img:
        assert img.size == (8, 8)  # never enlarged
    assert_error(client.get(row["thumbnail_url"] + "?size=8"), 422, "size")


def test_paths_that_are_not_rows_are_404(client):
    for url in (
        "/api/images/abc/file",
        "/api/images/-1/file",
        "/api/images/99999/file",
        "/api/images/99999/thumbnail",
        "/api/images/..%2F..%2Fetc%2Fpasswd/file",
        "/api/images/%2Fetc%2Fpasswd/file",
        "/api/images/1%2F..%2F..%2Fetc%2Fpasswd",
        f"/api/images/{2**70}/file",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2F..%2Fapp.py",
        "/api/report/figures/..%2Freport.json",
        "/api/report/figures/%2Fetc%2Fpasswd",
        "/etc/passwd",
    ):
        response = client.get(url)
        assert response.status_code == 404, (url, response.status_code)
        assert b"root:" not in response.content


def test_rows_whose_files_leave_the_indexed_folder_are_404(client, index_path, folder, tmp_path):
    outside = tmp_path / "outside"
    secret = write_png(outside / "secret.png", digits()[0][7])
    secret_bytes = secret.read_bytes()
    hostile = {
        "dotdot": insert_row(index_path, f"{folder}/0/../../outside/secret.png", "0"),
        "relative": insert_row(index_path, "outside/secret.png"),
        "not an image": insert_row(index_path, "/etc/passwd"),
        "a folder": insert_row(index_path, str(folder / "0"), "0"),
        "a NUL byte": insert_row(index_path, f"{folder}/0/a\x00b.png", "0"),  # was a 500 (embedded null byte)
    }
    link_out = folder / "1" / "link-out.png"
    link_out.symlink_to(secret)
    link_in = folder / "1" / "link-in.png"
    link_in.symlink_to(first_png(folder, "2"))
    hostile["symlink out"] = insert_row(index_path, str(link_out), "1")
    inside = insert_row(index_path, str(link_in), "1")
    for why, row_id in hostile.items():
        for url in (f"/api/images/{row_id}/file", f"/api/images/{row_id}/thumbnail"):
            response = client.get(url)
            assert response.status_code == 404, (why, url, response.text)
            assert secret_bytes not in response.content
    assert client.get(f"/api/images/{inside}/file").content == first_png(folder, "2").read_bytes()
    # a file replaced by a non-image after indexing is not served either
    victim = first_png(folder, "0")
    victim_id = client.get("/api/search/code", params={"code": "0", "radius": 16, "limit": 1000}).json()[0]["matches"]
    victim_id = next(m["id"] for m in victim_id if m["path"] == str(victim))
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert_error(client.get(f"/api/images/{victim_id}/file"), 404, "no longer a readable image")


def test_indexed_root():
    assert _indexed_root(Path("/data/3/img.png"), "3") == Path("/data")
    assert _indexed_root(Path("/data/3/x/3/img.png"), "3") == Path("/data/3/x")  # narrower
    assert _indexed_root(Path("/data/img.png"), None) == Path("/data")
    assert _indexed_root(Path("/data/img.png"), "cats") == Path("/data")


# --------------------------------------------------------------------------- buckets, report
def test_buckets(client):
    data = client.get("/api/buckets?n=3").json()
    assert data["images"] == 18 and 1 <= data["buckets"] <= 18 and len(data["largest"]) <= 3
    assert 0 <= data["purity"] <= 1 and 0 <= data["coverage"] <= 1
    sizes = [b["size"] for b in data["largest"]]
    assert sizes == sorted(sizes, reverse=True)
    top = data["largest"][0]
    members = client.get(f"/api/buckets/{top['bits']}").json()
    assert members["size"] == top["size"] == len(members["members"])
    assert all(m["code"] == top["code"] for m in members["members"])
    assert client.get(f"/api/buckets/{top['code']}?limit=1").json()["members"] == members["members"][:1]
    labels = [m["label"] for m in members["members"]]
    assert top["majority_label"] == max(set(labels), key=labels.count)
    from semhash.metrics import gini_purity

    assert top["purity"] == pytest.approx(gini_purity(labels))
    everyone = client.get("/api/search/code", params={"code": "0", "radius": 16, "limit": 1000}).json()[0]["matches"]
    used = {client.get(f"/api/images/{m['id']}").json()["code"] for m in everyone}
    free = next(code for code in range(1 << 16) if code not in used)
    assert client.get(f"/api/buckets/{free}").json() == {"code": free, "bits": format(free, "016b")[::-1], "size": 0, "members": []}
    assert_error(client.get("/api/buckets/xyz"), 422)
    assert_error(client.get("/api/buckets?n=101"), 422, "n")


def test_report(client, ws, index_path):
    assert_error(client.get("/api/report"), 404, "no evaluation report for model 'm1'")
    from semhash.pipeline import evaluate_index

    run = evaluate_index(ws, index_path)
    other = ws.reports_dir / "someone-else"
    other.mkdir(parents=True)
    (other / "report.json").write_text(json.dumps({"model": "not-m1"}))
    report = client.get("/api/report").json()
    assert report["model"] == "m1" and report["name"] == run.out_dir.name
    assert report["report"]["model"] == "m1" and "coverage" in report["headline"]
    assert report["figures"] and all(f["url"].startswith("/api/report/figures/") for f in report["figures"])
    for figure in report["figures"]:
        got = client.get(figure["url"])
        assert got.status_code == 200 and got.content[:4] == b"\x89PNG"
    assert_error(client.get("/api/report/figures/report.json"), 404)
    assert_error(client.get("/api/report/figures/nothing.png"), 404)


# --------------------------------------------------------------------------- index states
def test_empty_index(ws, tmp_path):
    open_index(ws.index_path, create=True).close()
    with make_client(ws.index_path, ws) as client:
        s = client.get("/api/status").json()
        assert s["empty"] is True and s["count"] == 0 and s["model"] is None
        assert_error(client.get("/api/search/code", params={"code": "0"}), 409, "the index is empty")
        assert_error(client.post("/api/search/upload", files=[("files", ("a.png", b"x", "image/png"))]), 409, "empty")
        assert_error(client.get("/api/buckets"), 409, "empty")
        assert_error(client.get("/api/report"), 404, "empty")
        assert client.get("/").status_code == 200


def test_missing_or_foreign_index_is_refused_at_start(ws, tmp_path):
    with pytest.raises(IndexError_, match="no index here"):
        create_app(tmp_path / "nothing.sqlite", ws)
    text = tmp_path / "notes.sqlite"
    text.write_text("hello")
    with pytest.raises(IndexError_, match="not a semhash index"):
        create_app(text, ws)


def test_missing_model_is_409_but_code_search_works(client, home, folder):
    shutil.rmtree(home / "models" / "m1")
    assert_error(upload(client, first_png(folder)), 409, "'m1'")
    assert client.get("/api/search/code", params={"code": "0"}).status_code == 200
    s = client.get("/api/status").json()
    assert s["model_available"] is False and "m1" in s["model_error"]


def test_database_errors_are_409_not_500(client, index_path):
    index_path.write_bytes(b"\x00" * 8192)  # same inode, no longer a database
    for url in ("/api/status", "/api/search/code?code=0", "/api/images/1", "/api/buckets/0"):
        assert_error(client.get(url), 409, str(index_path))
    index_path.unlink()
    assert_error(client.get("/api/status"), 409, "unavailable")


def test_reindex_is_picked_up_without_restart(client, ws, folder, index_path, tmp_path):
    before = client.get("/api/status").json()
    new = write_png(folder / "2" / "new-digit.png", digits()[0][100])
    index_folder(folder, ws.model("m1"), index_path, progress=False)
    after = wait_for(lambda: _status_with(client, count=before["count"] + 1), "the server to pick up the re-index")
    assert after["generation"] > before["generation"]
    hit = upload(client, new).json()[0]["matches"]
    assert any(m["path"] == str(new) and m["distance"] == 0 for m in hit)
    # deleted and re-created (another file, same name): the reader reopens it
    index_path.unlink()
    for extra in index_path.parent.glob("index.*"):
        extra.unlink()
    only = tmp_path / "only"
    write_digit_folder(only, per_class=2, classes=(5,))
    index_folder(only, ws.model("m1"), index_path, progress=False)
    wait_for(lambda: _status_with(client, count=2), "the server to reopen the re-created index")


def _status_with(client, count: int) -> dict | None:
    """/api/status once it shows ``count`` images (a server reloads at most every 2x its last
    reload's time, so a test waits for the change rather than a fixed time)."""
    status = client.get("/api/status").json()
    return status if status["count"] == count else None


class StoppedClock:
    """The reader's clock, moved only by the test: how long a request takes on a loaded
    machine cannot change what it reads (the state key is re-read after KEY_REUSE_S)."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def test_each_request_does_constant_work_until_a_reindex(index_path, ws, folder, monkeypatch):
    import semhash.index.browse

    clock = StoppedClock()
    monkeypatch.setattr(semhash.index.browse, "time", clock)
    reader = IndexReader(index_path, ws)
    statements: list[str] = []
    for conn in reader._connections:  # every connection, now and later, traces what it executes
        conn.set_trace_callback(statements.append)
    connect = reader._connect

    def traced():
        conn = connect()
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(reader, "_connect", traced)
    reader._engine.dispose()
    reader.search_codes([0], radius=2, limit=10)
    per_request = []
    for code in (reader.image(i).code for i in (1, 2, 3, 4)):  # each finds at least its row
        clock.now += 2 * KEY_REUSE_S  # a new request: the key is read again, once
        statements.clear()
        reader.search_codes([code], radius=2, limit=10)
        reader.status()
        per_request.append(len(statements))
        assert not [s for s in statements if "FROM images" in s and "WHERE" not in s], statements
    assert per_request == [2] * 4, per_request  # the meta rows, the matches' rows
    state = reader._state
    write_png(folder / "0" / "another.png", digits()[0][200])
    index_folder(folder, ws.model("m1"), index_path, progress=False)
    clock.now += 2 * KEY_REUSE_S
    reader.search_codes([0], radius=2)
    assert reader._state is not state and reader._state.meta.generation > state.meta.generation
    reader.close()


def test_queries_during_indexing_succeed(client, ws, folder, index_path, tmp_path):
    more = tmp_path / "more"
    write_digit_folder(more, per_class=40, classes=(3, 4, 5, 6))
    worker = threading.Thread(
        target=index_folder, args=(more, ws.model("m1"), index_path), kwargs={"progress": False, "batch_size": 4}
    )
    worker.start()
    statuses = []
    deadline = time.monotonic() + 60
    while worker.is_alive() and time.monotonic() < deadline and len(statuses) < 2000:
        statuses.append(client.get("/api/search/code", params={"code": "0", "radius": 3}).status_code)
        statuses.append(upload(client, first_png(folder)).status_code)
    worker.join(timeout=60)
    assert statuses and set(statuses) == {200}
    wait_for(lambda: _status_with(client, count=18 + 160), "the server to show every indexed image")


def test_a_stale_lookup_is_built_in_memory_never_written(index_path, ws, folder):
    lookup_file = index_path.with_suffix(".lookup")
    lookup_file.unlink()
    with make_client(index_path, ws) as client:
        assert client.get("/api/status").json()["search_cache"] == "lookup (built in memory)"
        found = client.get("/api/search/code", params={"code": "0", "radius": 16}).json()[0]
        assert found["total"] == 18
        insert_row(index_path, str(folder / "1" / "extra.png"), "1", code=0)  # a re-index elsewhere

        def total() -> int:
            return client.get("/api/search/code", params={"code": "0", "radius": 16}).json()[0]["total"]

        # the server keeps its view for up to twice its last reload's time: wait for the reload itself
        wait_for(lambda: total() == 19, "the server to pick up the new row")
    assert not lookup_file.exists()


def test_requests_never_change_the_index(client, index_path, folder):
    lookup_file = index_path.with_suffix(".lookup")
    before = {p: file_digest(p) for p in (index_path, lookup_file)}
    png = first_png(folder)
    row = upload(client, png).json()[0]["matches"][0]["id"]
    for url in ("/api/status", f"/api/images/{row}", f"/api/images/{row}/file", f"/api/images/{row}/thumbnail",
                "/api/buckets", "/api/buckets/0", "/api/report", f"/api/search/id/{row}", "/api/search/code?code=0"):
        assert client.get(url).status_code in (200, 404)
    assert {p: file_digest(p) for p in (index_path, lookup_file)} == before
    reader = client.app.state.reader
    with pytest.raises(Exception, match="readonly"):
        with reader._engine.connect() as conn:
            conn.exec_driver_sql("DELETE FROM images")


def test_wal_index_is_read_without_being_changed(index_path, ws, folder):
    con = sqlite3.connect(index_path)
    assert con.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    con.close()
    before = file_digest(index_path)[0]
    with make_client(index_path, ws) as client:
        assert upload(client, first_png(folder)).status_code == 200
        assert client.get("/api/status").json()["count"] == 18
    assert file_digest(index_path)[0] == before


# --------------------------------------------------------------------------- the command, imports
def test_serve_refuses_a_missing_index_and_a_busy_port(home, index_path):
    missing = CliRunner().invoke(main, ["serve", "--home", str(home / "nowhere")])
    assert missing.exit_code == 1 and "no index here" in missing.output
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        refused = CliRunner().invoke(main, ["serve", "--home", str(home), "--port", str(port)])
    assert refused.exit_code == 1 and "cannot listen" in refused.output


def test_serving_never_imports_tensorflow_and_semhash_never_imports_fastapi(index_path, ws, folder):
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError("blocked in this test")
sys.meta_path.insert(0, Block())
import semhash, semhash.cli
assert "fastapi" not in sys.modules and "uvicorn" not in sys.modules, "import semhash pulled in the web stack"
from fastapi.testclient import TestClient
from semhash.web.app import create_app
from semhash.workspace import Workspace
client = TestClient(create_app({str(index_path)!r}, Workspace({str(ws.root)!r})), base_url="http://127.0.0.1")
png = open({str(first_png(folder))!r}, "rb").read()
r = client.post("/api/search/upload", files=[("files", ("q.png", png, "image/png"))])
assert r.status_code == 200 and r.json()[0]["matches"], r.text
assert "tensorflow" not in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stdout + out.stderr


def test_an_upload_unlike_the_models_images_gets_a_hint(client, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    colour.save(buffer, "PNG")
    got = client.post("/api/search/upload", files=[("files", ("photo.png", buffer.getvalue(), "image/png"))]).json()[0]
    assert "RGB image of 64x64" in got["hint"] and "8x8 grey images" in got["hint"]
    grey = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8))
    buffer = io.BytesIO()
    grey.save(buffer, "PNG")
    same = client.post("/api/search/upload", files=[("files", ("digit.png", buffer.getvalue(), "image/png"))]).json()[0]
    assert "hint" not in same  # like the model's own images: no hint, and no key
