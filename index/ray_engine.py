"""Hashing image files on Ray: a Ray Data pipeline of NumPy Hasher workers -> Parquet shards.

The one module that imports Ray (only inside its functions: ``import semhash`` and
``import semhash.index`` never import it).  Install with ``pip install -e ".[distributed]"``.

:func:`hash_files` takes the files a local run would hash (path + label, as
:func:`semhash.data.iter_image_files` yields them) and a model's ``hasher.npz``, and runs

    paths (Arrow table, blocks of ``batch_size``)
      -> map_batches(_HashBatches, ActorPoolStrategy(size=workers))  stat, read, sha256,
         decode (semhash.data.decode_image), hash (semhash.inference.Hasher, loaded once
         per worker), one row per file: a code, or the one-line error a local run prints
      -> streamed back to the driver, which writes the good rows as Parquet shards and
         keeps the errors apart.

The driver writes the shards because the codes have to end up where the import into the
index runs anyway, and they are small (~120 bytes a row: at 10^9 images a day, 1.4 MB/s);
so the output needs no storage shared with the workers.  The images do: every worker must
read each path as the driver names it (a shared filesystem).  The model travels as bytes,
so it does not.

Shard columns (one row per hashed file):

    path          string   the file's path (undecodable bytes of a non-UTF-8 name shown as \\xNN)
    path_bytes    binary   the path exactly, os.fsencode(path): lossless for any file name
    code          uint64   the code, bit i = coding unit i (Hasher.hash)
    label         string   first-level subfolder name (escaped like path), null in the root
    content_hash  string   sha256 of the file's bytes, hex
    size          int64    bytes (os.stat before reading, as the local indexer records it)
    mtime         float64  seconds since the epoch (os.stat st_mtime)

Errors are "<path>: <cause>" strings worded exactly as the local indexer words them
(decode errors are semhash.errors.ImageError messages; read errors as ``indexer._os_cause``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from semhash.errors import SemhashError

SHARD_SCHEMA_FIELDS = (
    ("path", "string"),
    ("path_bytes", "binary"),
    ("code", "uint64"),
    ("label", "string"),
    ("content_hash", "string"),
    ("size", "int64"),
    ("mtime", "float64"),
)
DEFAULT_BATCH_SIZE = 256
DEFAULT_ROWS_PER_SHARD = 1_000_000
LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2  # paths in, codes out: the objects are small


@dataclass
class HashRun:
    """What :func:`hash_files` did."""

    shards: list[Path]  # Parquet files written, in order
    errors: list[str]  # "<path>: <cause>" per bad file, sorted by path
    rows: int  # files hashed (rows in the shards)
    workers: int
    seconds: float  # pipeline wall time, Ray start-up excluded
    startup_seconds: float = 0.0  # ray.init (0 when Ray was already running)
    first_batch_seconds: float = 0.0  # from the pipeline's start to its first hashed batch
    worker_cpu_seconds: float = 0.0  # CPU time the workers spent hashing (for sizing a cluster)


def display_path(raw: bytes) -> str:
    """A path for people and Arrow strings: UTF-8, undecodable bytes as \\xNN escapes."""
    return raw.decode("utf-8", "backslashreplace")


def read_error_cause(exc: OSError) -> str:
    """Why a file could not be read, worded as the local indexer words it (indexer._os_cause)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return f"cannot read ({exc.strerror or exc})"


def shard_schema():
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in SHARD_SCHEMA_FIELDS])


def hash_one_batch(hasher, raw_paths: Sequence[bytes], labels: Sequence[str | None]) -> dict[str, list]:
    """stat + read + sha256 + decode + hash for one batch of files, in this process.

    Returns columns for the shard schema plus ``error`` (None for a hashed file).  The same
    steps, in the same order, as the local indexer's batch: a stat or read failure and a
    decode failure give the messages it gives.
    """
    from semhash.data import decode_image
    from semhash.errors import ImageError

    out: dict[str, list] = {name: [] for name, _ in SHARD_SCHEMA_FIELDS}
    out["error"] = []
    images: list[np.ndarray] = []
    for raw, label in zip(raw_paths, labels):
        path = Path(os.fsdecode(raw))
        error = None
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError as exc:
            error = f"{path}: {read_error_cause(exc)}"
        else:
            digest = hashlib.sha256(data).hexdigest()
            del data
            try:
                images.append(decode_image(path, hasher.input_shape))
            except ImageError as exc:
                error = str(exc)
        out["path"].append(display_path(raw))
        out["path_bytes"].append(raw)
        out["label"].append(label)
        out["error"].append(error)
        ok = error is None
        out["content_hash"].append(digest if ok else None)
        out["size"].append(st.st_size if ok else None)
        out["mtime"].append(st.st_mtime if ok else None)
    codes = iter(hasher.hash(np.stack(images)).tolist() if images else [])
    out["code"] = [next(codes) if e is None else None for e in out["error"]]
    return out


class _HashBatches:
    """Ray Data callable class: one per worker, holding the Hasher it loaded once.

    Built by :func:`_worker_class` with the model's bytes in the class itself, so that the
    actor takes no constructor arguments (Ray warns about those living in the object store).
    """

    model_bytes: bytes = b""
    fingerprint: str = ""

    def __init__(self):
        from semhash.inference import Hasher

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "hasher.npz"
            path.write_bytes(self.model_bytes)
            self.hasher = Hasher.load(path)
        if self.hasher.fingerprint != self.fingerprint:
            raise RuntimeError(f"model arrived damaged: fingerprint {self.hasher.fingerprint} != {self.fingerprint}")

    def __call__(self, batch):
        import pyarrow as pa

        started = time.process_time()
        labels = batch.column("label").to_pylist()
        columns = hash_one_batch(self.hasher, batch.column("path_bytes").to_pylist(), labels)
        # the batch's CPU time, spread over its rows, so that the driver can add it up
        columns["cpu_s"] = [(time.process_time() - started) / max(1, len(labels))] * len(labels)
        schema = shard_schema().append(pa.field("error", pa.string())).append(pa.field("cpu_s", pa.float64()))
        return pa.Table.from_pydict(columns, schema=schema)


def _worker_class(model_bytes: bytes, fingerprint: str) -> type:
    return type("HashBatches", (_HashBatches,), {"model_bytes": model_bytes, "fingerprint": fingerprint})


def _quiet_ray_data() -> None:
    import ray.data

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False


def start_ray(address: str | None = None, num_cpus: int | None = None) -> float:
    """Connect to the cluster at ``address``, or start a local Ray on ``num_cpus`` cores
    (default: all of this machine's), quietly.  Returns the seconds it took."""
    import ray

    started = time.perf_counter()
    logging.getLogger("ray").setLevel(logging.ERROR)
    common = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(
                num_cpus=num_cpus or os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                **common,
            )
    except Exception as exc:  # Ray's connection errors vary by version: one line for users
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SemhashError(f"cannot start {where}: {cause}") from None
    return time.perf_counter() - started


def hash_files(
    files: Iterable[tuple[str | os.PathLike, str | None]],
    hasher_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    address: str | None = None,
    num_workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    on_batch: Callable[[int], None] | None = None,
) -> HashRun:
    """Hash ``files`` with the model in ``hasher_path`` on Ray; write the codes as Parquet.

    ``files``: ``(path, label)`` pairs (paths absolute, readable from every worker).
    ``out_dir``: a new or empty folder for the shards (refused otherwise, so the returned
    shards are exactly this run's).  ``address``: an existing cluster (``ray://...`` or
    ``host:port``); without it a local Ray starts on this machine's cores and stops at the
    end.  When Ray is already initialised in this process it is used as it is and left
    running.  ``num_workers``: hashing actors (one CPU each); default every CPU the cluster
    offers.  ``on_batch(n)`` is called with the number of files of each finished batch.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray
    import ray.data

    from semhash.inference import Hasher

    if batch_size < 1 or rows_per_shard < 1:
        raise ValueError("batch_size and rows_per_shard must be >= 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir}: the shard folder must be new or empty")
    model_bytes = Path(hasher_path).read_bytes()
    fingerprint = Hasher.load(hasher_path).fingerprint
    # Arrow strings are UTF-8: a label from a non-UTF-8 folder name is shown escaped, as paths are
    pairs = [(os.fsencode(p), None if label is None else display_path(os.fsencode(label))) for p, label in files]
    table = pa.table(
        {"path_bytes": [p for p, _ in pairs], "label": [label for _, label in pairs]},
        schema=pa.schema([("path_bytes", pa.binary()), ("label", pa.string())]),
    )

    owns_ray = not ray.is_initialized()
    startup = start_ray(address) if owns_ray else 0.0
    shards = _ShardWriter(out_dir, rows_per_shard)
    errors: list[tuple[bytes, str]] = []
    first_batch = 0.0
    worker_cpu = 0.0
    try:
        _quiet_ray_data()
        workers = int(num_workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
        started = time.perf_counter()
        if pairs:
            ds = ray.data.from_arrow(table, override_num_blocks=max(1, -(-len(pairs) // batch_size)))
            ds = ds.map_batches(
                _worker_class(model_bytes, fingerprint),
                batch_size=batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=1,
            )
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                first_batch = first_batch or time.perf_counter() - started
                failed = batch.column("error").is_valid()
                bad = batch.filter(failed)
                errors += zip(bad.column("path_bytes").to_pylist(), bad.column("error").to_pylist())
                worker_cpu += pc.sum(batch.column("cpu_s")).as_py() or 0.0
                shards.write(batch.filter(pc.invert(failed)).drop_columns(["error", "cpu_s"]))
                if on_batch is not None:
                    on_batch(batch.num_rows)
        seconds = time.perf_counter() - started
    finally:
        shards.close()
        if owns_ray:
            ray.shutdown()
    return HashRun(
        shards.paths,
        [message for _, message in sorted(errors)],
        shards.rows,
        workers,
        seconds,
        startup,
        first_batch,
        worker_cpu,
    )


class _ShardWriter:
    """Parquet files of at most ``rows_per_shard`` rows: codes-00000.parquet, ..."""

    def __init__(self, folder: Path, rows_per_shard: int):
        self.folder = folder
        self.rows_per_shard = rows_per_shard
        self.paths: list[Path] = []
        self.rows = 0
        self._writer = None
        self._in_shard = 0

    def write(self, table) -> None:
        import pyarrow.parquet as pq

        while table.num_rows:
            if self._writer is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.paths.append(self.folder / f"codes-{len(self.paths):05d}.parquet")
                self._writer = pq.ParquetWriter(self.paths[-1], shard_schema())
                self._in_shard = 0
            part = table.slice(0, self.rows_per_shard - self._in_shard)
            self._writer.write_table(part)
            self._in_shard += part.num_rows
            self.rows += part.num_rows
            table = table.slice(part.num_rows)
            if self._in_shard >= self.rows_per_shard:
                self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
