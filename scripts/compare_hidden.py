#!/usr/bin/env python
"""Issue 4: hidden sizes of the default autoencoder against ITQ, through the CLI.

For each dataset, hidden size and seed: `semhash train DATASET --hidden H --seed S` (the
rest of the defaults), then `semhash evaluate --json` (query split vs database split), and
ITQ the same way. Models already in --home are reused (resume), so an interrupted run can
be continued. Prints a markdown table and writes docs/benchmarks/hidden_sizes.json.

    python scripts/compare_hidden.py --home WS        # ~25 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def semhash(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "semhash", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"semhash {' '.join(args)} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout) if "--json" in args else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True)
    parser.add_argument("--datasets", nargs="+", default=["mnist-5k", "fashion-mnist"])
    parser.add_argument("--hidden", nargs="+", default=["500,300", "1000,500"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="docs/benchmarks/hidden_sizes.json")
    args = parser.parse_args()
    home = Path(args.home)
    rows = []
    for dataset in args.datasets:
        runs = [("itq", ["--model", "itq"], None)] + [
            (f"autoencoder --hidden {h} --seed {s}", ["--hidden", h, "--seed", str(s)], s) for h in args.hidden for s in args.seeds
        ]
        for label, options, seed in runs:
            name = f"{dataset}-{'-'.join(o.replace(',', 'x').lstrip('-') for o in options)}"
            if not (home / "models" / name / "meta.json").exists():
                print(f"semhash train {dataset} {' '.join(options)} --name {name}", file=sys.stderr, flush=True)
                semhash("train", dataset, *options, "--name", name, "--quiet", "--home", str(home))
            r = semhash("evaluate", "--model", name, "--json", "--home", str(home))["result"]
            meta = json.loads((home / "models" / name / "meta.json").read_text())
            rows.append(
                {
                    "dataset": dataset,
                    "model": label,
                    "name": name,
                    "map": r["map"],
                    "precision_r2": r["precision_r2"],
                    "hit_rate_r2": r["hit_rate_r2"],
                    "bucket_coverage": r["buckets"]["coverage"],
                    "selected_epoch": (meta.get("metrics") or {}).get("selected_epoch"),
                    "train_seconds": meta.get("train_seconds"),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print("| dataset | model | mAP | P@r2 | hit rate r2 | coverage | beats ITQ on both |")
    print("|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        itq = next(r for r in rows if r["dataset"] == dataset and r["model"] == "itq")
        for r in (x for x in rows if x["dataset"] == dataset):
            both = "–" if r is itq else ("yes" if r["map"] > itq["map"] and r["precision_r2"] > itq["precision_r2"] else "no")
            print(
                f"| {dataset} | {r['model']} | {r['map']:.4f} | {r['precision_r2']:.4f} | {r['hit_rate_r2']:.3f} | "
                f"{r['bucket_coverage']:.3f} | {both} |"
            )


if __name__ == "__main__":
    main()
