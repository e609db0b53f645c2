"""Looking after an index: drop the rows of files or folders, find rows whose file is gone,
check the file's integrity.

`semhash index DIR` already drops rows of files deleted from DIR.  What it cannot do is drop
the rows of a folder that is gone or emptied (there is nothing to walk), or find stale rows
anywhere in the index: that is :func:`remove_paths`.  :func:`check_index` is what
``semhash status --check`` runs.  Both stat files only when asked for (``missing=True``, or a
check): that is one stat per row, which the everyday commands never pay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import delete, or_, select

from semhash.errors import IndexDamagedError, IndexError_
from semhash.index.db import (
    DAMAGED_HINT,
    ImageRow,
    IndexDB,
    bump_generation,
    chunked,
    database_errors,
    key_range,
    open_index,
)
from semhash.index.indexer import file_is_gone
from semhash.index.pathkeys import path_key
from semhash.index.search import refresh_lookup

_PAGE = 5000  # rows read per transaction when walking the whole index


@dataclass
class RemoveSummary:
    """What :func:`remove_paths` did."""

    removed: int
    total: int  # rows left in the index
    by_path: dict[str, int] = field(default_factory=dict)  # path key -> rows removed under it
    index_path: Path | None = None


def _absolute(path: str | Path) -> Path:
    """As `semhash index` names files: absolute, symlinks resolved (for what still exists)."""
    return Path(path).expanduser().resolve()


def _under(key: str):
    low, high = key_range(key)
    return or_(ImageRow.path == key, (ImageRow.path >= low) & (ImageRow.path < high))


def _iter_rows(db: IndexDB, where=None) -> Iterator[tuple[int, str]]:
    """(id, path key) of every row (matching ``where``), a page per short read transaction,
    so a long walk never holds a snapshot or much memory."""
    last = -1
    while True:
        stmt = select(ImageRow.id, ImageRow.path).where(ImageRow.id > last).order_by(ImageRow.id).limit(_PAGE)
        if where is not None:
            stmt = stmt.where(where)
        with db.session() as s, s.begin():
            page = s.execute(stmt).tuples().all()
        if not page:
            return
        yield from page
        last = page[-1][0]


def remove_paths(
    index_path: str | Path,
    paths: Sequence[str | Path] = (),
    *,
    missing: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> RemoveSummary:
    """Drop the rows of files, or of everything under folders, whether or not they still exist.

    Each path is made absolute with symlinks resolved, as `semhash index` names files.  A path
    with nothing indexed under it is an error, and then nothing is removed.  With ``missing``
    only rows whose file is gone are dropped (under ``paths``, or anywhere when none are
    given): one stat per row, done outside the write lock; each candidate is checked again
    inside it.  ``on_progress(n)`` is called as rows are checked.
    """
    if not paths and not missing:
        raise ValueError("give paths to remove, or missing=True")
    keys = [path_key(_absolute(p)) for p in paths]
    with open_index(index_path) as db, database_errors(db.path):
        by_path: dict[str, int] = {}
        if missing:
            candidates: list[tuple[int, str]] = []
            for where in [_under(k) for k in keys] or [None]:
                for n, (row_id, key) in enumerate(_iter_rows(db, where), 1):
                    if file_is_gone(key):
                        candidates.append((row_id, key))
                    if on_progress is not None and n % _PAGE == 0:
                        on_progress(_PAGE)
            with db.write_session() as s, s.begin():
                doomed = [(i, k) for i, k in candidates if file_is_gone(k)]
                for chunk in chunked([i for i, _ in doomed]):
                    s.execute(delete(ImageRow).where(ImageRow.id.in_(chunk)))
                for key in keys:
                    low, high = key_range(key)
                    by_path[key] = sum(1 for _, k in doomed if k == key or low <= k < high)
                if doomed:
                    bump_generation(s)
            removed = len(doomed)
        else:
            with db.write_session() as s, s.begin():
                for key in keys:
                    n = s.execute(delete(ImageRow).where(_under(key))).rowcount
                    if n == 0:  # the whole transaction rolls back: nothing removed
                        raise IndexError_(f"{key}: nothing in the index under this path ({db.path})")
                    by_path[key] = by_path.get(key, 0) + n
                bump_generation(s)
            removed = sum(by_path.values())
        total = db.count()
        if removed:
            refresh_lookup(db)  # leave the cache current, as `semhash index` does
    return RemoveSummary(removed=removed, total=total, by_path=by_path, index_path=db.path)


def check_index(
    index_path: str | Path, *, files: bool = True, examples: int = 10, on_progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """SQLite's ``PRAGMA integrity_check`` over the whole file, then (``files``) one stat per
    row to count rows whose file is gone.  Raises IndexDamagedError, one line, when the file
    is damaged."""
    with open_index(index_path) as db, database_errors(db.path):
        integrity = "not checked (not SQLite)"
        if db.engine.dialect.name == "sqlite":
            with db.session() as s, s.begin():
                problems = [
                    " ".join(str(r[0]).split())  # SQLite's own lines, one line each
                    for r in s.connection().exec_driver_sql("PRAGMA integrity_check(10)")
                ]
            if problems != ["ok"]:
                more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
                raise IndexDamagedError(
                    f"{db.path}: the index is damaged (integrity check: {problems[0]}{more}): {DAMAGED_HINT}"
                )
            integrity = "ok"
        result: dict[str, Any] = {"integrity": integrity}
        if files:
            checked, n_gone, shown = 0, 0, []
            for _, key in _iter_rows(db):
                checked += 1
                if file_is_gone(key):
                    n_gone += 1
                    if len(shown) < examples:
                        shown.append(key)
                if on_progress is not None and checked % _PAGE == 0:
                    on_progress(_PAGE)
            result.update({"checked": checked, "missing": n_gone, "missing_examples": shown})
    return result



def move_rows(db: IndexDB, moves: Sequence[tuple[str, str, bool]]) -> int:
    """Rows follow files and folders that were renamed (``semhash index --watch``): each
    ``(old key, new key, is_folder)`` changes the path of the row (a folder's: of every row
    under it) and nothing else, so its id, codes and label stay, and so do the decisions
    that name it (their members and keeper are renamed, their group key made again).  A row
    already at a new key (a file renamed over another) is dropped first.  One transaction;
    -> rows moved."""
    import json

    from sqlalchemy import insert, update

    from semhash.duplicates import group_key
    from semhash.index.db import DecisionRow

    renamed: dict[str, str] = {}  # the key a row had before the first move -> its key now
    origin: dict[str, str] = {}  # the other way (a file renamed twice: a -> b -> c is a -> c)
    with db.write_session() as s, s.begin():
        for old, new, is_folder in moves:
            if old == new:
                continue
            if is_folder:
                low, high = key_range(old)
                rows = s.execute(select(ImageRow.id, ImageRow.path).where(ImageRow.path >= low, ImageRow.path < high)).tuples().all()
                if not rows:
                    continue
                new_low, new_high = key_range(new)
                s.execute(delete(ImageRow).where(ImageRow.path >= new_low, ImageRow.path < new_high))
                changes = [{"id": i, "path": new + key[len(old):]} for i, key in rows]
            else:
                row_id = s.scalar(select(ImageRow.id).where(ImageRow.path == old))
                if row_id is None:
                    continue
                s.execute(delete(ImageRow).where(ImageRow.path == new))
                changes = [{"id": row_id, "path": new}]
                rows = [(row_id, old)]
            for chunk in chunked(changes):
                s.execute(update(ImageRow), chunk)
            for (_, key), change in zip(rows, changes):
                first = origin.pop(key, key)
                renamed[first] = origin_key = change["path"]
                origin[origin_key] = first
        if not renamed:
            return 0
        if db.has_near_tier:  # the decisions table is schema 3's
            for key, decision, members, keeper, decided_at in s.execute(
                select(DecisionRow.group_key, DecisionRow.decision, DecisionRow.members, DecisionRow.keeper, DecisionRow.decided_at)
            ).tuples().all():  # fmt: skip
                paths = json.loads(members)
                if not any(p in renamed for p in paths):
                    continue
                paths = sorted(renamed.get(p, p) for p in paths)
                s.execute(delete(DecisionRow).where(DecisionRow.group_key.in_([key, group_key(paths)])))
                s.execute(insert(DecisionRow), [{"group_key": group_key(paths), "decision": decision, "members": json.dumps(paths),
                                                 "keeper": renamed.get(keeper, keeper) if keeper else keeper,
                                                 "decided_at": decided_at}])  # fmt: skip
        bump_generation(s)
    return len(renamed)
