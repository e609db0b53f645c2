"""The index of record: one SQLite file holding every indexed image and its code.

Two tables (SQLAlchemy 2.0 typed ORM):

* ``images``  one row per image file: absolute path, sha256 of its bytes, size, mtime,
  label (first-level subfolder) and the uint64 code stored as a *signed* 64-bit integer
  (:func:`semhash.hashing.to_signed64`) because SQLite integers are signed.
* ``meta``    key/value strings: schema_version, the model the index is bound to (name,
  fingerprint, bits, input shape), created_at and ``generation``, a counter bumped by every
  transaction that changes rows, so the faiss cache can tell whether it is current.

Every transaction is a real SQLite transaction (``BEGIN`` is issued explicitly rather than
left to the sqlite3 module), so reads see one consistent snapshot and an interrupted write
leaves the file exactly as the last commit left it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from sqlalchemy import (
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    Text,
    cast,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from semhash.errors import IndexError_

SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT_S = 30.0


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    """One indexed image file."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    content_hash: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(Text, nullable=True)
    code: Mapped[int] = mapped_column(Integer, index=True)  # signed 64-bit two's complement
    indexed_at: Mapped[datetime] = mapped_column(DateTime)


class MetaRow(Base):
    """One key/value pair of index metadata (values are strings; JSON where structured)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class IndexMeta:
    """The parsed ``meta`` table."""

    schema_version: int
    created_at: str
    generation: int
    model_name: str | None = None
    model_fingerprint: str | None = None
    n_bits: int | None = None
    input_shape: tuple[int, ...] | None = None

    @property
    def bound(self) -> bool:
        """True once an indexing run has tied the index to one model's encoder."""
        return self.model_fingerprint is not None and self.n_bits is not None


def utc_now() -> datetime:
    """Naive UTC timestamp (SQLite's DATETIME keeps no time zone)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class IndexDB:
    """An open index file.  Use as a context manager, or call :meth:`close`.

    :meth:`session` gives read snapshots; :meth:`write_session` takes the write lock up
    front (``BEGIN IMMEDIATE``) so two writers wait for each other instead of failing
    half-way with "database is locked".
    """

    def __init__(self, path: Path, engine: Engine):
        self.path = path
        self.engine = engine
        self._write_engine = engine.execution_options(sqlite_begin="IMMEDIATE")

    @property
    def faiss_path(self) -> Path:
        from semhash.index.faiss_store import faiss_path_for

        return faiss_path_for(self.path)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def write_session(self) -> Session:
        return Session(self._write_engine, expire_on_commit=False)

    def meta(self) -> IndexMeta:
        with self.session() as s, s.begin():
            return read_meta(s, self.path)

    def count(self) -> int:
        with self.session() as s, s.begin():
            return int(s.scalar(select(func.count()).select_from(ImageRow)) or 0)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "IndexDB":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"IndexDB({str(self.path)!r})"


# --------------------------------------------------------------------------- meta helpers
def read_meta(session: Session, path: Path | str = "index") -> IndexMeta:
    """Parse the meta table; a missing or garbled required key is a broken index."""
    values = dict(session.execute(select(MetaRow.key, MetaRow.value)).tuples().all())
    try:
        shape = values.get("input_shape")
        bits = values.get("n_bits")
        return IndexMeta(
            schema_version=int(values["schema_version"]),
            created_at=values.get("created_at", ""),
            generation=int(values.get("generation", 0)),
            model_name=values.get("model_name"),
            model_fingerprint=values.get("model_fingerprint"),
            n_bits=int(bits) if bits is not None else None,
            input_shape=tuple(int(s) for s in json.loads(shape)) if shape is not None else None,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise IndexError_(f"{path}: damaged semhash index (bad meta table: {exc!r})") from None


def set_meta(session: Session, **values: Any) -> None:
    """Upsert meta keys (values stored as str; lists/tuples/dicts as JSON)."""
    for key, value in values.items():
        if isinstance(value, (list, tuple, dict)):
            text = json.dumps(list(value) if isinstance(value, tuple) else value)
        else:
            text = str(value)
        session.merge(MetaRow(key=key, value=text))


def bump_generation(session: Session) -> None:
    """Increment ``generation`` inside the caller's transaction (done in SQL, so it is
    atomic with the row changes it accounts for)."""
    session.execute(
        update(MetaRow)
        .where(MetaRow.key == "generation")
        .values(value=cast(cast(MetaRow.value, Integer) + 1, String))
    )


def bind_model(
    session: Session, *, name: str, fingerprint: str, n_bits: int, input_shape: tuple[int, ...] | list[int]
) -> None:
    """Tie the index to one encoder: every code in it must come from this fingerprint."""
    set_meta(
        session,
        model_name=name,
        model_fingerprint=fingerprint,
        n_bits=int(n_bits),
        input_shape=[int(s) for s in input_shape],
    )


def delete_all_rows(session: Session) -> int:
    """Drop every image row (used by --rebuild); returns how many there were."""
    n = int(session.scalar(select(func.count()).select_from(ImageRow)) or 0)
    session.execute(delete(ImageRow))
    return n


def chunked(items: list, size: int = 500) -> Iterator[list]:
    """Slices of at most ``size``: keeps ``IN (...)`` lists under SQLite's variable limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- opening
def _make_engine(path: Path, create: bool) -> Engine:
    # A creator (not a URL) so that any character in the path works, and mode=rw so that a
    # file deleted between our checks and the connect is not silently re-created empty.
    uri = f"file:{quote(str(path))}?mode={'rwc' if create else 'rw'}"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=_BUSY_TIMEOUT_S, check_same_thread=False)

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # real transactions: consistent reads, atomic writes
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

    return engine


def _initialise(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    with Session(engine.execution_options(sqlite_begin="IMMEDIATE")) as s, s.begin():
        if s.get(MetaRow, "schema_version") is None:
            set_meta(
                s,
                schema_version=SCHEMA_VERSION,
                created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                generation=0,
            )


def open_index(path: str | Path, create: bool = False) -> IndexDB:
    """Open (or with ``create=True`` create) a semhash index file.

    Refuses, with one-line :class:`IndexError_` naming the file and the cause, anything that
    is not a SQLite file, a SQLite file without semhash tables, and a schema version newer
    than this code understands: guessing at such a file could corrupt someone's data.
    """
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise IndexError_(f"{path}: is a folder, not an index file")
    if not path.exists():
        if not create:
            raise IndexError_(f"{path}: no index here: run 'semhash index DIR' first")
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise IndexError_(f"{path}: cannot read index ({exc.strerror or exc})") from None
        if head and head != SQLITE_MAGIC:
            raise IndexError_(f"{path}: not a semhash index (not a SQLite database)")
        if not head and not create:
            raise IndexError_(f"{path}: not a semhash index (empty file)")

    engine = _make_engine(path, create)
    try:
        tables = set(inspect(engine).get_table_names())
        if not tables and create:
            _initialise(engine)
            tables = set(inspect(engine).get_table_names())
        if not {"images", "meta"} <= tables:
            raise IndexError_(f"{path}: not a semhash index (SQLite file without semhash tables)")
        with Session(engine) as s, s.begin():
            raw = s.scalar(select(MetaRow.value).where(MetaRow.key == "schema_version"))
        try:
            version = int(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise IndexError_(f"{path}: damaged semhash index (schema_version {raw!r})") from None
        if version > SCHEMA_VERSION:
            raise IndexError_(
                f"{path}: index schema version {version} is newer than this semhash supports "
                f"({SCHEMA_VERSION}): upgrade semhash"
            )
        if version < 1:
            raise IndexError_(f"{path}: unknown index schema version {version}")
    except IndexError_:
        engine.dispose()
        raise
    except (DBAPIError, SQLAlchemyError, sqlite3.Error) as exc:
        engine.dispose()
        cause = getattr(exc, "orig", None) or exc
        raise IndexError_(f"{path}: cannot open index ({cause})") from None
    return IndexDB(path, engine)
