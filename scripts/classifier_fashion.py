#!/usr/bin/env python
"""Issue 4: classifier-hash on Fashion-MNIST: what limits its mAP, and the configurations tried.

Trains each configuration through the CLI (`semhash train fashion-mnist --model
classifier-hash ...`, the rest of the defaults; models already in --home are reused), then
decomposes the query split's mAP against the database split (the 60,000 training images):

- database accuracy: the classifier's accuracy on the database images themselves;
- query accuracy: on the 10,000 test images;
- mean AP of the queries the classifier gets right, and of those it gets wrong.

For a classifier-hash, mAP ~ query accuracy x database accuracy + (wrong share) x AP(wrong):
a correctly classified query lands in its class's bucket, whose purity is the database
accuracy.  Writes docs/benchmarks/classifier_fashion.json and prints a markdown table.

    python scripts/classifier_fashion.py --home WS                  # ~20 minutes per configuration on 2 CPU cores
    python scripts/classifier_fashion.py --home WS --configs default
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> the `semhash train` options beyond `fashion-mnist --model classifier-hash`.
# "previous" is the issue-3 network with the defaults of that time, spelled out.
CONFIGS: dict[str, list[str]] = {
    "previous": [
        "--param", "filters=32x64", "--param", "dense_units=128", "--param", "dropout=0.3",
        "--epochs", "20", "--batch-size", "64", "--param", "lr_schedule=constant", "--validation-split", "0.1",
    ],
    "wide-flip": ["--param", "dropout=0.3", "--param", "dense_units=256", "--param", "flip=true"],
    "default": [],
}


def run(*args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "semhash", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"semhash {' '.join(args)} failed: {out.stderr.strip()[-500:]}")


def decompose(home: str, name: str) -> dict:
    import numpy as np

    from semhash.data import load_builtin
    from semhash.generate import load_trained
    from semhash.metrics import average_precisions
    from semhash.workspace import Workspace

    info = Workspace(home).model(name)
    model = load_trained(info)
    dataset = load_builtin("fashion-mnist")
    (db_x, db_y), (q_x, q_y) = dataset.part("database"), dataset.part("query")
    hasher = model.export_hasher()
    db_codes, q_codes = hasher.hash(db_x), hasher.hash(q_x)
    ap = average_precisions(q_codes, q_y, db_codes, db_y, hasher.n_bits)
    right = model.predict(q_x) == q_y
    return {
        "name": name,
        "params": info.meta.get("params"),
        "train_seconds": model.train_seconds_,
        "map": float(np.mean(ap)),
        "database_accuracy": float(np.mean(model.predict(db_x) == db_y)),
        "query_accuracy": float(np.mean(right)),
        "ap_right": float(np.mean(ap[right])),
        "ap_wrong": float(np.mean(ap[~right])),
        "distinct_database_codes": int(len(np.unique(db_codes))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="workspace for the trained models (reused when present)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "classifier_fashion.json"))
    args = parser.parse_args()
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}: choose from {', '.join(CONFIGS)}")
    rows = []
    for name in names:
        model = f"cls-{name}"
        if not (Path(args.home) / "models" / model / "meta.json").exists():
            print(f"[{time.strftime('%H:%M:%S')}] training {model} ...", file=sys.stderr, flush=True)
            run("train", "fashion-mnist", "--home", args.home, "--model", "classifier-hash", "--name", model, *CONFIGS[name])
        row = {"config": name, "options": CONFIGS[name], **decompose(args.home, model)}
        rows.append(row)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: mAP {row['map']:.4f}", file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "rows": rows}, indent=2) + "\n")
    print("| config | mAP | query accuracy | database accuracy | AP (right) | AP (wrong) | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['config']} | {r['map']:.4f} | {r['query_accuracy']:.4f} | {r['database_accuracy']:.4f} | "
            f"{r['ap_right']:.4f} | {r['ap_wrong']:.4f} | {r['train_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
