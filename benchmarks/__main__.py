"""``python -m benchmarks <experiment> [options]``: run one experiment of the harness.

Experiments are registered here by name -> module; each module has ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> dict`` (what it wrote to JSON).  Every module is
imported to build the command line, so an experiment keeps its heavy imports (faiss, the
index, TensorFlow) inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

EXPERIMENTS = {
    "lookup": "benchmarks.lookup",  # radius search at 10^5..10^8 codes (issue 10)
    "lookup-layouts": "benchmarks.lookup_layouts",  # which bucket-table layout (issue 10)
    "decode": "benchmarks.decode",  # peak memory decoding a 12000 x 12000 image (issue 9)
    "serve": "benchmarks.serve",  # semhash serve latency and load (issue 11)
    "indexing": "benchmarks.indexing",  # semhash index images/s with 1 and 2 processes (issue 10)
    "integration": "benchmarks.integration",  # semhash import / status / cold query --code at 10^4..10^7 (issue 10)
    "hashing": "benchmarks.hashing",  # images/s: local path against Ray workers (issue 12)
    "index-storage": "benchmarks.index_storage",  # SQLite against PostgreSQL as the record (issue 12)
    "bulk-load": "benchmarks.bulk_load",  # how semhash import writes a new SQLite index (issue 10)
    "copies": "benchmarks.copies",  # near-duplicate tier against pHash/dHash/PDQ on edited photos (issue 20)
    "review": "benchmarks.review",  # the review page's API at 10^5 groups (issue 21)
    "copy-model": "benchmarks.copy_model",  # the learned copy kind against PDQ on the copies benchmark (issue 22)
    "photos": "benchmarks.photos",  # a photo library's formats: decode floor, semhash index 1/2 workers, --watch latency (issue 23)
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # experiments with their own argument parser (a ``main(argv)``) get the rest of the line
    if argv and argv[0] in EXPERIMENTS:
        module = importlib.import_module(EXPERIMENTS[argv[0]])
        if not hasattr(module, "add_arguments"):
            module.main(argv[1:])
            return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    modules = {}
    for name, module_name in EXPERIMENTS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        if not hasattr(module, "add_arguments"):
            sub.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0], add_help=False)
            continue
        p = sub.add_parser(name, help=module.DESCRIPTION.splitlines()[0], description=module.DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
    args = parser.parse_args(argv)
    modules[args.experiment].run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
