"""Choose the default coding-layer noise by measurement.

Trains the default autoencoder on mnist-5k's database split for each noise stddev and seed,
then reports constant bits, saturation, and retrieval quality of the query split against the
database split.  Usage:

    python scripts/noise_sweep.py --noise 0 2 4 8 16 --seeds 0 1 --epochs 30 --out docs/benchmarks/noise_sweep.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", type=float, nargs="+", default=[0, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--bits", type=int, default=30)
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--out", default="docs/benchmarks/noise_sweep.json")
    args = parser.parse_args()

    from semhash.data import load_builtin
    from semhash.evaluate import evaluate_codes
    from semhash.models import build_model
    from semhash.models.base import FitContext
    from semhash.train import coding_statistics

    dataset = load_builtin(args.dataset)
    db_x, db_y = dataset.part("database")
    q_x, q_y = dataset.part("query")
    rows = []
    for noise in args.noise:
        for seed in args.seeds:
            started = time.time()
            model = build_model(
                "autoencoder",
                {"input_shape": dataset.image_shape, "bits": args.bits, "noise": noise, "epochs": args.epochs, "seed": seed},
            )
            model.fit(db_x, context=FitContext(verbose=0))
            hasher = model.export_hasher()
            stats = coding_statistics(hasher, db_x)
            result = evaluate_codes(hasher.hash(db_x), db_y, hasher.hash(q_x), q_y, args.bits)
            row = {
                "noise": noise,
                "seed": seed,
                "epochs_run": len(model.history_.get("loss", [])),
                "constant_bits": stats["constant_bits"],
                "saturation": stats["saturation"],
                "distinct_codes": stats["distinct_codes"],
                "map": result["map"],
                "precision_r2": result["precision_r2"],
                "hit_rate_r2": result["hit_rate_r2"],
                "bucket_purity": result["buckets"]["purity"],
                "bucket_coverage": result["buckets"]["coverage"],
                "seconds": round(time.time() - started, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print("\n| noise | constant bits | saturation | mAP | P@r2 | hit rate r2 | bucket purity | coverage |")
    print("|---|---|---|---|---|---|---|---|")
    for noise in args.noise:
        sel = [r for r in rows if r["noise"] == noise]
        med = lambda key: statistics.median(r[key] for r in sel)  # noqa: E731
        print(
            f"| {noise:g} | {med('constant_bits'):g} | {med('saturation'):.3f} | {med('map'):.4f} | "
            f"{med('precision_r2'):.4f} | {med('hit_rate_r2'):.3f} | {med('bucket_purity'):.4f} | {med('bucket_coverage'):.3f} |"
        )
    print(f"(medians over seeds {args.seeds}; wrote {args.out})")


if __name__ == "__main__":
    main()
