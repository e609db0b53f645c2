"""What every experiment shares: the machine it ran on, bounded timing loops, seeded code
generators, JSON output into docs/benchmarks/, a table printer, single-thread settings.

Rules the helpers enforce: every loop is bounded in count *and* time (:func:`timed_batches`);
every generator is seeded; every result file records the machine and its load average at
the start and end of the run, so a reader can tell a quiet run from a noisy one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "docs" / "benchmarks"


# ---------------------------------------------------------------------------- environment
def single_thread() -> None:
    """One thread everywhere: BLAS/OpenMP through the environment (must run before numpy
    or faiss start their pools, so experiments call it first) and faiss explicitly."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(1)


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, versions and the commit: enough to compare two runs."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "load_average_1_5_15min": load_average(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(("MemTotal", "MemAvailable")):
                name, value = line.split(":", 1)
                info[name.lower() + "_gib"] = round(int(value.split()[0]) / 2**20, 1)
    except OSError:
        pass
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    if "faiss" in sys.modules:
        info["faiss"] = sys.modules["faiss"].__version__
    return info


def available_memory_bytes() -> int:
    """MemAvailable (Linux; 0 where unknown): check it before building something big."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_bytes() -> int:
    """Resident memory of this process now (Linux; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# ---------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """A bounded loop's outcome: items done, seconds spent, and whether a bound cut it short."""

    items: int
    seconds: float
    stopped_by: str  # "done", "time" or "count"
    cpu_seconds: float = float("nan")  # this process's CPU time: less hurt by other jobs

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("nan")

    @property
    def per_cpu_second(self) -> float:
        return self.items / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


def timed_batches(
    run: Callable[[int, int], Any], n_items: int, *, batch: int, max_seconds: float, min_items: int = 1
) -> Timing:
    """Call ``run(start, stop)`` over [0, n_items) in batches until done or ``max_seconds``
    have passed (after at least ``min_items``).  Bounded in count and time."""
    done, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while done < n_items:
        stop = min(n_items, done + batch)
        run(done, stop)
        done = stop
        elapsed = time.perf_counter() - started
        if elapsed > max_seconds and done >= min_items and done < n_items:
            return Timing(done, elapsed, "time", time.process_time() - cpu_started)
    return Timing(done, time.perf_counter() - started, "done", time.process_time() - cpu_started)


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (wall) and ``sw.cpu_seconds``
    (this process's CPU time, which other jobs on the machine disturb less)."""

    def __enter__(self) -> "Stopwatch":
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = time.process_time() - self.cpu_started


# ---------------------------------------------------------------------------- codes
def random_codes(n: int, n_bits: int, seed: int = 0) -> np.ndarray:
    """(n,) uint64 codes, every bit a fair coin."""
    rng = np.random.default_rng(seed)
    if n_bits == 64:
        return rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    return rng.integers(0, 1 << n_bits, n, dtype=np.uint64)


def clustered_codes(
    n: int,
    n_bits: int,
    *,
    n_centres: int = 4096,
    flip_probability: float = 0.05,
    seed: int = 0,
    sample_seed: int | None = None,
) -> np.ndarray:
    """Codes like a trained model's: ``n_centres`` random centres (drawn from ``seed`` alone,
    so a query set drawn with another ``sample_seed`` shares them) and each row a random
    centre with every bit flipped with ``flip_probability``: many rows share a code (big
    buckets).  With 30 bits and p = 0.05, a row keeps its centre exactly 21% of the time."""
    centres = random_codes(n_centres, n_bits, seed=seed)
    rng = np.random.default_rng(seed + 1 if sample_seed is None else sample_seed)
    out = centres[rng.integers(0, n_centres, n)]
    weights = np.left_shift(np.uint64(1), np.arange(n_bits, dtype=np.uint64))
    chunk = 1 << 22
    for start in range(0, n, chunk):  # (chunk, bits) flips at a time keeps memory flat
        m = min(chunk, n - start)
        flips = rng.random((m, n_bits), dtype=np.float32) < flip_probability
        out[start : start + m] ^= (flips.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return out


def flip_masks(n_bits: int, radius: int) -> np.ndarray:
    """Every ``n_bits``-bit mask of popcount <= radius, nearest first (the neighbour codes
    of q are q ^ mask): 466 of them for 30 bits and radius 2."""
    from itertools import combinations

    masks = [sum(1 << p for p in pos) for d in range(radius + 1) for pos in combinations(range(n_bits), d)]
    return np.array(masks, dtype=np.uint64)


def parse_sizes(text: str) -> list[int]:
    """'1e5,1e6' -> [100000, 1000000]."""
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


# ---------------------------------------------------------------------------- output
def run_header(experiment: str, load_before: list[float]) -> dict[str, Any]:
    """The keys every `python -m benchmarks EXPERIMENT` result starts with: what ran, the
    command line as typed, the machine, and its load average before and after."""
    return {
        "experiment": experiment,
        "command": f"python -m benchmarks {experiment} " + " ".join(sys.argv[2:]),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def write_json(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``payload`` to ``out`` or docs/benchmarks/<name>.json and return the path."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=_plain) + "\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "–"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str], *, markdown: bool = True) -> str:
    """Rows as a Markdown table (the form docs/BENCHMARKS.md takes) with the given columns."""
    rows = list(rows)
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def log(message: str) -> None:
    """Progress to stderr, so stdout stays the result."""
    print(message, file=sys.stderr, flush=True)


def shipped_photos():
    """The photos installed packages ship (no download): -> (scikit-image's ``skimage.data``
    photos that load offline, scikit-learn's and matplotlib's sample photos, scikit-image's
    small face photos), each a list of RGB uint8 arrays (the copies and photos benchmarks)."""
    import matplotlib.cbook as cbook
    import skimage.data as data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    names = ["astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
             "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket", "microaneurysms",
             "page", "text"]  # fmt: skip
    database = []
    for name in names:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # noqa: BLE001 - a photo this scikit-image cannot load offline is left out
            continue
        if image.dtype == bool:
            continue
        image = image.astype(np.uint8) if image.dtype == np.uint8 else (255 * (image / max(1, image.max()))).astype(np.uint8)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        database.append(image[..., :3])
    faces = []  # scikit-image's 200 small face photos (Labeled Faces in the Wild), one tile each
    try:
        import os

        stack = np.load(os.path.join(os.path.dirname(data.__file__), "lfw_subset.npy"))
        faces = [np.stack([(255 * np.clip(face, 0, 1)).astype(np.uint8)] * 3, axis=-1) for face in stack]
    except (OSError, ValueError):
        pass
    held_out = list(load_sample_images().images)
    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        held_out.append(np.asarray(Image.open(fh).convert("RGB")))
    return database, held_out, faces
