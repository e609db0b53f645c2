#!/usr/bin/env python
"""The model zoo through the CLI, as a user runs it: train each kind/option on mnist-5k,
index the database split's PNGs, answer a radius-2 query, evaluate; one table.

    python scripts/benchmark_zoo.py                       # about 20 minutes on 2 CPU cores (one seed)
    python scripts/benchmark_zoo.py --seeds 0 1 --rows ae,ae-untied

Every row runs `semhash train ... --json`, `semhash index`, `semhash query --radius 2 --json`
and `semhash evaluate --json` in a subprocess against one workspace, then reads the numbers
from their JSON. Writes docs/benchmarks/zoo.json and prints a markdown table (medians over
seeds where several are given).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS: dict[str, list[str]] = {
    "ae": ["--model", "autoencoder"],  # the default: tied weights
    "ae-untied": ["--model", "autoencoder", "--untied"],
    "ae-pretrain-gaussian": ["--model", "autoencoder", "--pretrain", "gaussian"],
    "ae-pretrain-dropout": ["--model", "autoencoder", "--pretrain", "dropout"],
    "ae-untied-pretrain-gaussian": ["--model", "autoencoder", "--untied", "--pretrain", "gaussian"],
    "vae": ["--model", "vae"],
    "vae-conv": ["--model", "vae", "--conv"],
    "classifier-hash": ["--model", "classifier-hash"],
    "classifier-hash-10pct": ["--model", "classifier-hash", "--labeled-fraction", "0.1"],
    "pretrained-classifier-10pct": ["--model", "pretrained-classifier", "--labeled-fraction", "0.1", "--encoder", "{encoder}"],
    "contrastive": ["--model", "contrastive"],
    "pretrained-classifier-10pct-contrastive": [
        "--model", "pretrained-classifier", "--labeled-fraction", "0.1", "--encoder", "{contrastive}",
    ],  # fmt: skip
    "itq": ["--model", "itq"],
}


def semhash(*args: str, home: Path) -> dict | list:
    cmd = [sys.executable, "-m", "semhash", *args, "--home", str(home)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout) if "--json" in args else out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row names")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--bits", type=int, default=30)
    parser.add_argument("--home", default=None, help="workspace [default: a temporary folder]")
    parser.add_argument("--out", default="docs/benchmarks/zoo.json")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --out and run only the missing ones")
    args = parser.parse_args()

    home = Path(args.home or tempfile.mkdtemp(prefix="semhash-zoo-"))
    images = home / "images"
    if not images.exists():
        subprocess.run([sys.executable, "-m", "semhash", "export-dataset", "mnist-5k", str(images), "--part", "database"], check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "semhash", "export-dataset", "mnist-5k", str(home / "queries"), "--part", "query"], check=True, capture_output=True)
    query_image = sorted((home / "queries" / "4").iterdir())[0]
    results = []
    if args.resume and Path(args.out).exists():
        results = [r for r in json.loads(Path(args.out).read_text())["rows"] if "error" not in r and r["row"] in ROWS]
    done = {(r["row"], r["seed"]) for r in results}
    for seed in args.seeds:
        for row in args.rows.split(","):
            if (row, seed) in done:
                continue
            name = f"{row}-s{seed}"
            train_args = [a.replace("{encoder}", f"ae-s{seed}").replace("{contrastive}", f"contrastive-s{seed}") for a in ROWS[row]]
            if row != "itq":
                train_args += ["--seed", str(seed)]
            print(f"[{name}] semhash train mnist-5k {' '.join(train_args)}", file=sys.stderr, flush=True)
            started = time.time()
            try:
                trained = semhash("train", "mnist-5k", *train_args, "--bits", str(args.bits), "--name", name, "--quiet", "--json", home=home)
                wall = time.time() - started
                semhash("index", str(images), "--model", name, "--rebuild", "--quiet", "--json", home=home)
                answer = semhash("query", str(query_image), "--radius", "2", "--json", home=home)
                report = semhash("evaluate", "--model", name, "--json", home=home)
            except RuntimeError as exc:
                print(f"  skipped: {exc}", file=sys.stderr)
                results.append({"row": row, "seed": seed, "error": str(exc)})
                continue
            r = report["result"]
            metrics = trained["meta"].get("metrics") or {}
            matches = answer[0]["matches"]
            results.append(
                {
                    "row": row,
                    "seed": seed,
                    "command": "semhash train mnist-5k " + " ".join(train_args),
                    "map": r["map"],
                    "precision_r2": r["precision_r2"],
                    "hit_rate_r2": r["hit_rate_r2"],
                    "bucket_purity": r["buckets"]["purity"],
                    "bucket_coverage": r["buckets"]["coverage"],
                    "r2_purity": r["purity_r2"],
                    "accuracy": metrics.get("accuracy"),
                    "accuracy_scratch_same_labels": metrics.get("accuracy_scratch_same_labels"),
                    "accuracy_scratch_all_labels": metrics.get("accuracy_scratch_all_labels"),
                    "train_seconds": trained["meta"]["train_seconds"],
                    "wall_seconds": round(wall, 1),
                    "query_matches_r2": len(matches),
                    "query_precision_r2": (sum(m["label"] == "4" for m in matches) / len(matches)) if matches else None,
                }
            )
            print(f"  {json.dumps(results[-1])}", file=sys.stderr, flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"args": vars(args), "rows": results}, indent=2))

    def med(rows, key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    fmt = lambda v, spec=".3f": "–" if v is None else format(v, spec)  # noqa: E731
    print(f"\n| row | seeds | mAP | P@r2 | hit rate r2 | bucket purity | coverage | r2 purity | accuracy | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in args.rows.split(","):
        sel = [r for r in results if r["row"] == row and "error" not in r]
        if not sel:
            print(f"| {row} | | failed | | | | | | | |")
            continue
        print(
            f"| {row} | {','.join(str(r['seed']) for r in sorted(sel, key=lambda r: r['seed']))} | {fmt(med(sel, 'map'))} | {fmt(med(sel, 'precision_r2'))} | {fmt(med(sel, 'hit_rate_r2'))} | "
            f"{fmt(med(sel, 'bucket_purity'))} | {fmt(med(sel, 'bucket_coverage'))} | {fmt(med(sel, 'r2_purity'))} | "
            f"{fmt(med(sel, 'accuracy'))} | {fmt(med(sel, 'train_seconds'), '.0f')} |"
        )
    # Medians are over every seed measured for the row (with --resume, earlier runs' seeds too).
    print(f"(mnist-5k, {args.bits} bits, medians over the seeds listed; wrote {args.out})")


if __name__ == "__main__":
    main()
