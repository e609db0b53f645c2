"""The exact / near / similar tiers, the near lookup, and `semhash duplicates` (issue 20).

Real photographs (scikit-learn's two sample photos, cut into tiles), real copies made with
Pillow, a real index; a tiny NumPy hasher stands in for the model (the similar tier is not
what these tests are about)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from index_fixtures import add_model
from semhash.duplicates import group_pairs, record_decision
from semhash.index.db import SCHEMA_VERSION
from semhash.index.near_lookup import NARROW, WIDE, WIDER, NearLookup, brute_force
from waiting import wait_for

TILE = 160


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """8 distinct photo tiles as PNG in originals/, and in copies/ edited copies of the first
    three: JPEG q50, half size, brighter (gamma), mirrored, and a byte-identical copy."""
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("photos")
    (root / "originals").mkdir()
    (root / "copies").mkdir()
    tiles = []
    for image in load_sample_images().images:
        for k in range(4):
            y, x = 40 + 60 * k, 30 + 110 * k
            tiles.append(Image.fromarray(image[y : y + TILE, x : x + TILE]))
    for i, tile in enumerate(tiles):
        tile.save(root / "originals" / f"p{i}.png")
    a, b, c = tiles[0], tiles[1], tiles[2]
    a.save(root / "copies" / "a-q50.jpg", quality=50)
    b.resize((TILE // 2, TILE // 2), Image.Resampling.BICUBIC).save(root / "copies" / "b-half.png")
    ImageOps.mirror(c).save(root / "copies" / "c-mirror.png")
    Image.eval(a, lambda v: int(255 * (v / 255) ** 0.8)).save(root / "copies" / "a-gamma.png")
    (root / "copies" / "a-same.png").write_bytes((root / "originals" / "p0.png").read_bytes())
    Image.new("RGB", (TILE, TILE), (120, 120, 120)).save(root / "flat.png")
    return root


@pytest.fixture()
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture()
def library(photos, tmp_path, home, cli):
    """A private copy of the photos, indexed."""
    import shutil

    folder = tmp_path / "library"
    shutil.copytree(photos, folder)
    add_model(home, "m1")
    cli("index", folder, "--model", "m1", "--quiet", home=home)
    return folder


# --------------------------------------------------------------------------- the near lookup
def _codes(seed: int, n: int, planted: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    for _ in range(planted):  # near neighbours: a copy with a few bits flipped
        i, j = rng.integers(0, n, 2)
        codes[j] = codes[i]
        for bit in rng.choice(256, int(rng.integers(0, 40)), replace=False):
            codes[j, bit // 8] ^= 1 << (bit % 8)
    return codes


def _check_near_lookup(seed, n, threshold, backend, layout):
    codes = _codes(seed, n, planted=n // 3)
    queries = _codes(seed + 1, 20, 0) if n == 0 else np.concatenate([codes[: min(n, 15)], _codes(seed + 1, 5, 0)])
    lookup = NearLookup(np.arange(n) * 7, codes, layout)
    use = backend if threshold // len(lookup.layout) <= 2 else "auto"
    got, want = lookup.search(queries, threshold, backend=use), brute_force(codes, queries, threshold)
    assert all((g == w).all() for g, w in zip(got, want))
    use = backend if threshold // 16 <= 2 else "auto"
    i, j, d = lookup.pairs(threshold, backend=use)
    full = brute_force(codes, codes, threshold)
    keep = full[1] > full[0]
    expected = sorted(zip(full[0][keep].tolist(), full[1][keep].tolist(), full[2][keep].tolist()))
    assert sorted(zip(i.tolist(), j.tolist(), d.tolist())) == expected


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), threshold=st.integers(0, 60), backend=st.sampled_from(["c", "numpy"]))
def test_near_lookup_is_exact_against_brute_force(seed, n, threshold, backend):
    _check_near_lookup(seed, n, threshold, backend, NARROW)


@settings(max_examples=6, deadline=None)  # the wide layout's directories take 128 MB to build
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), threshold=st.integers(0, 40), backend=st.sampled_from(["c", "numpy"]))
def test_the_wide_near_lookup_is_exact_against_brute_force(seed, n, threshold, backend):
    _check_near_lookup(seed, n, threshold, backend, WIDE)


def test_a_saved_near_lookup_answers_as_the_one_it_was_saved_from(tmp_path):
    from semhash.index.near_lookup import load_arrays, save_arrays

    codes = _codes(3, 500, planted=100)
    for layout in (NARROW, WIDE, WIDER):
        built = NearLookup(np.arange(500), codes, layout)
        save_arrays(tmp_path / "x.near", built.arrays(), {"generation": 1})
        assert load_arrays(tmp_path / "x.near", {"generation": 2}) is None  # another record state
        loaded = NearLookup.from_arrays(**load_arrays(tmp_path / "x.near", {"generation": 1}))
        assert loaded.layout == layout
        assert all((a == b).all() for a, b in zip(loaded.search(codes[:50], 31), built.search(codes[:50], 31)))
        assert all((a == b).all() for a, b in zip(built.search(codes[:50], 31), brute_force(codes, codes[:50], 31)))
    assert load_arrays(tmp_path / "missing.near", {"generation": 1}) is None


def test_groups_never_chain():
    # A~B and B~C, but A and C far apart: A keeps B; C is in no group with A
    pairs = {(0, 1): ("near", 20), (1, 2): ("near", 20), (3, 4): ("exact", 0)}
    groups = group_pairs(5, pairs, np.array([0, 1, 2, 3, 4]))
    assert groups == [(0, [(1, "near", 20)]), (3, [(4, "exact", 0)])]
    # C first: C keeps B, A is left alone
    assert group_pairs(5, pairs, np.array([2, 1, 0, 3, 4]))[0] == (2, [(1, "near", 20)])


# --------------------------------------------------------------------------- query tiers
def test_query_says_which_tier_each_copy_is_found_in(library, home, cli):
    out = cli("query", library / "copies" / "a-q50.jpg", library / "copies" / "c-mirror.png", "--tier", "near", "--json",
              home=home)  # fmt: skip
    jpeg, mirror = json.loads(out.stdout)
    assert [(m["path"], m["tier"]) for m in jpeg["matches"]][:1] and all(m["tier"] == "near" for m in jpeg["matches"])
    paths = {Path(m["path"]).name for m in jpeg["matches"]}
    assert {"p0.png", "a-same.png", "a-gamma.png", "a-q50.jpg"} <= paths and "p1.png" not in paths
    assert all(m["distance"] <= 31 for m in jpeg["matches"])
    assert "p2.png" in {Path(m["path"]).name for m in mirror["matches"]}  # through the dihedral codes
    everything = json.loads(cli("query", library / "originals" / "p0.png", "--json", home=home).stdout)[0]
    tiers = [m["tier"] for m in everything["matches"]]
    assert tiers[:2] == ["exact", "exact"] and tiers == sorted(tiers, key=["exact", "near", "similar"].index)
    assert len({m["path"] for m in everything["matches"]}) == len(everything["matches"])  # each image once
    assert everything["total"] == len(everything["matches"]) and everything["tier"] == "all"


def test_a_flat_image_matches_nothing_in_the_near_tier_and_says_so(library, home, cli):
    out = cli("query", library / "flat.png", "--tier", "near", home=home)
    assert "no indexed image in the near tier" in out.stdout
    assert "too flat for the near tier (PDQ quality 0 < 50)" in out.stderr
    found = json.loads(cli("query", library / "flat.png", "--tier", "exact", "--json", home=home).stdout)[0]
    assert [Path(m["path"]).name for m in found["matches"]] == ["flat.png"]


def test_a_code_query_cannot_ask_for_the_near_tier(library, home, cli):
    result = cli("query", "--code", "0", "--tier", "near", home=home, ok=False)
    assert result.exit_code == 2 and "--tier near needs query images" in result.output


# --------------------------------------------------------------------------- duplicates
def _groups(cli, home, *args):
    return json.loads(cli("duplicates", "--json", *args, home=home).stdout)


def test_duplicates_groups_copies_around_the_largest_original(library, home, cli):
    data = _groups(cli, home)
    # "largest": most pixels, then most bytes: the brightened PNG of p0 is the largest of its copies
    assert [Path(g["keeper"]["path"]).name for g in data["groups"]] == ["a-gamma.png", "p1.png"]
    members = {Path(m["path"]).name: m for g in data["groups"] for m in g["duplicates"]}
    assert {name: m["tier"] for name, m in members.items()} == dict.fromkeys(["a-q50.jpg", "a-same.png", "p0.png", "b-half.png"], "near")
    assert members["b-half.png"]["width"] == TILE // 2
    assert "c-mirror.png" not in members  # mirrors only with --mirrors
    assert data["totals"]["redundant_files"] == len(members) == 4
    assert data["totals"]["reclaimable_bytes"] == sum(m["size"] for m in members.values())
    assert data["totals"]["too_flat"] >= 1  # flat.png (and any tile of plain sky)
    mirrored = {Path(m["path"]).name for g in _groups(cli, home, "--mirrors")["groups"] for m in g["duplicates"]}
    assert mirrored == {*members, "c-mirror.png"}
    exact = _groups(cli, home, "--tier", "exact")
    assert [sorted(Path(m["path"]).name for m in [g["keeper"], *g["duplicates"]]) for g in exact["groups"]] == [["a-same.png", "p0.png"]]
    assert exact["groups"][0]["duplicates"][0]["tier"] == "exact"
    # every member is within the threshold of its keeper
    assert all(m["distance"] <= 31 for g in data["groups"] for m in g["duplicates"])
    shortest = _groups(cli, home, "--keep", "shortest-path")
    assert all(len(g["keeper"]["path"]) <= min(len(m["path"]) for m in g["duplicates"]) for g in shortest["groups"])
    csv_lines = cli("duplicates", "--csv", home=home).stdout.splitlines()
    assert csv_lines[0] == "group,role,tier,distance,path,size,width,height,mtime,format,taken_at,camera" and len(csv_lines) == 1 + 4 + 2


def test_a_group_marked_not_duplicates_stays_hidden_until_a_new_copy_joins(library, home, cli):
    index = home / "index" / "index.sqlite"
    data = _groups(cli, home)
    group = next(g for g in data["groups"] if Path(g["keeper"]["path"]).name == "p1.png")
    record_decision(index, [group["keeper"]["path"], *(m["path"] for m in group["duplicates"])], "not_duplicates")
    after = _groups(cli, home)
    assert "p1.png" not in {Path(g["keeper"]["path"]).name for g in after["groups"]}
    assert after["totals"]["hidden_by_decisions"] == 1
    cli("index", library, "--quiet", home=home)  # decisions survive re-indexing
    assert _groups(cli, home)["totals"]["hidden_by_decisions"] == 1
    Image.open(library / "originals" / "p1.png").save(library / "copies" / "b-again.jpg", quality=70)
    cli("index", library, "--quiet", home=home)
    reopened = _groups(cli, home)
    assert "p1.png" in {Path(g["keeper"]["path"]).name for g in reopened["groups"]}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_move_to_keeps_every_file_and_undo_puts_them_back(library, home, cli, tmp_path):
    before = _files(library)
    refused = cli("duplicates", "--move-to", library / "dups", home=home, ok=False)
    assert refused.exit_code == 1 and "an indexed folder" in refused.stderr and _files(library) == before
    target = tmp_path / "moved"
    out = cli("duplicates", "--move-to", target, home=home)
    assert out.stdout.startswith("moved 4 duplicates")
    manifest = next(target.glob("semhash-moves-*.jsonl"))
    assert f"semhash duplicates --undo {manifest}" in out.stderr
    moved = [json.loads(line) for line in manifest.read_text().splitlines()[1:]]
    assert len(moved) == 4 and all(Path(m["to"]).is_file() and not Path(m["from"]).exists() for m in moved)
    assert all(Path(m["to"]) == target / Path(m["from"]).relative_to("/") for m in moved)
    assert _groups(cli, home)["totals"]["groups"] == 0  # the index forgot the moved files
    cli("duplicates", "--undo", manifest, home=home)
    assert _files(library) == before
    # a move that would overwrite a file refuses, moving nothing
    clash = Path(moved[0]["to"])
    clash.parent.mkdir(parents=True, exist_ok=True)
    clash.write_bytes(b"someone else's file")
    cli("index", library, "--quiet", home=home)
    refused = cli("duplicates", "--move-to", target, home=home, ok=False)
    assert refused.exit_code == 1 and "already exists" in refused.stderr and _files(library) == before


_MOVER = """
import sys, time
from semhash.duplicates import find_duplicates, move_duplicates
index, target = sys.argv[1], sys.argv[2]
report = find_duplicates(index)
def slowly(source, target):
    print("moved", source, flush=True)
    time.sleep(0.2)
move_duplicates(index, report, target, on_move=slowly)
"""


def test_a_kill_during_move_to_loses_no_file_and_undo_recovers(library, home, cli, tmp_path):
    before = _files(library)
    target = tmp_path / "moved"
    proc = subprocess.Popen([sys.executable, "-c", _MOVER, str(home / "index" / "index.sqlite"), str(target)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    lines = []
    wait_for(lambda: lines.append(proc.stdout.readline()) or len(lines) >= 2, "two moves done")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    manifest = next(target.glob("semhash-moves-*.jsonl"))
    planned = [json.loads(line) for line in manifest.read_text().splitlines()[1:]]
    places = [(Path(p["from"]).is_file(), Path(p["to"]).is_file()) for p in planned]
    assert all(a != b for a, b in places)  # every file in exactly one place
    assert 2 <= sum(b for _, b in places) < len(planned)
    # run again: the rest is moved, the moves done before are recognised (and listed again)
    again = cli("duplicates", "--move-to", target, "--json", home=home)
    data = json.loads(again.stdout)
    assert data["moved"] == len(planned) - sum(b for _, b in places) and data["missing"] == []
    assert all(not Path(p["from"]).exists() and Path(p["to"]).is_file() for p in planned)
    cli("duplicates", "--undo", data["manifest"], home=home)
    assert _files(library) == before
    cli("duplicates", "--undo", manifest, home=home)  # nothing left to put back: no harm
    assert _files(library) == before


# --------------------------------------------------------------------------- schema, import
def test_an_index_from_before_the_near_tier_gains_it_on_the_next_run(library, home, cli):
    index = home / "index" / "index.sqlite"
    con = sqlite3.connect(index)
    with con:
        for column in ("near_code", "near_variants", "near_quality", "width", "height", "taken_at", "camera", "format"):
            con.execute(f"ALTER TABLE images DROP COLUMN {column}")
        con.execute("DROP TABLE decisions")
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.close()
    status = json.loads(cli("status", "--json", home=home).stdout)  # opening upgrades it in place
    assert status["schema_version"] == SCHEMA_VERSION == 4 and status["count"] == 14
    summary = json.loads(cli("index", library, "--json", "--quiet", home=home).stdout)
    assert summary["updated"] == 14  # every row decoded once more for its near code and photo facts
    con = sqlite3.connect(index)
    assert con.execute("SELECT count(*) FROM images WHERE near_code IS NULL OR format IS NULL").fetchone()[0] == 0
    con.close()
    assert _groups(cli, home)["totals"]["redundant_files"] == 4


def test_import_into_an_existing_index_carries_near_codes(library, home, cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = home / "index" / "index.sqlite"
    con = sqlite3.connect(index)
    (code,) = con.execute("SELECT near_code FROM images WHERE path LIKE '%/p5.png'").fetchone()
    con.close()
    table = pa.table({"path": ["/elsewhere/x.png", "/elsewhere/y.png"], "code": np.array([1, 2], np.uint64),
                      "near_code": [code.hex(), None], "near_quality": [80, None]})  # fmt: skip
    pq.write_table(table, tmp_path / "more.parquet")
    cli("import", tmp_path / "more.parquet", "--model", "m1", home=home)
    found = json.loads(cli("query", library / "originals" / "p5.png", "--tier", "near", "--json", home=home).stdout)[0]
    assert {m["path"] for m in found["matches"]} == {str(library / "originals" / "p5.png"), "/elsewhere/x.png"}
    bad = pa.table({"path": ["/elsewhere/z.png"], "code": np.array([1], np.uint64), "near_code": ["abc"]})
    pq.write_table(bad, tmp_path / "bad.parquet")
    result = cli("import", tmp_path / "bad.parquet", "--model", "m1", home=home, ok=False)
    assert result.exit_code == 1 and "bad.parquet: row 1: near_code is not hex text" in result.stderr


def test_upload_search_in_the_web_api_carries_tiers(library, home):
    from fastapi.testclient import TestClient

    from semhash.web.app import create_app

    from semhash.workspace import Workspace

    app = create_app(home / "index" / "index.sqlite", Workspace(home))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        data = (library / "copies" / "a-q50.jpg").read_bytes()
        got = client.post("/api/search/upload", params={"tier": "near"}, files={"files": ("a.jpg", data, "image/jpeg")})
        assert got.status_code == 200, got.text
        matches = got.json()[0]["matches"]
        assert matches and {m["tier"] for m in matches} == {"near"}
        assert client.post("/api/search/upload", params={"tier": "nearby"}, files={"files": ("a.jpg", data)}).status_code == 422



def test_calibrate_says_what_each_threshold_finds_without_touching_the_library(library, home, cli):
    before = _files(library)
    data = json.loads(cli("duplicates", "--calibrate", "--sample", "4", "--json", home=home).stdout)
    assert data["sampled"] == 4 and data["thresholds"] == [8, 16, 24, 31, 39, 47] and data["default_threshold"] == 31
    assert set(data["recall"]) == {"jpeg_q50", "resize_half", "gamma", "crop_5pct", "rotate_4deg", "flip", "pad_10pct", "overlay", "blur"}
    default = data["thresholds"].index(31)
    for edit in ("jpeg_q50", "resize_half", "gamma", "flip", "blur"):  # flip: through the dihedral codes
        assert data["recall"][edit][default] == 1.0, (edit, data["recall"][edit])
    for series in [*data["recall"].values(), data["false_match"]]:
        assert series == sorted(series)  # a looser threshold never finds less
    assert _files(library) == before  # the copies were made in memory
    table = cli("duplicates", "--calibrate", "--sample", "2", home=home).stdout
    assert "31 (default)" in table and "2 indexed images copied 9 ways" in table


def test_identical_files_are_a_group_even_when_too_flat_for_the_near_tier(library, home, cli):
    for name in ("flat-2.png", "flat-3.png"):
        (library / "copies" / name).write_bytes((library / "flat.png").read_bytes())
    cli("index", library, "--quiet", home=home)
    data = _groups(cli, home, "--keep", "shortest-path")
    flat = next(g for g in data["groups"] if Path(g["keeper"]["path"]).name == "flat.png")
    assert sorted((Path(m["path"]).name, m["tier"], m["distance"]) for m in flat["duplicates"]) == [
        ("flat-2.png", "exact", 0), ("flat-3.png", "exact", 0)]


def test_the_near_cache_beside_the_record_is_rebuilt_when_missing_or_stale(library, home, cli):
    near = home / "index" / "index.near"
    assert near.is_file()  # left current by `semhash index`
    query = [library / "copies" / "a-q50.jpg", "--tier", "near", "--json"]
    first = json.loads(cli("query", *query, home=home).stdout)[0]["matches"]
    near.unlink()
    assert json.loads(cli("query", *query, home=home).stdout)[0]["matches"] == first
    assert near.is_file()  # a query with write access saves what it built
    (library / "originals" / "p0.png").unlink()  # the record changes: the cache is stale
    cli("index", library, "--quiet", home=home)
    after = json.loads(cli("query", *query, home=home).stdout)[0]["matches"]
    assert {Path(m["path"]).name for m in first} - {Path(m["path"]).name for m in after} == {"p0.png"}


def test_the_web_api_lists_the_groups_of_copies(library, home, cli):
    from fastapi.testclient import TestClient

    from semhash.web.app import create_app
    from semhash.workspace import Workspace

    expected = _groups(cli, home)
    with TestClient(create_app(home / "index" / "index.sqlite", Workspace(home)), base_url="http://127.0.0.1") as client:
        got = client.get("/api/duplicates").json()
        assert got["groups"] == expected["groups"] and got["totals"] == expected["totals"]
        page = client.get("/api/duplicates", params={"offset": 1, "limit": 1}).json()
        assert page["groups"] == expected["groups"][1:2] and page["totals"]["groups"] == 2
        refused = client.get("/api/duplicates", params={"tier": "similar"})
        assert refused.status_code == 422 and "radius=R" in refused.json()["detail"]
        looks = client.get("/api/duplicates", params={"tier": "similar", "radius": 16}).json()
        assert looks["tiers"] == ["exact", "near", "similar"] and looks["totals"]["redundant_files"] >= 4


def test_move_to_another_file_system_copies_then_removes_and_undo_comes_back(library, home, cli, tmp_path):
    from unprivileged import small_disk

    before = _files(library)
    with small_disk(tmp_path / "other-disk", "20m") as disk:
        out = cli("duplicates", "--move-to", disk / "dups", home=home)
        assert out.stdout.startswith("moved 4 duplicates")
        manifest = next((disk / "dups").glob("semhash-moves-*.jsonl"))
        moved = [json.loads(line) for line in manifest.read_text().splitlines()[1:]]
        assert all(Path(m["to"]).read_bytes() == before[str(Path(m["from"]).relative_to(library))] for m in moved)
        assert not any(Path(m["from"]).exists() for m in moved)
        assert not list(disk.rglob("*.semhash-moving"))  # no partial copy left
        cli("duplicates", "--undo", manifest, home=home)
        assert _files(library) == before


def test_an_old_index_on_read_only_media_answers_without_the_near_tier(library, home, cli):
    from unprivileged import cli_unprivileged

    index = home / "index" / "index.sqlite"
    con = sqlite3.connect(index)
    with con:  # as semhash before the near tier left it
        for column in ("near_code", "near_variants", "near_quality", "width", "height"):
            con.execute(f"ALTER TABLE images DROP COLUMN {column}")
        con.execute("DROP TABLE decisions")
        con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    (home / "index" / "index.near").unlink()
    locked = [index.parent, index]
    modes = [p.stat().st_mode for p in locked]
    for p in locked:
        p.chmod(0o555 if p.is_dir() else 0o444)
    query = library / "originals" / "p0.png"
    try:
        everything, near, groups, exact = cli_unprivileged(
            ["query", query, "--json", "--home", home],
            ["query", query, "--tier", "near", "--home", home],
            ["duplicates", "--home", home],
            ["duplicates", "--tier", "exact", "--json", "--home", home],
        )
    finally:
        for p, mode in zip(locked, modes):
            p.chmod(mode)
    assert everything["exit_code"] == 0, everything
    assert "predates the near tier" in everything["stderr"]
    matches = json.loads(everything["stdout"])[0]["matches"]
    assert matches[0]["tier"] == "exact" and {m["tier"] for m in matches} <= {"exact", "similar"}
    for refused in (near, groups):
        assert refused["exit_code"] == 1 and "predates the near-duplicate tier" in refused["stderr"], refused
        assert "Traceback" not in refused["stderr"]
    assert exact["exit_code"] == 0 and json.loads(exact["stdout"])["totals"]["groups"] == 1, exact


def test_decisions_are_recorded_only_in_review_mode_and_the_last_one_wins(library, home, cli):
    from fastapi.testclient import TestClient

    from semhash.web.app import create_app
    from semhash.workspace import Workspace

    index = home / "index" / "index.sqlite"
    group = _groups(cli, home)["groups"][1]
    paths = [group["keeper"]["path"], *(m["path"] for m in group["duplicates"])]
    body = {"key": group["key"], "decision": "keep", "keeper": paths[-1]}
    with TestClient(create_app(index, Workspace(home)), base_url="http://127.0.0.1") as client:
        refused = client.post("/api/duplicates/decisions", json=body)
        assert refused.status_code == 403 and "--review" in refused.json()["detail"]
    with TestClient(create_app(index, Workspace(home), review=True), base_url="http://127.0.0.1") as client:
        kept = client.post("/api/duplicates/decisions", json=body)
        assert kept.status_code == 200 and kept.json() == {"key": group["key"], "decision": "keep", "keeper": paths[-1]}
        listed = {g["key"]: g for g in client.get("/api/duplicates").json()["groups"]}
        assert listed[group["key"]]["decision"] == "keep" and listed[group["key"]]["decided_keeper"] == paths[-1]
        bad = client.post("/api/duplicates/decisions", json={**body, "keeper": "/elsewhere.png"})
        assert bad.status_code == 422 and "keeper" in bad.json()["detail"]
        # a second tab decides otherwise: the last decision wins, nothing else changes
        assert client.post("/api/duplicates/decisions", json={"key": group["key"], "decision": "not_duplicates"}).status_code == 200
        gone = client.post("/api/duplicates/decisions", json={"key": "0" * 64, "decision": "skip"})
        assert gone.status_code == 409 and "changed since it was listed" in gone.json()["detail"]
        after = client.get("/api/duplicates").json()
        assert group["key"] not in {g["key"] for g in after["groups"]} and after["totals"]["hidden_by_decisions"] == 1
    assert _groups(cli, home)["totals"]["hidden_by_decisions"] == 1  # the CLI honours it too
    con = sqlite3.connect(index)
    assert con.execute("SELECT count(*) FROM decisions").fetchone()[0] == 1
    con.close()


def test_the_review_plan_moves_the_decided_groups_keeping_the_chosen_image(library, home, cli, tmp_path):
    index = home / "index" / "index.sqlite"
    data = _groups(cli, home)
    group = next(g for g in data["groups"] if Path(g["keeper"]["path"]).name == "a-gamma.png")
    chosen = next(m["path"] for m in group["duplicates"] if Path(m["path"]).name == "p0.png")
    record_decision(index, [group["keeper"]["path"], *(m["path"] for m in group["duplicates"])], "keep", chosen)
    plan = _groups(cli, home, "--decided")
    (only,) = plan["groups"]  # the undecided group is not in the plan
    assert only["keeper"]["path"] == chosen
    assert {Path(m["path"]).name for m in only["duplicates"]} == {"a-gamma.png", "a-q50.jpg", "a-same.png"}
    out = cli("duplicates", "--decided", "--move-to", tmp_path / "moved", home=home)
    assert out.stdout.startswith("moved 3 duplicates")
    assert Path(chosen).is_file() and not (library / "copies" / "a-gamma.png").exists()
    assert (library / "copies" / "b-half.png").is_file()  # undecided: not moved


def test_the_review_filters_by_folder_and_label_accepts_a_folder_and_exports_the_plan(library, home, cli, tmp_path):
    from fastapi.testclient import TestClient

    from semhash.web.app import create_app
    from semhash.workspace import Workspace

    index = home / "index" / "index.sqlite"
    (library / "other" / "deep").mkdir(parents=True)  # a third group, in a folder of its own
    with Image.open(library / "originals" / "p5.png") as tile:
        tile.save(library / "other" / "deep" / "p5-q70.jpg", quality=70)
    cli("index", library, "--model", "m1", "--quiet", home=home)
    other = str(library / "other")
    with TestClient(create_app(index, Workspace(home)), base_url="http://127.0.0.1") as client:
        assert client.post("/api/duplicates/accept", params={"folder": other}).status_code == 403
        everything = client.get("/api/duplicates").json()
        assert everything["totals"]["groups"] == 3
        facets = {f["folder"]: f["groups"] for f in everything["folders"]}
        assert facets[other] == 1 and facets[str(library / "copies")] == 2 and facets[str(library)] == 3
        assert {x["label"]: x["groups"] for x in everything["labels"]} == {"copies": 2, "originals": 3, "other": 1}
        inside = client.get("/api/duplicates", params={"folder": other + "/"}).json()
        (group,) = inside["groups"]
        assert inside["totals"]["groups"] == 1 and inside["folder"] == other + "/"
        assert {Path(m["path"]).name for m in (group["keeper"], *group["duplicates"])} == {"p5.png", "p5-q70.jpg"}
        assert client.get("/api/duplicates", params={"folder": str(library / "oth")}).json()["totals"]["groups"] == 0
        labelled = client.get("/api/duplicates", params={"label": "copies"}).json()["groups"]
        assert len(labelled) == 2 and group["key"] not in {g["key"] for g in labelled}
        assert all(m["label"] in ("copies", "originals", "other") for g in labelled for m in (g["keeper"], *g["duplicates"]))
    with TestClient(create_app(index, Workspace(home), review=True), base_url="http://127.0.0.1") as client:
        accepted = client.post("/api/duplicates/accept", params={"folder": other})
        assert accepted.status_code == 200 and accepted.json() == {"decided": 1}
        assert client.post("/api/duplicates/accept", params={"folder": other}).json() == {"decided": 0}  # decided already
        decisions = {g["key"]: g["decision"] for g in client.get("/api/duplicates").json()["groups"]}
        assert decisions[group["key"]] == "keep" and sorted(map(str, decisions.values())) == ["None", "None", "keep"]
        download = client.get("/api/duplicates/plan")
        assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    plan = tmp_path / "semhash-plan.json"
    plan.write_bytes(download.content)
    (planned,) = json.loads(download.content)["groups"]
    assert planned["keeper"] == group["keeper"]["path"] and planned["duplicates"] == [m["path"] for m in group["duplicates"]]
    out = cli("duplicates", "--plan", plan, "--move-to", tmp_path / "moved", home=home)
    assert out.stdout.startswith("moved 1 duplicates")
    assert not Path(planned["duplicates"][0]).exists() and Path(planned["keeper"]).is_file()
    assert (library / "copies" / "a-q50.jpg").is_file()  # not in the plan: not moved
    # the plan again: its group is gone from the index now, so it is left alone, saying so
    again = cli("duplicates", "--plan", plan, "--move-to", tmp_path / "moved", home=home)
    assert "no duplicates to move" in again.stdout and "not in the index as planned" in again.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "semhash-plan", "version": 1, "groups": 3}')
    refused = cli("duplicates", "--plan", broken, home=home, ok=False)
    assert refused.exit_code == 1 and "broken.json" in refused.stderr and "Traceback" not in refused.output


def test_a_review_server_groups_the_copies_before_the_first_request_and_again_after_a_reindex(library, home, cli):
    from semhash.web.app import create_app
    from semhash.workspace import Workspace

    def warmed(reader):
        state = reader._state
        return state is not None and any(isinstance(k, tuple) and k[:1] == ("duplicates",) for k in state.derived)

    index = home / "index" / "index.sqlite"
    plain = create_app(index, Workspace(home)).state.reader
    assert not warmed(plain)  # a plain server groups only when asked
    reader = create_app(index, Workspace(home), review=True).state.reader
    try:
        wait_for(lambda: warmed(reader), "the groups computed in the background")
        before = reader._state
        with Image.open(library / "originals" / "p6.png") as tile:
            tile.save(library / "p6-q70.jpg", quality=70)
        cli("index", library, "--model", "m1", "--quiet", home=home)
        reader.refresh()  # what the next request does: the new state loads, and is grouped again at once
        assert reader._state is not before
        wait_for(lambda: warmed(reader), "the new state's groups computed in the background")
        report, _ = reader.duplicates()
        assert len(report.groups) == 3
    finally:
        reader.close()
        plain.close()
