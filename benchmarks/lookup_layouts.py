"""Which bucket-table layout answers fastest (issue 10's "choose the structure by
measurement"): semhash's lookup built with each given layout over the same codes, timed
at each radius, with the layout the cost model picks ("auto") beside them.

A layout is written as key widths, one per table: "23" is one table keyed on the top 23
bits; "15,15" is two tables over bits 0-14 and 15-29 (multi-index hashing), each keyed on
all of its range.  Queries as in `lookup` (random: indexed codes; clustered: new draws).

    python -m benchmarks lookup-layouts --sizes 1e6,1e7 --layouts auto,23,20,15,15
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from benchmarks import common

DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default="1e6,1e7")
    p.add_argument("--radii", default="1,2,3")
    p.add_argument("--bits", type=int, default=30)
    p.add_argument("--distributions", default="random,clustered")
    p.add_argument("--layouts", default="auto;23;20;15,15;10,10,10",
                   help="';'-separated layouts, each 'auto' or comma-separated key widths")
    p.add_argument("--queries", type=int, default=5000)
    p.add_argument("--max-seconds", type=float, default=3.0)
    p.add_argument("--small-answer", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/lookup_layouts.json)")


def parse_layout(text: str, n_bits: int):
    from semhash.index.lookup import TableLayout, _split_ranges

    widths = [int(x) for x in text.split(",")]
    ranges = _split_ranges(n_bits, len(widths))
    return [TableLayout(start + width - k, k) for (start, width), k in zip(ranges, widths)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    common.single_thread()
    from semhash.index.lookup import HammingLookup

    payload: dict[str, Any] = {"experiment": "lookup-layouts", "machine": common.machine_info(), "rows": []}
    radii = common.parse_ints(args.radii)
    for distribution in args.distributions.split(","):
        for n in common.parse_sizes(args.sizes):
            if distribution == "random":
                codes = common.random_codes(n, args.bits, seed=args.seed)
                queries = codes[np.random.default_rng(args.seed + 7).integers(0, n, args.queries)]
            else:
                codes = common.clustered_codes(n, args.bits, seed=args.seed)
                queries = common.clustered_codes(args.queries, args.bits, seed=args.seed, sample_seed=args.seed + 99)
            ids = np.arange(1, n + 1, dtype=np.int64)
            for spec in args.layouts.split(";"):
                layout = None if spec == "auto" else parse_layout(spec, args.bits)
                with common.Stopwatch() as sw:
                    index = HammingLookup.build(ids, codes, args.bits, layout=layout)
                chosen = "+".join(str(t.k) for t in index.layout)
                for r in radii:
                    sizes = index.search(queries, r).counts()
                    for group, which in ((f"<= {args.small_answer}", sizes <= args.small_answer),
                                         (f"> {args.small_answer}", sizes > args.small_answer)):
                        qs = queries[which]
                        if len(qs) == 0:
                            continue
                        timing = common.timed_batches(lambda a, b: index.search(qs[a:b], r), len(qs),
                                                      batch=1000, max_seconds=args.max_seconds)
                        plan = index.plan(r)
                        row = {
                            "distribution": distribution, "n": n, "layout": spec, "keys": chosen, "radius": r,
                            "answers": group, "plan": f"{plan.method} tables {plan.tables} t {plan.thresholds}",
                            "queries_per_s": timing.per_second, "queries_per_cpu_s": timing.per_cpu_second,
                            "mean_answer": float(sizes[which].mean()), "queries": timing.items,
                            "build_s": sw.seconds, "build_cpu_s": sw.cpu_seconds,
                            "bytes_per_code": index.bytes_per_code,
                        }  # fmt: skip
                        payload["rows"].append(row)
                        common.log(f"[layouts] {distribution} N={n:,} {spec:>10} ({chosen}) r={r} {group}: "
                                   f"{timing.per_cpu_second:10,.0f} q/cpu-s {timing.per_second:10,.0f} q/s")
                del index
            payload["machine"]["load_average_end"] = common.load_average()
            path = common.write_json("lookup_layouts", payload, args.out)
    columns = ["distribution", "n", "layout", "keys", "radius", "answers", "queries_per_cpu_s", "queries_per_s",
               "mean_answer", "build_cpu_s", "bytes_per_code"]  # fmt: skip
    print(common.table(payload["rows"], columns))
    common.log(f"[layouts] wrote {path}")
    return payload
