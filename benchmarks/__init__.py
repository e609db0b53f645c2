"""semhash's benchmark harness: ``python -m benchmarks <experiment> [options]`` from the
repository root.  Shared helpers live in :mod:`benchmarks.common`; each experiment is one
module with ``add_arguments(parser)`` and ``run(args) -> dict`` registered in
:mod:`benchmarks.__main__`, and writes its JSON into docs/benchmarks/."""
