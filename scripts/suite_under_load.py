"""Run the whole test suite several times in a row while other CPU-bound processes compete
for the cores (issue 18: no test may depend on the machine being idle).

    python scripts/suite_under_load.py                 # 3 runs beside 2 busy-loop processes
    python scripts/suite_under_load.py --runs 1 --hogs 4 -- tests/test_web.py

Each hog is ``python -c 'while True: pass'`` (one core each, at normal priority, ended with
the script; bounded by --max-hours in any case).  Every run is ``pytest -q -p no:cacheprovider``
with SEMHASH_CI=1 (PostgreSQL, Ray and Chromium tests fail instead of skipping).  Writes
docs/benchmarks/suite_under_load.json: per run the exit code, the counts pytest printed, the
wall seconds and the 1-minute load average sampled during it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "suite_under_load.json"
HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"


def run_suite(extra: list[str]) -> dict:
    loads: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(5):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra], cwd=ROOT,
                          env={**os.environ, "SEMHASH_CI": "1"}, capture_output=True, text=True)
    seconds = time.time() - started
    done.set()
    sampler.join()
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", tail)}
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {"exit_code": proc.returncode, "counts": counts, "summary": tail, "failed": failed,
            "wall_seconds": round(seconds, 1), "load_average_mean": round(sum(loads) / max(1, len(loads)), 2),
            "load_average_max": round(max(loads, default=0.0), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/suite_under_load.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=2, help="busy-loop processes beside the suite [2]")
    parser.add_argument("--max-hours", type=float, default=3.0, help="the hogs end by themselves after this long [3]")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest (default: the whole suite)")
    args = parser.parse_args(argv)
    hogs = [subprocess.Popen([sys.executable, "-c", HOG.format(seconds=args.max_hours * 3600)]) for _ in range(args.hogs)]
    runs = []
    try:
        for k in range(args.runs):
            runs.append(run_suite(args.pytest_args))
            print(f"run {k + 1}/{args.runs}: {runs[-1]['summary']} in {runs[-1]['wall_seconds']:.0f} s, "
                  f"load average {runs[-1]['load_average_mean']:.1f}", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    doc = {
        "generated_by": "python scripts/suite_under_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "load": f"{args.hogs} processes running `while True: pass` in Python at normal priority, for the whole time",
        "runs": runs,
        "all_passed": all(r["exit_code"] == 0 for r in runs),
    }
    if not args.pytest_args:
        OUT.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0 if doc["all_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
