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

    path          string   the path's key (semhash.index.pathkeys.path_key: undecodable bytes
                           of a non-UTF-8 name as \\xNN, backslashes doubled), as the index stores it
    path_bytes    binary   the path exactly, os.fsencode(path): lossless for any file name
    code          uint64   the code, bit i = coding unit i (Hasher.hash)
    label         string   first-level subfolder name's key (as path), null in the root
    label_bytes   binary   that name exactly (what the bulk import stores, through path_key)
    content_hash  string   sha256 of the file's bytes, hex
    size          int64    bytes (os.stat before reading, as the local indexer records it)
    mtime         float64  seconds since the epoch (os.stat st_mtime)
    near_code     binary   the near tier's PDQ code, 32 bytes (semhash.perceptual)
    near_variants binary   the PDQ codes of its 7 rotations and mirrors, 224 bytes
    near_quality  int32    PDQ's quality, 0-100
    width         int32    the image's pixel width, upright
    height        int32    its pixel height
    taken_at      float64  EXIF DateTimeOriginal, seconds since the epoch (null: none)
    camera        string   EXIF make and model (null: none)
    format        string   the file format ("JPEG", "HEIF", a RAW file's "DNG", ...)

Errors are "<path key>: <cause>" lines, made by the local indexer's own functions
(``indexer.file_error``), so a bad file reads the same whichever engine hashed it.

:func:`index_files_on_ray` is ``semhash index DIR --engine ray``: the local indexer plans the
run (which files are new or changed, their labels), this hashes them, and the shards go into
the index through the bulk import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from semhash.errors import SemhashError
from semhash.index.pathkeys import path_key
from semhash.lifetime import Reaper

SHARD_SCHEMA_FIELDS = (
    ("path", "string"),
    ("path_bytes", "binary"),
    ("code", "uint64"),
    ("label", "string"),
    ("label_bytes", "binary"),
    ("content_hash", "string"),
    ("size", "int64"),
    ("mtime", "float64"),
    ("near_code", "binary"),
    ("near_variants", "binary"),
    ("near_quality", "int32"),
    ("width", "int32"),
    ("height", "int32"),
    ("taken_at", "float64"),
    ("camera", "string"),
    ("format", "string"),
)
DEFAULT_BATCH_SIZE = 256
DEFAULT_ROWS_PER_SHARD = 1_000_000
LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2  # paths in, codes out: the objects are small


@dataclass
class HashRun:
    """What :func:`hash_files` did."""

    shards: list[Path]  # Parquet files written, in order
    errors: list[str]  # "<path key>: <cause>" per bad file, sorted by path
    failed: list[bytes]  # the bad files' paths (os.fsencode), in the order of ``errors``
    rows: int  # files hashed (rows in the shards)
    workers: int
    seconds: float  # pipeline wall time, Ray start-up excluded
    startup_seconds: float = 0.0  # ray.init (0 when Ray was already running)
    first_batch_seconds: float = 0.0  # from the pipeline's start to its first hashed batch
    worker_cpu_seconds: float = 0.0  # CPU time the workers spent hashing (for sizing a cluster)


def shard_schema():
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in SHARD_SCHEMA_FIELDS])


def hash_one_batch(hasher, raw_paths: Sequence[bytes], labels: Sequence[bytes | None]) -> dict[str, list]:
    """stat, then the local indexer's own batch work (:func:`semhash.index.indexer.hash_batch`:
    read, sha256, decode, hash, and the lines it prints for a bad file), for one batch of
    files, in this process.

    ``labels``: each file's label as the folder name's bytes (None: no label).  Returns
    columns for the shard schema plus ``error`` (None for a hashed file).
    """
    from semhash.index.indexer import file_error, hash_batch

    paths = [Path(os.fsdecode(raw)) for raw in raw_paths]
    stats: list = []
    for path in paths:
        try:
            stats.append(path.stat())
        except OSError as exc:
            stats.append(file_error(path, exc))  # a line, as a local run's walk gives it
    outcomes = iter(hash_batch(hasher, [(p, None) for p, st in zip(paths, stats) if not isinstance(st, str)]))
    out: dict[str, list] = {name: [] for name, _ in SHARD_SCHEMA_FIELDS}
    out["error"] = []
    for raw, label, st in zip(raw_paths, labels, stats):
        digest = code = facts = None
        if isinstance(st, str):
            error = st
        else:
            kind, text, code, facts = next(outcomes)
            error, digest = (text, None) if kind == "skip" else (None, text)
        ok = error is None
        out["path"].append(path_key(raw))
        out["path_bytes"].append(raw)
        out["label"].append(None if label is None else path_key(label))
        out["label_bytes"].append(label)
        out["error"].append(error)
        out["code"].append(code if ok else None)
        out["content_hash"].append(digest if ok else None)
        out["size"].append(st.st_size if ok else None)
        out["mtime"].append(st.st_mtime if ok else None)
        for name in ("near_code", "near_variants", "near_quality", "width", "height", "taken_at", "camera", "format"):
            out[name].append(getattr(facts, name) if ok else None)
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
        labels = batch.column("label_bytes").to_pylist()
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


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """One line, at once, when nothing answers at a cluster address ``HOST:PORT`` or
    ``ray://HOST:PORT`` (Ray itself retries for minutes, logging as it goes).  Other forms
    (``auto``) are left to Ray."""
    import socket

    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address.strip())
    if match is None:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        cause = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise SemhashError(f"cannot reach the Ray cluster at {address}: {cause}") from None


#: what a local Ray's processes look like: "ray::IDLE", ".../site-packages/ray/core/.../raylet", ...
RAY_PROCESSES = r"^ray::|/ray/"
_reaper: Reaper | None = None


def start_ray(address: str | None = None, num_cpus: int | None = None) -> float:
    """Connect to the cluster at ``address``, or start a local Ray on ``num_cpus`` cores
    (default: all of this machine's), quietly.  Returns the seconds it took.  A local Ray's
    processes end with this one however it ends (a :class:`~semhash.lifetime.Reaper` kills
    the agents that would otherwise outlive a killed driver by a minute); stop it with
    :func:`stop_ray`."""
    global _reaper
    import ray

    started = time.perf_counter()
    if address:
        check_reachable(address)
    logging.getLogger("ray").setLevel(logging.ERROR)
    common = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    try:
        if address:
            with _keeping_sigterm():
                ray.init(address=address, **common)
        else:
            _reaper = _reaper or Reaper(RAY_PROCESSES)
            with _keeping_sigterm():
                ray.init(
                    num_cpus=num_cpus or os.cpu_count() or 1,
                    include_dashboard=False,
                    object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                    **common,
                )
    except Exception as exc:  # Ray's connection errors vary by version: one line for users
        stop_ray()
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SemhashError(f"cannot start {where}: {cause}") from None
    except BaseException:  # Ctrl-C or SIGTERM as it started: what started goes
        stop_ray()
        raise
    return time.perf_counter() - started


@contextlib.contextmanager
def _keeping_sigterm():
    """While ``ray.init`` runs, Ray would install two SIGTERM handlers in this process: a C++
    one that prints stack lines and kills it at once, and a Python one (``sys.exit(15)``);
    neither is (Ray's own switch for the first, its installer a no-op for the second), so
    semhash's stays: SIGTERM ends a command as Ctrl-C does, cleanups run."""
    import ray._private.ray_constants as ray_constants
    import ray._private.utils as ray_utils

    os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"  # the workers Ray starts read it too
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    install = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = install


def stop_ray() -> None:
    """Disconnect from Ray (a local Ray stops) and dismiss the reaper of a local Ray.  After a
    SIGTERM nothing is shut down here: ``ray.shutdown()`` racing Ray's own start-up crashed
    the process (a segfault in Ray's GCS subscriber), so the process just ends (semhash.cli
    exits at once) and its local Ray goes with it (fate-sharing, and the reaper, still
    armed)."""
    global _reaper
    import ray

    from semhash.lifetime import terminated

    if terminated():
        return
    ray.shutdown()
    if _reaper is not None:
        _reaper.close()
        _reaper = None


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
    # names travel as bytes (any file name); the workers make the keys
    pairs = [(os.fsencode(p), None if label is None else os.fsencode(label)) for p, label in files]
    table = pa.table(
        {"path_bytes": [p for p, _ in pairs], "label_bytes": [label for _, label in pairs]},
        schema=pa.schema([("path_bytes", pa.binary()), ("label_bytes", pa.binary())]),
    )

    owns_ray = not ray.is_initialized()
    startup = start_ray(address) if owns_ray else 0.0
    shards = _ShardWriter(out_dir, rows_per_shard)
    errors: list[tuple[bytes, str]] = []
    first_batch = 0.0
    worker_cpu = 0.0
    try:
        _quiet_ray_data()
        blocks = max(1, -(-len(pairs) // batch_size))
        # no more actors than batches: an idle one would only cost its start-up
        workers = min(blocks, int(num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))))
        started = time.perf_counter()
        if pairs:
            ds = ray.data.from_arrow(table, override_num_blocks=blocks)
            with warnings.catch_warnings():
                # max_restarts: a worker that dies fails the run (rerun it: what was indexed
                # stays) instead of restarting, and Ray no longer logs an error line at every
                # actor start about restarts.  Ray 2.60 calls passing it this way deprecated
                # (for 2.64) without a named replacement yet: not the user's concern
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = ds.map_batches(
                    _worker_class(model_bytes, fingerprint),
                    batch_size=batch_size,
                    batch_format="pyarrow",
                    compute=ray.data.ActorPoolStrategy(size=workers),
                    num_cpus=1,
                    max_restarts=0,
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
            stop_ray()
    errors.sort()
    return HashRun(
        shards.paths,
        [message for _, message in errors],
        [raw for raw, _ in errors],
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


# --------------------------------------------------------------------------- semhash index --engine ray
def require_ray(address: str | None = None) -> None:
    """Refuse, in one line, before anything is read or written, when Ray is not installed or
    nothing answers at the cluster ``address``."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise SemhashError("--engine ray needs Ray: pip install 'semhash[distributed]'") from None
    if address:
        check_reachable(address)


def ray_index_run(db, model, hasher, summary, warn, bar, *, address=None, workers=None, batch_size=DEFAULT_BATCH_SIZE):
    """The local indexer's run (``indexer._Run``) with its hashing moved to Ray (see
    :class:`_RayIndexRun`)."""
    require_ray()
    from semhash.index.indexer import _Run

    class _RayIndexRun(_Run):
        """Plans exactly as a local run: :func:`semhash.index.indexer.index_folder`'s walk
        decides which files are new or changed and what label each gets, and hands them
        over batch by batch.  Instead of hashing each batch, this keeps them; relabels of
        unchanged files are committed as locally.  :meth:`drain` (after the last batch)
        hashes them all on Ray, loads the shards with the bulk import, then does what a local
        batch does besides: relabels changed rows, drops the rows of files that turned
        unreadable, counts."""

        def __init__(self):
            super().__init__(db, hasher, summary, warn, bar)  # no pool: nothing is hashed here
            self.planned: list = []

        def flush(self) -> None:
            self.planned += self.work
            self.work = []
            super().flush()  # no files left in it: only the relabels of unchanged files

        def drain(self) -> None:
            super().drain()
            work, self.planned = self.planned, []
            if work:
                _hash_and_load(db, model, work, summary, self.skip, bar, address, workers, batch_size)

    return _RayIndexRun()


def _hash_and_load(db, model, work, summary, skip, bar, address, workers, batch_size) -> None:
    import pyarrow.parquet as pq
    from sqlalchemy import delete, update

    from semhash.index.db import ImageRow, bump_generation, chunked
    from semhash.index.importer import import_parquet
    from semhash.index.pathkeys import key_path

    files = [(w.path, None if w.label is None else key_path(w.label)) for w in work]
    with tempfile.TemporaryDirectory(prefix="semhash-shards-") as tmp:
        run = hash_files(
            files, model.hasher_path, Path(tmp) / "shards", address=address, num_workers=workers,
            batch_size=batch_size, on_batch=bar.update,
        )  # fmt: skip
        hashed: dict[bytes, str] = {}
        for shard in run.shards:
            table = pq.read_table(shard, columns=["path_bytes", "content_hash"])
            hashed.update(zip(table.column("path_bytes").to_pylist(), table.column("content_hash").to_pylist()))
        if run.shards:  # one transaction of upserts; a row already indexed keeps its label
            import_parquet(db.location, run.shards, model)
    failed = dict(zip(run.failed, run.errors))
    relabel, drop = [], []
    for w in work:
        raw = os.fsencode(w.path)
        if raw in failed:
            if w.row is not None:
                drop.append(w.row.id)  # indexed before, unreadable now: the old code is stale
            continue
        if w.row is None:
            summary.added += 1
        elif hashed.get(raw) == w.row.content_hash:
            summary.unchanged += 1  # same bytes, new stat (the code is the same too)
        else:
            summary.updated += 1
        if w.relabels:  # the import keeps a row's label (first indexed wins): set this run's
            summary.relabelled += 1
            if w.row is not None:
                relabel.append({"id": w.row.id, "label": w.label})
    if relabel or drop:
        with db.write_session() as s, s.begin():
            if relabel:
                s.execute(update(ImageRow), relabel)
            for ids in chunked(drop):
                s.execute(delete(ImageRow).where(ImageRow.id.in_(ids)))
            bump_generation(s)
    for w in work:  # the bad files' lines, in the walk's order as a local run gives them
        message = failed.get(os.fsencode(w.path))
        if message is not None:
            skip(message)
