"""The issue-10 integration and indexing experiments and issue 23's photos experiment of the
benchmark harness, run end to end at tiny sizes (the real runs are by hand: see
docs/BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package at the repo root

from benchmarks import bulk_load, indexing, integration, photos  # noqa: E402


def _args(module, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_integration_at_two_tiny_sizes(tmp_path):
    out = tmp_path / "integration.json"
    payload = integration.run(_args(integration, "--sizes", "300,2000", "--cold-runs", "2", "--status-runs", "1",
                                    "--work", str(tmp_path / "work"), "--out", str(out)))  # fmt: skip
    assert json.loads(out.read_text())["rows"] == payload["rows"]
    small, large = payload["rows"]
    assert (small["n"], large["n"]) == (300, 2000)
    assert small["status_count"] == 300 and large["status_count"] == 2000 and large["lookup_current"] is True
    assert large["cold_query_mean_total"] >= 1  # each query is an indexed code: it finds itself
    assert large["import_rows_per_s"] > 0 and large["cold_query_median_s"] > 0
    assert large["append_rows"] == 200 and large["append_rows_per_s"] > 0 and large["import_peak_mb"] > 0
    assert any("cold ratio" in k for k in payload["checks"])
    assert not list((tmp_path / "work").glob("index-*"))  # indexes are removed unless --keep


def test_indexing_one_and_two_processes(tmp_path):
    out = tmp_path / "indexing.json"
    payload = indexing.run(_args(indexing, "--n", "40", "--batch-size", "8", "--images", str(tmp_path / "png"),
                                 "--work", str(tmp_path / "work"), "--out", str(out)))  # fmt: skip
    rows = payload["rows"]
    assert [r["workers"] for r in rows] == [1, 2] and all(r["images"] == 40 and r["skipped"] == 0 for r in rows)
    assert rows[0]["pool_cpu_s"] == 0 and rows[1]["pool_cpu_s"] > 0  # the second run really used a pool
    assert payload["images"]["n"] == 40 and payload["images"]["reused"] is False
    again = indexing.run(_args(indexing, "--n", "40", "--workers", "1", "--images", str(tmp_path / "png"),
                               "--work", str(tmp_path / "work"), "--out", str(out)))  # fmt: skip
    assert again["images"]["reused"] is True


def test_bulk_load_variants_store_every_row(tmp_path):
    out = tmp_path / "bulk_load.json"
    payload = bulk_load.run(_args(bulk_load, "--rows", "3000", "--work", str(tmp_path), "--out", str(out)))
    assert [r["variant"] for r in payload["rows"]] == list(bulk_load.VARIANTS)
    assert {r["page_size"] for r in payload["rows"]} == {4096, 16384}
    assert all(r["rows"] == r["stored"] == r["last_id"] == 3000 and r["rows_per_s"] > 0 for r in payload["rows"])
    assert payload["driver_overhead"]["us_per_row"] > 0 and json.loads(out.read_text())["rows"] == payload["rows"]
    assert list(tmp_path.glob("*.sqlite")) == []


def test_photos_per_format_index_runs_and_watch_latency(tmp_path):
    out = tmp_path / "photos.json"
    payload = photos.run(_args(photos, "--n", "jpeg=2,png=1", "--repeat", "1", "--watch-files", "2",
                               "--files", str(tmp_path / "files"), "--work", str(tmp_path / "work"), "--out", str(out)))  # fmt: skip
    assert json.loads(out.read_text())["decode"] == json.loads(json.dumps(payload["decode"]))
    jpeg, png = payload["decode"]
    assert (jpeg["format"], jpeg["files"], png["format"], png["size"]) == ("jpeg", 2, "png", "2000x1500")
    assert 0 < jpeg["floor_ms"] <= jpeg["floor_pillow_ms"] and jpeg["end_to_end_ms"] > 0 and jpeg["end_to_end_vs_floor"] > 0
    assert [(r["format"], r["workers"], r["files"]) for r in payload["index"]] == [("jpeg", 1, 2), ("jpeg", 2, 2), ("png", 1, 1), ("png", 2, 1)]
    assert all(r["photos_per_s"] > 0 and r["rss_mb"] > 0 for r in payload["index"])
    watch = payload["watch"]
    assert watch["files"] == 2 and watch["median_ms"] > 0 and watch["exit_status_on_sigterm"] == 0
