"""`semhash import` (Parquet of precomputed codes -> the index) and `semhash query --code /
--codes-from` (issue 10): real Parquet files, real SQLite, the CLI through CliRunner.  Every
bad file or row is one line naming it, and leaves the index byte-for-byte as it was."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works with or without tests/__init__.py

from index_fixtures import add_model, write_digit_folder  # noqa: E402

from semhash.errors import IndexError_  # noqa: E402
from semhash.hashing import code_to_str  # noqa: E402
from semhash.index import index_info, open_index, path_key, search_codes  # noqa: E402
from semhash.index.importer import ImportFileError, import_parquet  # noqa: E402
from semhash.workspace import Workspace  # noqa: E402

ONE_LINE = re.compile(r"^Error: [^\n]+\n$")
N_BITS = 16


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "ws"
    add_model(home, "m1", seed=0, n_bits=N_BITS)
    add_model(home, "other", seed=1, n_bits=N_BITS)
    return home


@pytest.fixture
def index_path(home: Path) -> Path:
    return Workspace(home).index_path


def write_parquet(path: Path, columns: dict, schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def good_columns(n: int = 200, seed: int = 0, prefix: str = "/data") -> dict:
    rng = np.random.default_rng(seed)
    return {
        "path": [f"{prefix}/{i % 3}/img-{i:05d}.png" for i in range(n)],
        "code": rng.integers(0, 1 << N_BITS, n, dtype=np.uint64),
        "label": [str(i % 3) for i in range(n)],
        "content_hash": [f"{i:064x}" for i in range(n)],
        "size": np.arange(n, dtype=np.int64) + 100,
        "mtime": np.arange(n, dtype=np.float64) + 0.25,
    }


def stored_rows(index_path: Path) -> dict[str, tuple]:
    with open_index(index_path) as db, db.session() as s:
        raw = s.connection().exec_driver_sql("SELECT path, label, code, content_hash, size, mtime FROM images")
        return {r[0]: tuple(r[1:]) for r in raw}


def digest(path: Path) -> str:
    """The index as it is: file bytes after a checkpoint, so WAL content is included."""
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- good files
def test_the_readmes_parquet_example_imports_as_shown(tmp_path, home, cli, monkeypatch):
    """The pyarrow snippet in README.md, run as written, makes a file `semhash import` takes."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = re.search(r"A Parquet file of codes computed elsewhere.*?```python\n(.*?)```", readme, re.S).group(1)
    add_model(home, "ae30", n_bits=30)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "README.md", "exec"), {})
    data = json.loads(cli("import", "codes.parquet", "--model", "ae30", "--json", home=home).stdout)
    assert (data["rows"], data["added"]) == (2, 2)
    found = json.loads(cli("query", "--code", "123456789", "--radius", "0", "--json", home=home).stdout)
    assert [(m["path"], m["label"]) for m in found[0]["matches"]] == [("/photos/dog.jpg", "dogs")]


def test_the_progress_bar_counts_small_imports_in_whole_rows(tmp_path, home, cli):
    source = write_parquet(tmp_path / "three.parquet", good_columns(3))
    bar = cli("import", source, "--model", "m1", home=home).stderr
    assert "importing" in bar and "3/3" in bar and "3.00" not in bar, bar


def test_import_then_query_by_code(tmp_path, home, index_path, cli):
    columns = good_columns()
    source = write_parquet(tmp_path / "codes.parquet", columns)
    result = cli("import", source, "--model", "m1", "--json", home=home)
    data = json.loads(result.stdout)
    assert (data["rows"], data["added"], data["updated"], data["total"]) == (200, 200, 0, 200)
    assert data["lookup"] == str(index_path.with_suffix(".lookup")) and Path(data["lookup"]).is_file()
    rows = stored_rows(index_path)
    first = columns["path"][7]
    assert rows[first] == ("1", int(columns["code"][7]), f"{7:064x}", 107, 7.25)
    info = index_info(index_path)
    assert info["model"] == "m1" and info["bits"] == N_BITS and info["count"] == 200 and info["lookup_current"]

    code = int(columns["code"][7])
    by_int = json.loads(cli("query", "--code", str(code), "--radius", "0", "--json", home=home).stdout)
    bits = code_to_str(code, N_BITS)
    by_bits = json.loads(cli("query", "--code", bits, "--radius", "0", "--json", home=home).stdout)
    assert by_int[0]["query"] == str(code) and by_bits[0]["query"] == bits
    assert by_int[0]["matches"] == by_bits[0]["matches"] and by_int[0]["bits"] == bits
    expected = sorted(p for p, c in zip(columns["path"], columns["code"]) if int(c) == code)
    assert [m["path"] for m in by_int[0]["matches"]] == expected and by_int[0]["total"] == len(expected)
    text = cli("query", "--code", str(code), "--radius", "5", "--limit", "1", home=home).stdout
    assert text.startswith(f"query {code}  code {bits}") and "1 of " in text
    assert "note" not in by_int[0] and "note" not in by_bits[0]

    # 0/1 digits that are not N_BITS long: the integer, and a note on stderr saying so
    short = cli("query", "--code", "0101", "--radius", "0", "--json", home=home)
    assert json.loads(short.stdout)[0]["code"] == 101
    assert "note: --code '0101': code '0101' read as the integer 101" in short.stderr
    assert f"exactly {N_BITS} characters" in json.loads(short.stdout)[0]["note"]


def test_reimport_upserts_keeps_labels_and_a_folder_of_files(tmp_path, home, index_path, cli):
    columns = good_columns(100)
    write_parquet(tmp_path / "in" / "a.parquet", columns)
    later = dict(good_columns(100, seed=5))
    later["path"] = columns["path"][50:] + [f"/data/new/img-{i}.png" for i in range(50)]
    later["label"] = ["relabelled"] * 100
    write_parquet(tmp_path / "in" / "sub" / "b.parquet", later)
    write_parquet(tmp_path / "in" / ".hidden" / "c.parquet", {"nothing": [1]})  # hidden: left out
    summary = import_parquet(index_path, [tmp_path / "in"], Workspace(home).model("m1"))
    assert [f.name for f in summary.files] == ["a.parquet", "b.parquet"]
    assert (summary.rows, summary.added, summary.updated, summary.total) == (200, 150, 50, 150)
    rows = stored_rows(index_path)
    kept = columns["path"][60]
    assert rows[kept][0] == columns["label"][60]  # first imported keeps its label ...
    assert rows[kept][1] == int(later["code"][10])  # ... and takes the later code
    assert rows["/data/new/img-3.png"][0] == "relabelled"
    again = import_parquet(index_path, [tmp_path / "in" / "a.parquet"], Workspace(home).model("m1"))
    assert (again.added, again.updated, again.total) == (0, 100, 150)


def test_path_bytes_and_label_bytes_are_preferred_and_keyed(tmp_path, home, index_path):
    raw = [b"/data/caf\xe9/x.png", "/data/déjà/y.png".encode(), b"/data/back\\slash/z.png"]
    columns = {
        "path": ["ignored-1", "ignored-2", "ignored-3"],
        "path_bytes": raw,
        "code": np.array([1, 2, 3], dtype=np.uint64),
        "label": ["ignored", "ignored", "ignored"],
        "label_bytes": [b"caf\xe9", "déjà".encode(), None],
    }
    schema = pa.schema([("path", pa.string()), ("path_bytes", pa.binary()), ("code", pa.uint64()),
                        ("label", pa.string()), ("label_bytes", pa.binary())])  # fmt: skip
    source = write_parquet(tmp_path / "odd.parquet", columns, schema)
    import_parquet(index_path, [source], Workspace(home).model("m1"))
    rows = stored_rows(index_path)
    assert sorted(rows) == sorted(path_key(p) for p in raw)
    assert rows["/data/caf\\xe9/x.png"][0] == "caf\\xe9" and rows["/data/déjà/y.png"][0] == "déjà"
    assert rows["/data/back\\\\slash/z.png"][0] is None  # a backslash is doubled, as in every key
    found = search_codes(index_path, [1], 0)[0]
    assert [m.path for m in found] == ["/data/caf\\xe9/x.png"]


def test_a_string_path_with_a_backslash_is_keyed_like_the_indexer_keys_it(tmp_path, home, index_path):
    source = write_parquet(tmp_path / "a.parquet", {"path": ["/data/a\\b.png"], "code": np.array([5], np.int64)})
    import_parquet(index_path, [source], Workspace(home).model("m1"))
    assert list(stored_rows(index_path)) == [path_key("/data/a\\b.png")] == ["/data/a\\\\b.png"]


def test_codes_from_a_file(tmp_path, home, index_path, cli):
    columns = good_columns()
    cli("import", write_parquet(tmp_path / "codes.parquet", columns), "--model", "m1", "--quiet", home=home)
    codes = [int(c) for c in columns["code"][:3]]
    listing = tmp_path / "queries.txt"
    listing.write_text(f"# three codes\n{codes[0]}\n\n{code_to_str(codes[1], N_BITS)}\n  {codes[2]}  \n")
    data = json.loads(cli("query", "--codes-from", listing, "--radius", "1", "--json", home=home).stdout)
    assert [d["query"] for d in data] == [str(codes[0]), code_to_str(codes[1], N_BITS), str(codes[2])]
    assert all(d["code"] == c and d["radius"] == 1 for d, c in zip(data, codes))
    for d, c in zip(data, codes):
        found = search_codes(index_path, [c], 1)[0]
        assert [m["path"] for m in d["matches"]] == [m.path for m in found] and found


@pytest.mark.parametrize(
    "content, where, cause",
    [
        ("12\n99999999\n", ":2:", "bits set above"),
        ("12\n\n01x1\n", ":3:", "give 16 bits"),
        ("12\n-4\n", ":2:", "give 16 bits"),
        (b"12\n\xff\xfe\n", ":2:", "not a code"),
        ("# nothing\n\n", "", "no codes in the file"),
    ],
)
def test_a_bad_codes_file_line_is_named(tmp_path, home, index_path, cli, content, where, cause):
    cli("import", write_parquet(tmp_path / "codes.parquet", good_columns()), "--model", "m1", "--quiet", home=home)
    listing = tmp_path / "queries.txt"
    listing.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = cli("query", "--codes-from", listing, home=home, ok=False)
    assert result.exit_code == 1 and ONE_LINE.match(result.output), result.output
    assert f"{listing}{where}" in result.output and cause in result.output


def test_query_by_code_usage_errors(tmp_path, home, index_path, cli):
    cli("import", write_parquet(tmp_path / "codes.parquet", good_columns()), "--model", "m1", "--quiet", home=home)
    bad = cli("query", "--code", "12x", home=home, ok=False)
    assert bad.exit_code == 1 and ONE_LINE.match(bad.output) and "--code '12x'" in bad.output
    both = cli("query", str(tmp_path / "img.png"), "--code", "1", home=home, ok=False)
    assert both.exit_code == 2 and "not both" in both.output
    none = cli("query", home=home, ok=False)
    assert none.exit_code == 2 and "--code" in none.output
    show = cli("query", "--code", "1", "--show", str(tmp_path / "x.png"), home=home, ok=False)
    assert show.exit_code == 2 and "--show" in show.output
    missing = cli("query", "--codes-from", str(tmp_path / "nope.txt"), home=home, ok=False)
    assert missing.exit_code == 1 and "nope.txt: cannot read" in missing.output


# --------------------------------------------------------------------------- bad input
def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = good_columns(20)
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, columns: dict | None, message: str, schema=None, raw: bytes | None = None) -> None:
        path = tmp_path / "bad" / f"{name}.parquet"
        if raw is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
        else:
            write_parquet(path, columns, schema)
        cases[name] = (path, message)

    case("not-parquet", None, "not a readable Parquet file", raw=b"PAR1 but not really")
    case("no-code", {"path": good["path"]}, "no 'code' column")
    case("no-path", {"code": good["code"]}, "no 'path' column")
    case("code-as-text", {**good, "code": [str(c) for c in good["code"]]}, "column 'code' is string, not integer")
    case("size-as-float", {**good, "size": np.full(20, 1.5)}, "column 'size' is double, not integer")
    wide = good["code"].copy()
    wide[13] = 1 << N_BITS
    case("too-wide", {**good, "code": wide}, f"row 14: code {1 << N_BITS} is wider than the model's {N_BITS} bits")
    negative = good["code"].astype(np.int64)
    negative[4] = -3
    case("negative", {**good, "code": negative}, "row 5: code -3 is negative")
    null_code = pa.array([int(c) if i != 8 else None for i, c in enumerate(good["code"])], pa.uint64())
    case("null-code", {**good, "code": null_code}, "row 9: no code")
    case("null-path", {**good, "path": [p if i != 2 else None for i, p in enumerate(good["path"])]}, "row 3: no path")
    case("relative", {**good, "path": [p if i != 6 else "rel/x.png" for i, p in enumerate(good["path"])]},
         "row 7: path 'rel/x.png' is not absolute")  # fmt: skip
    case("empty-path", {**good, "path": [p if i != 0 else "" for i, p in enumerate(good["path"])]}, "row 1: empty path")
    # issue 19, item 7: a NUL byte cut the path short and overwrote another row's code
    nul = [p if i != 10 else good["path"][3] + "\x00tail" for i, p in enumerate(good["path"])]
    case("nul-path", {**good, "path": nul}, "row 11: the path contains a NUL byte")
    nul_bytes = pa.array([p.encode() if i != 4 else b"/data/a\x00b.png" for i, p in enumerate(good["path"])], pa.binary())
    case("nul-path-bytes", {"path_bytes": nul_bytes, "code": good["code"]}, "row 5: the path contains a NUL byte")
    case("nul-label", {**good, "label": [x if i != 7 else "ca\x00t" for i, x in enumerate(good["label"])]},
         "row 8: the label contains a NUL byte")  # fmt: skip
    for name, value in (("nan-mtime", float("nan")), ("inf-mtime", float("inf"))):
        mtime = good["mtime"].copy()
        mtime[12] = value
        case(name, {**good, "mtime": mtime}, f"row 13: mtime {value} is not a number of seconds")
    return cases


def test_every_bad_file_is_one_line_and_leaves_the_index_as_it_was(tmp_path, home, index_path, cli):
    first = write_parquet(tmp_path / "first.parquet", good_columns(50, prefix="/first"))
    cli("import", first, "--model", "m1", "--quiet", home=home)
    before, rows_before = digest(index_path), stored_rows(index_path)
    lookup_before = index_path.with_suffix(".lookup").read_bytes()
    good_second = write_parquet(tmp_path / "second.parquet", good_columns(30, seed=3, prefix="/second"))
    for name, (bad, message) in _bad_files(tmp_path).items():
        # a good file first, the bad one after it: nothing of either is written
        result = cli("import", good_second, bad, "--model", "m1", "--quiet", home=home, ok=False)
        assert result.exit_code == 1, (name, result.output)
        assert ONE_LINE.match(result.output), (name, result.output)
        assert str(bad) in result.output and message in result.output, (name, result.output)
        assert digest(index_path) == before and stored_rows(index_path) == rows_before, name
    assert index_path.with_suffix(".lookup").read_bytes() == lookup_before


@pytest.mark.parametrize("name", ["nul-path", "nul-path-bytes", "nan-mtime"])
def test_a_bad_row_into_a_new_index_is_named_and_leaves_no_index(tmp_path, home, index_path, name):
    bad, message = _bad_files(tmp_path)[name]
    with pytest.raises(ImportFileError, match=re.escape(message)):
        import_parquet(index_path, [bad], Workspace(home).model("m1"))
    assert not index_path.exists()


@pytest.mark.parametrize("layout", ["large_string", "string_view", "dictionary"])
def test_every_arrow_string_layout_imports_the_same_rows(tmp_path, home, layout):
    """Parquet writers differ in how they lay out text: large_string (Polars), string_view
    (newer Arrow), dictionary-encoded (pandas categoricals): all import as plain strings."""
    columns = good_columns(40)
    plain = write_parquet(tmp_path / "plain.parquet", columns)
    kind = {"large_string": pa.large_string(), "string_view": pa.string_view(),
            "dictionary": pa.dictionary(pa.int32(), pa.string())}[layout]  # fmt: skip
    table = pa.table({**columns, "code": pa.array(columns["code"], pa.uint64())})
    for name in ("path", "label", "content_hash"):
        column = pa.array(columns[name], pa.string())
        table = table.set_column(table.schema.get_field_index(name), name,
                                 column.dictionary_encode() if layout == "dictionary" else column.cast(kind))
    other = tmp_path / f"{layout}.parquet"
    pq.write_table(table, other)
    assert pq.read_schema(other).field("path").type != pa.string()
    index_a, index_b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    import_parquet(index_a, [plain], Workspace(home).model("m1"))
    import_parquet(index_b, [other], Workspace(home).model("m1"))
    assert stored_rows(index_a) == stored_rows(index_b)


def test_a_bad_import_into_a_new_index_leaves_no_index(tmp_path, home, index_path):
    bad, message = _bad_files(tmp_path)["too-wide"]
    with pytest.raises(ImportFileError, match=message):
        import_parquet(index_path, [bad], Workspace(home).model("m1"))
    assert not index_path.exists() and not Path(f"{index_path}-wal").exists()


def test_another_models_index_and_missing_sources_are_refused(tmp_path, home, index_path, cli):
    source = write_parquet(tmp_path / "codes.parquet", good_columns())
    cli("import", source, "--model", "m1", "--quiet", home=home)
    before = digest(index_path)
    other = cli("import", source, "--model", "other", "--quiet", home=home, ok=False)
    assert other.exit_code == 1 and ONE_LINE.match(other.output) and "not model 'other'" in other.output
    missing = cli("import", tmp_path / "nowhere.parquet", "--model", "m1", home=home, ok=False)
    assert missing.exit_code == 1 and "nowhere.parquet: no such file or folder" in missing.output
    (tmp_path / "empty").mkdir()
    empty = cli("import", tmp_path / "empty", "--model", "m1", home=home, ok=False)
    assert empty.exit_code == 1 and "no .parquet files" in empty.output
    assert digest(index_path) == before


def test_import_a_ray_engine_shard(tmp_path, home, index_path):
    """The shard schema the Ray engine writes (index/ray_engine.py) imports as it is."""
    from semhash.index.ray_engine import shard_schema

    raw = [b"/data/0/a.png", b"/data/caf\xe9/b.png"]
    table = pa.table(
        {"path": [path_key(r) for r in raw], "path_bytes": raw,
         "code": np.array([3, 4], np.uint64), "label": ["0", "d\\xe9j\\xe0"], "label_bytes": [b"0", b"d\xe9j\xe0"],
         "content_hash": ["a" * 64, "b" * 64],
         "size": np.array([10, 20], np.int64), "mtime": np.array([1.5, 2.5]),
         "near_code": [bytes(range(32)), None], "near_variants": [bytes(range(32, 256)), None], "near_quality": [90, None], "width": [640, None], "height": [480, None],
         "taken_at": [1.6e9, None], "camera": ["Apple iPhone 12", None], "format": ["HEIF", "PNG"]},
        schema=shard_schema(),
    )  # fmt: skip
    pq.write_table(table, tmp_path / "codes-00000.parquet")
    warnings: list[str] = []
    summary = import_parquet(index_path, [tmp_path], Workspace(home).model("m1"), on_warning=warnings.append)
    assert summary.added == 2 and warnings == []
    assert stored_rows(index_path)["/data/caf\\xe9/b.png"] == ("d\\xe9j\\xe0", 4, "b" * 64, 20, 2.5)
    con = sqlite3.connect(index_path)
    near = con.execute("SELECT path, near_code, near_variants, near_quality, width, height, taken_at, camera, format "
                       "FROM images ORDER BY path").fetchall()
    con.close()
    assert near == [("/data/0/a.png", bytes(range(32)), bytes(range(32, 256)), 90, 640, 480, 1.6e9, "Apple iPhone 12", "HEIF"),
                    ("/data/caf\\xe9/b.png", None, None, None, None, None, None, None, "PNG")]


def test_import_and_query_by_code_never_import_tensorflow_or_faiss(tmp_path, home, index_path):
    source = write_parquet(tmp_path / "codes.parquet", good_columns())
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "faiss", "ray", "fastapi"):
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
from click.testing import CliRunner
from semhash.cli import main
home = {str(home)!r}
for args in (["import", {str(source)!r}, "--model", "m1"], ["query", "--code", "7"], ["status"]):
    r = CliRunner().invoke(main, args + ["--home", home])
    assert r.exit_code == 0, (args, r.output, r.exception)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    assert out.returncode == 0 and "ok" in out.stdout, out.stdout + out.stderr


def test_import_then_index_the_same_folder_rehashes_changed_files(tmp_path, home, index_path, cli):
    """Imported rows are ordinary rows: `semhash index` over their folder sees size/mtime
    differ (none were given) and rehashes them in place, keeping one row per file."""
    folder = tmp_path / "imgs"
    write_digit_folder(folder, per_class=2, classes=(0, 1))
    files = sorted(folder.rglob("*.png"))
    source = write_parquet(tmp_path / "codes.parquet", {
        "path": [str(p.resolve()) for p in files], "code": np.zeros(len(files), np.uint64),
        "label": [p.parent.name for p in files]})  # fmt: skip
    cli("import", source, "--model", "m1", "--quiet", home=home)
    data = json.loads(cli("index", folder, "--model", "m1", "--quiet", "--json", home=home).stdout)
    assert (data["added"], data["updated"], data["total"]) == (0, len(files), len(files))


def test_every_value_round_trips_exactly(tmp_path, home, index_path):
    """Rows are staged as JSON: integers up to 64 bits, the doubles file systems give as
    mtimes, any text come back as they were written (the 64-bit model's codes, too).
    (SQLite 3.40's JSON parser is not correctly rounded for every double: a random bit
    pattern such as -5.27e-154 can come back one unit in the last place off.)"""
    add_model(home, "wide", seed=2, n_bits=64)
    rng = np.random.default_rng(7)
    n = 3000
    mtimes = np.concatenate([rng.uniform(1e9, 2e9, n // 3), rng.standard_normal(n // 3) * 1e6,
                             rng.uniform(0, 4e9, n - 2 * (n // 3)).round(6)])  # fmt: skip
    codes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    codes[:3] = [0, 2**63, 2**64 - 1]
    columns = {
        "path": [f"/data/\u00e9\u4e2d\U0001f600 \"q\" {i}.png" for i in range(n)],
        "code": codes,
        "content_hash": [f"{i:064x}" for i in range(n)],
        "size": rng.integers(0, 2**62, n, dtype=np.int64),
        "mtime": mtimes,
    }
    source = write_parquet(tmp_path / "exact.parquet", columns)
    import_parquet(index_path, [source], Workspace(home).model("wide"))
    rows = stored_rows(index_path)
    for i in range(n):
        label, code, content_hash, size, mtime = rows[columns["path"][i]]
        assert (code % 2**64, content_hash, size, mtime) == (int(codes[i]), columns["content_hash"][i],
                                                              int(columns["size"][i]), float(mtimes[i]))  # fmt: skip


# --------------------------------------------------------------------------- the bulk load
def _record(index_path: Path) -> list[tuple]:
    with open_index(index_path) as db, db.session() as s:
        sql = "SELECT id, path, label, code, content_hash, size, mtime, indexed_at FROM images ORDER BY id"
        return [tuple(r) for r in s.connection().exec_driver_sql(sql)]


def _record_figures(index_path: Path) -> dict:
    """status's figures recomputed from the rows (not from the lookup header); the record
    keeps naive UTC times, status shows them with their offset."""
    import sqlite3
    from datetime import datetime, timezone

    con = sqlite3.connect(index_path)
    count, labels, last = con.execute("SELECT count(*), count(DISTINCT label), max(indexed_at) FROM images").fetchone()
    con.close()
    last = datetime.fromisoformat(last).replace(tzinfo=timezone.utc).isoformat()
    return {"count": count, "labels": labels, "last_indexed_at": last}


def _unsorted_files_with_repeats(folder: Path) -> list[Path]:
    """Paths out of order, repeated within a file and across files (with other labels, a
    missing label first, other codes), and files that give different optional columns."""
    rng = np.random.default_rng(11)
    n = 300
    order = rng.permutation(n)
    a = {
        "path": [f"/data/{i % 7}/img-{i}.png" for i in order],
        "code": rng.integers(0, 1 << N_BITS, n, dtype=np.uint64),
        "label": [None if i % 5 == 0 else f"a{i % 3}" for i in order],
        "mtime": rng.uniform(1e9, 2e9, n),
    }
    a["path"][10] = a["path"][20]  # a repeat inside one file
    b = {  # half of a's paths again, and new ones; other labels; hashes and sizes instead of mtimes
        "path": a["path"][::2] + [f"/data/new/{i}.png" for i in range(50)],
        "code": rng.integers(0, 1 << N_BITS, n // 2 + 50, dtype=np.uint64),
        "label": ["b"] * (n // 2 + 50),
        "content_hash": [f"{i:064x}" for i in range(n // 2 + 50)],
        "size": rng.integers(0, 10**9, n // 2 + 50),
    }
    return [write_parquet(folder / "a.parquet", a), write_parquet(folder / "b.parquet", b)]


def test_a_new_index_and_an_existing_one_get_the_same_rows(tmp_path, home, monkeypatch):
    """The bulk load into a new file and the staged upsert store identical rows (ids,
    repeats resolved the same way: last code, first label) and answer identically."""
    from semhash.index import importer

    files = _unsorted_files_with_repeats(tmp_path / "in")
    model = Workspace(home).model("m1")
    bulk_index, staged_index = tmp_path / "bulk.sqlite", tmp_path / "staged.sqlite"
    bulk = import_parquet(bulk_index, files, model)
    monkeypatch.setattr(importer, "NEW_FILE_MEMORY_SHARE", 0.0)  # too large for memory: staged
    staged = import_parquet(staged_index, files, model)
    assert (bulk.rows, bulk.added, bulk.updated, bulk.total) == (staged.rows, staged.added, staged.updated, staged.total)
    assert (bulk.rows, bulk.total) == (500, 349)
    got, want = _record(bulk_index), _record(staged_index)
    assert [r[:7] for r in got] == [r[:7] for r in want]  # indexed_at: each import's own time
    assert [r[0] for r in got] == list(range(1, 350)) and [r[1] for r in got] == sorted(r[1] for r in got)
    first_label = {}
    for f in files:  # the first label a path was given, the last code
        t = pq.read_table(f).to_pydict()
        for p, lab in zip(t["path"], t["label"]):
            first_label.setdefault(p, lab)
    assert {r[1]: r[2] for r in got} == first_label
    queries = np.random.default_rng(3).integers(0, 1 << N_BITS, 40)
    assert search_codes(bulk_index, queries, 3) == search_codes(staged_index, queries, 3)
    info = index_info(bulk_index)
    assert info["lookup_current"] and {k: info[k] for k in ("count", "labels", "last_indexed_at")} == _record_figures(bulk_index)
    # a file like any other index: WAL, the schema's indexes, nothing left beside it
    import sqlite3

    con = sqlite3.connect(bulk_index)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")} == {
        r[0] for r in sqlite3.connect(staged_index).execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "bulk" in p.name) == ["bulk.lookup", "bulk.sqlite"]
    # and it takes further imports as any index does
    again = import_parquet(bulk_index, files[1:], model)
    assert (again.added, again.updated, again.total) == (0, 200, 349)


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_bulk_load_that_fails_half_way_leaves_no_index_and_no_file(tmp_path, home, index_path, monkeypatch, failure):
    from semhash.index import importer

    source = write_parquet(tmp_path / "codes.parquet", good_columns(500))
    monkeypatch.setattr(importer, "BATCH_ROWS", 64)
    real_values, calls = importer._Columns.values, []

    def values(self, name, start, stop):
        calls.append(start)
        if start >= 256:  # four batches are in the file by now
            raise failure
        return real_values(self, name, start, stop)

    monkeypatch.setattr(importer._Columns, "values", values)
    expected = IndexError_ if isinstance(failure, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as caught:
        import_parquet(index_path, [source], Workspace(home).model("m1"))
    if expected is IndexError_:
        assert str(caught.value).startswith(f"{index_path}: ") and "No space left" in str(caught.value)
        assert "importing" not in str(caught.value)  # the index is named, not its hidden build file
    assert max(calls) >= 256
    assert os.listdir(index_path.parent) == []  # no index, no hidden build file


def test_an_abandoned_build_is_removed_and_a_running_ones_kept(tmp_path, home, index_path):
    index_path.parent.mkdir(parents=True, exist_ok=True)
    dead = index_path.with_name(f".{index_path.name}.importing-999999999")  # above Linux's pid_max
    running = index_path.with_name(f".{index_path.name}.importing-{os.getppid()}")
    for f in (dead, Path(f"{dead}-journal"), running):
        f.write_bytes(b"partial")
    import_parquet(index_path, [write_parquet(tmp_path / "c.parquet", good_columns(20))], Workspace(home).model("m1"))
    assert not dead.exists() and not Path(f"{dead}-journal").exists() and running.read_bytes() == b"partial"


def test_an_index_created_during_a_bulk_load_is_left_alone(tmp_path, home, index_path, monkeypatch):
    from semhash.index import importer

    model = Workspace(home).model("m1")
    other = write_parquet(tmp_path / "other.parquet", good_columns(30, prefix="/other"))
    real_write = importer._write_new_file

    def write_then_race(staging, *args, **kwargs):
        generation = real_write(staging, *args, **kwargs)
        monkeypatch.setattr(importer, "_write_new_file", real_write)
        import_parquet(index_path, [other], model)  # another process got there first
        return generation

    monkeypatch.setattr(importer, "_write_new_file", write_then_race)
    with pytest.raises(IndexError_, match="another process created this index during the import"):
        import_parquet(index_path, [write_parquet(tmp_path / "mine.parquet", good_columns(50))], model)
    before = stored_rows(index_path)
    assert sorted(before) == sorted(good_columns(30, prefix="/other")["path"])
    assert sorted(p for p in os.listdir(index_path.parent) if "importing" in p) == []


# --------------------------------------------------------------------------- the lookup after an upsert
def _lookup_pairs(index_path: Path) -> set[tuple[int, int]]:
    from semhash.index import lookup as hamming_lookup

    found = hamming_lookup.HammingLookup.load(index_path.with_suffix(".lookup"))
    ids, codes = found.codes()
    return set(zip(ids.tolist(), codes.tolist()))


def _record_pairs(index_path: Path) -> set[tuple[int, int]]:
    return {(r[0], r[3] % 2**64) for r in _record(index_path)}


def test_an_import_into_an_index_puts_its_rows_into_the_lookup_without_reading_all_back(tmp_path, home, index_path, monkeypatch):
    from semhash.index import search

    model = Workspace(home).model("m1")
    import_parquet(index_path, [write_parquet(tmp_path / "a.parquet", good_columns(400))], model)
    later = good_columns(120, seed=9)  # 60 of a's paths with new codes, 60 new paths, one repeated
    later["path"] = good_columns(400)["path"][::5][:60] + [f"/data/later/{i}.png" for i in range(60)]
    later["path"][-1] = later["path"][-2]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the lookup was rebuilt from every row")

    monkeypatch.setattr(search, "_build_lookup", no_rebuild)
    summary = import_parquet(index_path, [write_parquet(tmp_path / "b.parquet", later)], model)
    monkeypatch.undo()
    assert (summary.added, summary.updated, summary.total) == (59, 61, 459)
    assert index_info(index_path)["lookup_current"]
    assert _lookup_pairs(index_path) == _record_pairs(index_path)
    info = index_info(index_path)
    assert {k: info[k] for k in ("count", "labels", "last_indexed_at")} == _record_figures(index_path)
    queries = np.random.default_rng(5).integers(0, 1 << N_BITS, 30)
    assert search_codes(index_path, queries, 2) == search_codes(index_path, queries, 2, method="sql")


def test_without_the_lookup_before_it_or_with_a_wrong_count_the_lookup_is_rebuilt(tmp_path, home, index_path):
    from semhash.index import search

    model = Workspace(home).model("m1")
    import_parquet(index_path, [write_parquet(tmp_path / "a.parquet", good_columns(300))], model)
    index_path.with_suffix(".lookup").unlink()  # not current before the next import: rebuilt after it
    import_parquet(index_path, [write_parquet(tmp_path / "b.parquet", good_columns(50, seed=4, prefix="/b"))], model)
    assert index_info(index_path)["lookup_current"] and _lookup_pairs(index_path) == _record_pairs(index_path)
    # told of fewer rows than the record holds (a row went meanwhile, in the same generation
    # step): the merge is refused and the record read
    with open_index(index_path) as db:
        meta = db.meta()
        before = search.lookup_key(meta)
    import sqlite3

    def edit(sql: str, steps: int) -> None:
        con = sqlite3.connect(index_path)
        con.execute(sql)
        con.execute(f"UPDATE meta SET value = CAST(value AS INTEGER) + {steps} WHERE key = 'generation'")
        con.commit()
        con.close()

    edit("DELETE FROM images WHERE id = 2", 1)
    with open_index(index_path) as db:
        search.refresh_lookup_after_upsert(db, before, meta.generation + 1, np.array([], np.int64), np.array([], np.int64))
    assert _lookup_pairs(index_path) == _record_pairs(index_path) and 2 not in {i for i, _ in _lookup_pairs(index_path)}
    # another writer in after the import (two generations on): the record is read too
    with open_index(index_path) as db:
        meta = db.meta()
        before = search.lookup_key(meta)
    edit("UPDATE images SET code = 7 WHERE id = 1", 2)
    with open_index(index_path) as db:
        search.refresh_lookup_after_upsert(db, before, meta.generation + 1, np.array([], np.int64), np.array([], np.int64))
    assert _lookup_pairs(index_path) == _record_pairs(index_path) and (1, 7) in _lookup_pairs(index_path)
