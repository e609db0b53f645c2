"""A trained model as the near tier's code (``semhash index --near-model NAME``, issue 22):
indexing, query, duplicates, calibration, the web reader, the lookup over a model's 64 bits,
and the refusals (another near code without --rebuild, a changed model, PDQ codes imported).

The near model here is a TensorFlow-free Hasher (a random projection of 16x16 RGB pixels):
what is tested is the plumbing, which is the same for any model; the ``copy`` kind trained
for real and used this way is in tests/test_copy_model.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from index_fixtures import add_model
from semhash.cli import main
from semhash.index import index_folder
from semhash.index.db import open_index
from semhash.inference import Hasher
from semhash.near_codes import NearScheme, pack_codes
from semhash.workspace import Workspace

NEAR_SHAPE = (16, 16, 3)
NEAR_BITS = 32


def add_near_model(home: Path, name: str = "near", seed: int = 1) -> Hasher:
    """A 32-bit random projection of 16x16 RGB pixels, centred on mid-grey, saved as a model."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(int(np.prod(NEAR_SHAPE)), NEAR_BITS))
    params = {"op1.kernel": kernel, "op1.bias": -(np.full(kernel.shape[0], 0.45) @ kernel)}
    hasher = Hasher(ops=[{"op": "flatten"}, {"op": "dense"}], params=params, n_bits=NEAR_BITS, input_shape=NEAR_SHAPE)
    directory = Path(home) / "models" / name
    directory.mkdir(parents=True, exist_ok=True)
    hasher.save(directory / "hasher.npz")
    meta = {"name": name, "kind": "copy", "bits": NEAR_BITS, "input_shape": list(NEAR_SHAPE), "created_at": "2024-01-01T00:00:09"}
    (directory / "meta.json").write_text(json.dumps(meta))
    return hasher


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "ws"
    add_model(home, "m1", seed=0, n_bits=16)  # the similar tier's model (8x8 grey)
    add_near_model(home)
    return home


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """24 distinct 48x48 RGB pictures (6x6 random colour blocks, seeded) as PNG: a random
    projection tells them apart, which is all the plumbing needs."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(24):
        blocks = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(blocks).resize((48, 48), Image.Resampling.NEAREST).save(folder / f"p{k:02d}.png")
    return folder


def same_pixels_other_bytes(src: Path, dst: Path) -> Path:
    """A copy that is not the same file: the same pixels, saved with other PNG settings."""
    with Image.open(src) as img:
        img.save(dst, compress_level=1, optimize=False)
    assert dst.read_bytes() != src.read_bytes()
    return dst


def run(home: Path, *args: str):
    return CliRunner().invoke(main, [*args, "--home", str(home)])


def index_with_near_model(home: Path, folder: Path, *extra: str):
    result = run(home, "index", str(folder), "--model", "m1", "--near-model", "near", "--quiet", "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# --------------------------------------------------------------------------- indexing
def test_index_stores_the_models_codes_as_the_near_tier(home, photos):
    data = index_with_near_model(home, photos)
    assert data["near_model"] == "near" and data["model"] == "m1" and data["added"] == 24
    ws = Workspace(home)
    with open_index(ws.index_path) as db, db.session() as s:
        meta = db.meta()
        rows = s.connection().exec_driver_sql("SELECT path, near_code, near_variants, near_quality FROM images").fetchall()
    scheme = meta.near_scheme
    assert (scheme.model, scheme.bits, scheme.threshold) == ("near", NEAR_BITS, round(NEAR_BITS * 9 / 64))
    hasher = ws.model("near").load_hasher()
    assert scheme.fingerprint == hasher.fingerprint
    # each row's near code is the model's code of the decoded image, padded: nothing else
    from semhash.data import decode_views
    from semhash.near_codes import model_input

    for path, code, variants, quality in rows:
        assert variants is None and quality is None and len(code) == 32 and bytes(code)[8:] == bytes(24)
        near = decode_views(path, (8, 8, 1)).near
        assert bytes(code) == pack_codes(hasher.hash(model_input(near, NEAR_SHAPE)[None]), NEAR_BITS)[0].tobytes()
    status = run(home, "status")
    assert "near codes: model 'near' (32 bits), default threshold 4" in status.output


def test_a_copy_is_found_in_the_near_tier_by_the_models_code(home, photos, tmp_path):
    index_with_near_model(home, photos)
    copy = same_pixels_other_bytes(photos / "p03.png", tmp_path / "copy.png")
    result = run(home, "query", str(copy), "--tier", "near", "--json")
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.output)
    first = answer["matches"][0]
    assert first["path"].endswith("p03.png") and first["tier"] == "near" and first["distance"] == 0
    # the threshold is in the model's bits: half of them at most
    bad = run(home, "query", str(copy), "--near-threshold", "17")
    assert bad.exit_code != 0 and "0..16 of 32 bits" in bad.output and "Traceback" not in bad.output


def test_duplicates_group_copies_by_the_models_code(home, photos, tmp_path):
    same_pixels_other_bytes(photos / "p05.png", photos / "p05-copy.png")
    index_with_near_model(home, photos)
    result = run(home, "duplicates", "--json")
    assert result.exit_code == 0, result.output
    groups = json.loads(result.output)["groups"]
    paths = [sorted(Path(m["path"]).name for m in [g["keeper"], *g["duplicates"]]) for g in groups]
    assert paths == [["p05-copy.png", "p05.png"]]  # and no other pair: the 24 pictures are distinct
    (group,) = groups
    assert [(m["tier"], m["distance"]) for m in group["duplicates"]] == [("near", 0)]


def test_calibration_uses_the_models_bits(home, photos):
    index_with_near_model(home, photos)
    result = run(home, "duplicates", "--calibrate", "--sample", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["thresholds"] == list(range(1, NEAR_BITS // 3 + 1)) and data["default_threshold"] == 4
    assert data["near_code"] == "model 'near' (32 bits)" and data["sampled"] == 3


def test_the_near_code_is_kept_and_only_changed_by_a_rebuild(home, photos):
    index_with_near_model(home, photos)
    again = run(home, "index", str(photos), "--model", "m1", "--quiet", "--json")  # no --near-model: the index's
    assert again.exit_code == 0 and json.loads(again.output)["unchanged"] == 24 and json.loads(again.output)["near_model"] == "near"
    other = run(home, "index", str(photos), "--model", "m1", "--near-model", "pdq", "--quiet")
    assert other.exit_code != 0 and "near codes come from model 'near' (32 bits), not PDQ (256 bits)" in other.output
    assert "--rebuild" in other.output and "Traceback" not in other.output
    rebuilt = run(home, "index", str(photos), "--model", "m1", "--near-model", "pdq", "--rebuild", "--quiet", "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads(rebuilt.output)["near_model"] == "pdq" and json.loads(rebuilt.output)["added"] == 24
    with open_index(Workspace(home).index_path) as db:
        assert db.meta().near_scheme.is_pdq


def test_a_changed_near_model_is_refused_with_one_line(home, photos, tmp_path):
    index_with_near_model(home, photos)
    add_near_model(home, seed=2)  # retrained under the same name: codes no longer comparable
    copy = same_pixels_other_bytes(photos / "p01.png", tmp_path / "copy.png")
    result = run(home, "query", str(copy))
    assert result.exit_code != 0 and "near model 'near' changed since indexing" in result.output
    assert "Traceback" not in result.output
    more = run(home, "index", str(photos), "--model", "m1", "--quiet")
    assert more.exit_code != 0 and "changed since indexing" in more.output


def test_pdq_codes_are_not_imported_into_an_index_of_model_codes(home, photos, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    index_with_near_model(home, photos)
    parquet = tmp_path / "codes.parquet"
    pq.write_table(pa.table({"path": ["/elsewhere/a.png"], "code": [5], "near_code": [bytes(32)]}), parquet)
    result = run(home, "import", str(parquet), "--model", "m1")
    assert result.exit_code != 0 and "holds PDQ codes" in result.output and "Traceback" not in result.output
    with open_index(Workspace(home).index_path) as db:
        assert db.count() == 24  # nothing imported


def test_the_web_reader_searches_and_groups_with_the_near_model(home, photos, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from semhash.web.app import create_app

    same_pixels_other_bytes(photos / "p07.png", photos / "p07-copy.png")
    index_with_near_model(home, photos)
    ws = Workspace(home)
    with TestClient(create_app(ws.index_path, ws), base_url="http://127.0.0.1") as client:
        status = client.get("/api/status").json()
        assert status["near_code"] == "model 'near' (32 bits)" and status["near_threshold"] == 4
        copy = same_pixels_other_bytes(photos / "p02.png", tmp_path / "upload.png")
        found = client.post("/api/search/upload?tier=near", files=[("files", ("upload.png", copy.read_bytes(), "image/png"))])
        assert found.status_code == 200, found.text
        first = found.json()[0]["matches"][0]
        assert first["path"].endswith("p02.png") and (first["tier"], first["distance"]) == ("near", 0)
        too_far = client.post("/api/search/upload?tier=near&near_threshold=20", files=[("files", ("u.png", copy.read_bytes(), "image/png"))])
        assert too_far.status_code == 422 and "0..16 of 32 bits" in too_far.json()["detail"]
        groups = client.get("/api/duplicates").json()["groups"]
        assert [sorted(Path(m["path"]).name for m in [g["keeper"], *g["duplicates"]]) for g in groups] == [["p07-copy.png", "p07.png"]]


# --------------------------------------------------------------------------- the lookup
@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_the_lookup_over_a_models_bits_is_exact(backend):
    from semhash.index import near_lookup
    from semhash.index.near_lookup import NearLookup, brute_force

    if backend == "c" and near_lookup._kernel is None:
        pytest.skip("the compiled near kernel is not built here")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64)
    flips = rng.integers(0, 64, (300, 6))
    near = base.copy()
    for k in range(3):  # a neighbour 0-3 bits away for every code
        near ^= np.where(rng.random(300) < 0.7, np.uint64(1) << flips[:, k].astype(np.uint64), np.uint64(0))
    codes = pack_codes(np.concatenate([base, near]), 64)
    ids = np.arange(len(codes), dtype=np.int64)
    scheme = NearScheme("m", "f", 64, 7)
    lookup = NearLookup(ids, codes, scheme.layout())
    assert lookup.layout == ((0, 16), (16, 16), (32, 16), (48, 16))
    for threshold in (0, 3, 7, 11, 20):
        got = lookup.search(codes[:50], threshold, backend=backend if threshold // 4 <= 2 else "auto")
        want = brute_force(codes, codes[:50], threshold)
        assert all(np.array_equal(a, b) for a, b in zip(got, want)), threshold
        i, j, d = lookup.pairs(threshold, backend=backend if threshold // 4 <= 2 else "auto")
        q, pos, dist = brute_force(codes, codes, threshold)
        keep = pos > q
        assert sorted(zip(i.tolist(), j.tolist(), d.tolist())) == sorted(zip(q[keep].tolist(), pos[keep].tolist(), dist[keep].tolist()))


def test_the_scheme_round_trips_through_the_record_and_refuses_bad_values():
    scheme = NearScheme("copy-1", "abc", 64, 7)
    assert NearScheme.from_meta(scheme.to_meta()) == scheme and NearScheme.from_meta(None).is_pdq
    assert scheme.check_threshold(None) == 7 and scheme.check_threshold(32) == 32
    with pytest.raises(ValueError, match="0..32 of 64 bits"):
        scheme.check_threshold(33)
    with pytest.raises(ValueError):
        NearScheme.from_meta(json.dumps({"name": "x", "fingerprint": "f", "bits": 200, "threshold": 3}))
    # big-endian in the first 8 bytes: the Hamming distance of the padded codes is the model's
    a, b = pack_codes([0b1011, 0b0001], 4)
    assert np.bitwise_count(a ^ b).sum() == 2 and a[7] == 0b1011 and not a[8:].any()


def test_ray_runs_are_refused_a_near_model_before_anything_is_hashed(home, photos):
    pytest.importorskip("ray")
    from semhash.errors import IndexError_

    ws = Workspace(home)
    with pytest.raises(IndexError_, match="--engine ray hashes near codes with PDQ only"):
        index_folder(photos, ws.model("m1"), ws.index_path, progress=False, engine="ray", near_model=ws.model("near"))
    with open_index(ws.index_path) as db:
        assert db.count() == 0 and not db.meta().bound
