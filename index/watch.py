"""An index that follows its folder: ``semhash index DIR --watch``.

The folder is indexed once (a normal run: what changed while nobody watched is caught up),
then watchdog's observer (inotify on Linux, FSEvents on macOS, ...) reports every change,
and the index follows, one transaction per burst:

* a file created or changed is hashed once it is quiet: right after the writer closes it
  (inotify's close-after-write, then :data:`SETTLE_S` without another event), else after
  ``debounce`` seconds without one (a file still being copied is not read half-written);
* a file or folder renamed or moved inside the folder is a move, not a delete and an add:
  its rows change path and keep their ids, codes, labels and the decisions that name them
  (:func:`semhash.index.maintenance.move_rows`);
* the lookup files are refreshed once the folder has been quiet :data:`REFRESH_AFTER_S`
  (a reader that finds them stale meanwhile builds its own);
* a file deleted, or moved out of the folder, loses its row; one moved in is added;
* the folder itself going away (unmounted, renamed, deleted) is noticed within ``poll``
  seconds: nothing is removed, the watch waits for it to come back (the same folder, or a
  folder at that path with something in it), catches up with a normal run, and goes on.

Stops cleanly on Ctrl-C or SIGTERM (``stop`` for a caller in another thread): the burst in
hand is either committed or rolled back whole, and the next run catches up with the rest.
``semhash serve`` sees each burst without a restart: it follows the record's generation.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from semhash.errors import DatasetError, SemhashError
from semhash.index.pathkeys import path_key, printable

WATCH_EXTRA = "pip install 'semhash[watch]'"
DEBOUNCE_S = 2.0  # a file no writer has closed is read once it has been quiet this long
SETTLE_S = 0.1  # after a close-after-write (or a rename), this long without another event
MAX_WAIT_S = 30.0  # a burst is taken at the latest this long after its first event, even if events keep coming
#: the lookup files are brought up to date once the folder has been quiet this long, not after
#: every burst: the refresh reads the whole record (+265 ms a file at 10^5 rows when it ran after
#: each one), and a reader that finds them stale builds its own meanwhile
REFRESH_AFTER_S = 2.0
POLL_S = 1.0  # how often the folder itself is checked (unmounted? back?)


class WatchError(SemhashError):
    """The watch cannot start (watchdog missing, the folder not watchable): one line."""


@dataclass
class WatchSummary:
    """What a watch did after its first catch-up run (counts are files)."""

    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    skipped: int = 0
    bursts: int = 0  # transactions of changes
    away: int = 0  # times the folder went away (unmounted) and came back
    total: int = 0  # rows in the index when it stopped


def _observer_class():
    try:
        from watchdog.observers import Observer
    except ImportError:
        raise WatchError(f"--watch needs the watchdog package: {WATCH_EXTRA}") from None
    return Observer


def _identity(root: Path) -> tuple[int, int] | None:
    """The folder's (device, inode), or None where there is no folder at that path."""
    try:
        st = os.stat(root)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _has_entries(root: Path) -> bool:
    try:
        with os.scandir(root) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


class _Pending:
    """The paths events named, waiting to be quiet; moves in the order they happened."""

    def __init__(self, debounce: float):
        self.debounce = debounce
        self.files: dict[Path, tuple[float, float, bool]] = {}  # path -> (first event, last event, closed)
        self.folders: set[Path] = set()  # deleted or moved away: their rows are checked
        self.moves: list[tuple[Path, Path, bool]] = []  # (from, to, is_folder)
        self.first = 0.0

    def __bool__(self) -> bool:
        return bool(self.files or self.folders or self.moves)

    def touch(self, path: Path, now: float, closed: bool = False) -> None:
        first = self.files[path][0] if path in self.files else now
        self.files[path] = (first, now, closed)
        self.first = self.first or now

    def add(self, kind: str, src: Path, dest: Path | None, is_folder: bool, now: float) -> None:
        from semhash.formats import IMAGE_EXTENSIONS

        if not is_folder and src.suffix.lower() not in IMAGE_EXTENSIONS and (dest is None or dest.suffix.lower() not in IMAGE_EXTENSIONS):
            return  # not an image before or after (an index's own WAL in the folder, a text file): nothing to follow
        self.first = self.first or now
        if kind == "moved" and dest is not None:
            self.moves.append((src, dest, is_folder))
            if not is_folder:
                self.files.pop(src, None)
                self.touch(dest, now, closed=True)  # a rename is complete when it is seen
        elif is_folder:
            if kind == "deleted":
                self.folders.add(src)
            elif kind == "created":  # moved in from outside, or made and filled at once
                from semhash.data import iter_image_files

                for path, _ in iter_image_files(src):
                    self.touch(path, now)
        elif kind in ("created", "modified", "deleted"):
            self.touch(src, now, closed=kind == "deleted")
        elif kind == "closed":  # closed after writing
            self.touch(src, now, closed=True)

    def ready(self, now: float) -> bool:
        if not self:
            return False
        if now - self.first >= MAX_WAIT_S:
            return True
        return all(now - last >= (SETTLE_S if closed else self.debounce) for _, last, closed in self.files.values())

    def take(self):
        taken = (list(self.files), set(self.folders), list(self.moves))
        self.files.clear()
        self.folders.clear()
        self.moves.clear()
        self.first = 0.0
        return taken

    def next_check(self, now: float) -> float:
        """Seconds until a burst could be ready (for the wait on the next event)."""
        if not self.files:
            return SETTLE_S if self else POLL_S
        return max(0.01, min((SETTLE_S if closed else self.debounce) - (now - last) for _, last, closed in self.files.values()))


def _handler(events: "queue.Queue"):
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):
            if event.event_type in ("opened", "closed_no_write"):
                return
            dest = getattr(event, "dest_path", "") or None
            events.put((event.event_type, os.fsdecode(event.src_path), None if dest is None else os.fsdecode(dest), event.is_directory))

    return Handler()


def watch_folder(
    folder: str | Path,
    model,
    index_path,
    *,
    near_model=None,
    rebuild: bool = False,
    relabel: bool = False,
    workers: int | None = None,
    progress: bool = False,
    debounce: float = DEBOUNCE_S,
    poll: float = POLL_S,
    stop: threading.Event | None = None,
    on_indexed: Callable | None = None,
    on_change: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> WatchSummary:
    """Index ``folder`` (:func:`semhash.index.index_folder`, with ``rebuild``, ``relabel``,
    ``near_model`` and ``workers``; its summary goes to ``on_indexed``), then keep the index
    following it (see the module's docstring) until ``stop`` is set, Ctrl-C or SIGTERM.  ``on_change`` gets a line per burst, ``on_warning``
    one per file that could not be read and when the folder goes away or comes back.

    An empty folder is watched too (nothing to index yet).  Raises WatchError without
    watchdog, DatasetError for a folder that is not there, IndexError_ as indexing does."""
    from semhash import lifetime
    from semhash.index.db import database_errors
    from semhash.index.indexer import IndexSummary, _bind, _near_coder, _open_for_indexing

    observer_class = _observer_class()
    stop = stop or threading.Event()

    def warn(message: str) -> None:
        if on_warning is not None:
            on_warning(message)

    if not Path(folder).is_dir():
        raise DatasetError(f"{printable(str(folder))}: no such folder")
    root = Path(folder).expanduser().resolve()
    events: queue.Queue = queue.Queue()
    summary = WatchSummary()
    observer = None

    def start_observer():
        watcher = observer_class()
        watcher.schedule(_handler(events), os.fspath(root), recursive=True)
        try:
            watcher.start()
        except OSError as exc:  # inotify watch limit, a folder that vanished meanwhile
            raise WatchError(f"{printable(str(root))}: cannot watch the folder ({exc.strerror or exc})") from None
        return watcher

    def stop_observer(watcher) -> None:
        if watcher is not None:
            watcher.stop()
            watcher.join(timeout=10)

    def catch_up(first: bool) -> None:
        """A normal run over the whole folder; the observer is already on, so nothing that
        changes meanwhile is missed (its events are checked again after)."""
        from semhash.index.indexer import index_folder

        try:
            indexed = index_folder(root, model, index_path, near_model=near_model if first else None, rebuild=rebuild and first,
                                   relabel=relabel and first, workers=workers, progress=progress, on_warning=warn)  # fmt: skip
        except DatasetError as exc:
            if "no image files found" not in str(exc):
                raise
            indexed = None
            warn(f"{printable(str(root))}: no image files yet: watching for them")
        if on_indexed is not None and indexed is not None:
            on_indexed(indexed)

    identity = _identity(root)
    try:
        observer = start_observer()
        catch_up(first=True)
        db = _open_for_indexing(index_path, False, IndexSummary(), warn)
        with db, database_errors(db.path):
            hasher = model.load_hasher()
            near_coder = _near_coder(db, model, near_model, False)
            _bind(db, model, hasher, False, near_coder.scheme)
            pending = _Pending(debounce)
            try:
                identity = _follow(root, identity, db, model, hasher, near_coder, pending, events, stop, poll, summary, warn,
                                   on_change, start_observer, stop_observer, catch_up, observer)  # fmt: skip
            finally:
                observer = None  # _follow stops the ones it starts
                summary.total = db.count()
    except KeyboardInterrupt:
        pass  # Ctrl-C: the end of a watch, not an error
    except SystemExit:
        if not lifetime.terminated():
            raise  # SIGTERM (terminate_as_interrupt) ends a watch as Ctrl-C does
    finally:
        stop_observer(observer)
    return summary


def _follow(root, identity, db, model, hasher, near_coder, pending: _Pending, events: "queue.Queue", stop: threading.Event,
            poll: float, summary: WatchSummary, warn, on_change, start_observer, stop_observer, catch_up, observer):  # fmt: skip
    """The watch's loop: events into bursts, bursts into the index, the folder's comings and
    goings; until ``stop`` (or a signal's exception)."""
    from semhash.index.indexer import IndexSummary, index_changed
    from semhash.index.maintenance import move_rows
    from semhash.index.search import refresh_lookup

    stale_since = None  # when the first burst after the last lookup refresh was committed
    try:
        while not stop.is_set():
            now = time.monotonic()
            wait = min(poll, pending.next_check(now))
            if stale_since is not None and not pending:
                if now - stale_since >= REFRESH_AFTER_S:
                    refresh_lookup(db)
                    stale_since = None
                else:
                    wait = min(wait, REFRESH_AFTER_S - (now - stale_since))
            try:
                item = events.get(timeout=max(0.01, wait))
            except queue.Empty:
                item = None
            while item is not None:
                kind, src, dest, is_folder = item
                pending.add(kind, Path(src), None if dest is None else Path(dest), is_folder, time.monotonic())
                try:
                    item = events.get_nowait()
                except queue.Empty:
                    item = None
            if _identity(root) != identity:
                stop_observer(observer)
                observer = None
                pending.take()
                identity = _away(root, identity, stop, poll, db, warn)
                if identity is None:  # stopped while away
                    break
                summary.away += 1
                observer = start_observer()
                catch_up(first=False)
                continue
            if pending.ready(time.monotonic()):
                burst, moved = IndexSummary(), 0
                files, folders, moves = pending.take()
                try:
                    moved = move_rows(db, _moves_inside(root, moves, files, folders))
                    index_changed(db, root, files + _rows_under(db, folders), model, hasher, near_coder, burst, warn)
                    stale_since = stale_since or time.monotonic()
                finally:  # what was committed counts, even when a signal cut the burst short
                    _count(summary, burst, moved)
                if on_change is not None and (burst.added or burst.updated or burst.removed or burst.skipped or moved):
                    on_change(f"{time.strftime('%H:%M:%S')} {burst.added} added, {burst.updated} updated, {moved} moved, "
                              f"{burst.removed} removed, {burst.skipped} skipped: {burst.total:,} images in the index")  # fmt: skip
        if stale_since is not None:  # stopped by ``stop``: leave the lookups current
            refresh_lookup(db)
    finally:
        stop_observer(observer)
    return identity


def _count(summary: WatchSummary, burst, moved: int) -> None:
    summary.bursts += 1 if burst.added or burst.updated or burst.removed or burst.skipped or moved else 0
    summary.added += burst.added
    summary.updated += burst.updated
    summary.removed += burst.removed
    summary.skipped += burst.skipped
    summary.moved += moved


def _moves_inside(root: Path, moves, files: list[Path], folders: set[Path]) -> list[tuple[str, str, bool]]:
    """The renames whose both ends the index keeps (path keys); one whose new place is out of
    the folder, hidden or not an image becomes a check of its old place (the row goes)."""
    from semhash.index.indexer import watched_label

    inside = []
    for src, dest, is_folder in moves:
        if is_folder:
            keeps = dest.is_relative_to(root) and not any(p.startswith(".") for p in dest.relative_to(root).parts)
        else:
            keeps = watched_label(root, dest)[0]
        if keeps:
            inside.append((path_key(src), path_key(dest), is_folder))
        elif is_folder:
            folders.add(src)
        else:
            files.append(src)
    return inside


def _rows_under(db, folders: set[Path]) -> list[Path]:
    """The files the index holds under folders that were deleted or moved away."""
    from sqlalchemy import select

    from semhash.index.db import ImageRow, key_range
    from semhash.index.pathkeys import key_path

    found = []
    with db.session() as s, s.begin():
        for folder in folders:
            low, high = key_range(path_key(folder))
            found += [key_path(k) for k in s.scalars(select(ImageRow.path).where(ImageRow.path >= low, ImageRow.path < high))]
    return found


def _away(root: Path, identity, stop: threading.Event, poll: float, db, warn):
    """The folder went away: say so, keep every row, and wait until it is back -> its new
    identity (None when stopped meanwhile)."""
    from sqlalchemy import func, select

    from semhash.index.db import ImageRow, key_range

    low, high = key_range(path_key(root))
    with db.session() as s, s.begin():
        kept = int(s.scalar(select(func.count()).select_from(ImageRow).where(ImageRow.path >= low, ImageRow.path < high)) or 0)
    warn(f"{printable(str(root))}: the folder is gone (unmounted?): its {kept:,} indexed images are kept; "
         "waiting for it to come back")  # fmt: skip
    while not stop.wait(poll):
        now = _identity(root)
        if now is not None and (now == identity or _has_entries(root)):
            warn(f"{printable(str(root))}: the folder is back: catching up")
            return now
    return None
