"""The index of record: one SQLite file, or one PostgreSQL database, holding every indexed
image and its code.  One code path for both (:func:`open_index` takes a file or a
``postgresql+psycopg://user@host/db`` URL, see :class:`IndexLocation`).

Three tables (SQLAlchemy 2.0 typed ORM):

* ``images``  one row per image file: the path's key (:mod:`semhash.index.pathkeys`: the
  path as text, undecodable bytes written ``\\xNN``), sha256 of its bytes (the exact tier),
  size, mtime, pixel width and height, capture time, camera and format, label (first-level subfolder's name, same scheme),
  the near-duplicate tier's code (``near_code``: the image's PDQ code of
  :mod:`semhash.perceptual`, 32 bytes, the one the near lookup indexes; ``near_variants``:
  the codes of its 7 rotations and mirrors, 224 bytes; ``near_quality``) and the
  model's uint64 code (the similar tier) stored as a *signed* 64-bit integer
  (:func:`semhash.hashing.to_signed64`) because SQLite integers are signed.
* ``decisions`` what a user decided about a group of duplicates (``semhash duplicates``,
  the review page): keyed by the group's members (sorted path keys), so it survives
  re-indexing; a group that gains a member is a new group.
* ``meta``    key/value strings: schema_version, the model the index is bound to (name,
  fingerprint, bits, input shape), created_at and ``generation``, a counter bumped by every
  transaction that changes rows, so the lookup cache can tell whether it is current.

Every transaction is a real SQLite transaction (``BEGIN`` is issued explicitly rather than
left to the sqlite3 module), so reads see one consistent snapshot and an interrupted write
leaves the file exactly as the last commit left it.  The file is in WAL mode: readers never
block the writer nor the writer readers; two writers queue on the write lock (``BEGIN
IMMEDIATE``) for up to ``_BUSY_TIMEOUT_S``.

Schema versions: 1 stored paths as plain text (a name that is not UTF-8 could not be stored);
2 stores path keys; 3 adds the near tier, pixel sizes and decisions (rows indexed before get
their near codes on the next ``semhash index`` run); 4 adds what a photo says of itself
(``taken_at``: EXIF capture time, ``camera``, ``format``; filled in as files are hashed
again, which the next run does for every row without them).  An older file is upgraded in one
transaction when opened; a newer version than this code knows is refused.  Every database error that reaches a caller becomes
one :class:`IndexError_` line naming the file (:func:`database_errors`).

PostgreSQL: reads run in REPEATABLE READ (one snapshot per transaction, as SQLite's ``BEGIN``
gives); a write transaction takes a transaction-level advisory lock first, so writers queue
exactly as on SQLite's ``BEGIN IMMEDIATE`` (schema creation included, so two first writers
create it once), and runs in READ COMMITTED so it sees what the writer before it committed.
``path`` and ``label`` are ``COLLATE "C"`` (bytewise, as SQLite compares TEXT), so a folder's
keys stay one range there too.  The derived cache (the lookup) of a database index lives
in a folder of its own (:attr:`IndexLocation.cache_dir`), since there is no file to put
it beside.  A password in a URL never appears in a message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import quote

from sqlalchemy import (
    BigInteger,
    DateTime,
    Engine,
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
    cast,
    create_engine,
    delete,
    event,
    func,
    inspect,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from semhash.errors import IndexBusyError, IndexDamagedError, IndexError_
from semhash.index.pathkeys import printable
from semhash.lifetime import interruptible, remove_abandoned, reraise_interrupt

SCHEMA_VERSION = 4
_BUSY_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 10
# pg_advisory_xact_lock key of semhash's write lock (advisory locks are per database)
_PG_WRITE_LOCK = 0x73656D68617368  # "semhash"

# 64-bit columns: BIGINT on PostgreSQL; on SQLite INTEGER (which holds 64 bits), and the id
# must stay exactly INTEGER PRIMARY KEY there so it aliases the rowid
_Int64 = BigInteger().with_variant(Integer(), "sqlite")
# bytewise order on PostgreSQL, as SQLite compares TEXT: folder prefixes stay one key range
_Key = Text().with_variant(Text(collation="C"), "postgresql")


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    """One indexed image file."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(_Int64, primary_key=True)
    path: Mapped[str] = mapped_column(_Key, unique=True)
    content_hash: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(_Int64)
    mtime: Mapped[float] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(_Key, nullable=True)
    code: Mapped[int] = mapped_column(_Int64, index=True)  # signed 64-bit two's complement
    indexed_at: Mapped[datetime] = mapped_column(DateTime)
    # schema 3: NULL on rows indexed before (filled in by the next index run) and on imported
    # rows that brought no near code
    near_code: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    near_variants: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    near_quality: Mapped[int | None] = mapped_column(Integer, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # schema 4: what the photo says of itself (semhash.exif); NULL where it says nothing, on
    # rows indexed before (filled in when the file is next hashed) and on imports without them
    taken_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # EXIF DateTimeOriginal, POSIX seconds
    camera: Mapped[str | None] = mapped_column(Text, nullable=True)  # EXIF make and model
    format: Mapped[str | None] = mapped_column(Text, nullable=True)  # "JPEG", "HEIF", "PNG", a RAW file's "DNG", ...


#: the columns schema 3 added to ``images`` (an upgrade adds them in place)
V3_COLUMNS = ("near_code", "near_variants", "near_quality", "width", "height")
#: the columns schema 4 added
V4_COLUMNS = ("taken_at", "camera", "format")


class DecisionRow(Base):
    """A user's decision about one group of duplicates: ``not_duplicates`` (the group never
    comes back), ``keep`` (``keeper`` is the file to keep) or ``skip``."""

    __tablename__ = "decisions"

    group_key: Mapped[str] = mapped_column(Text, primary_key=True)  # sha256 of the sorted members
    decision: Mapped[str] = mapped_column(Text)
    members: Mapped[str] = mapped_column(Text)  # JSON list of path keys, sorted
    keeper: Mapped[str | None] = mapped_column(_Key, nullable=True)
    decided_at: Mapped[datetime] = mapped_column(DateTime)


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
    near_model: str | None = None  # JSON of the near tier's model (semhash.near_codes); None: PDQ

    @property
    def near_scheme(self):
        """How this index's near codes are made (:class:`semhash.near_codes.NearScheme`)."""
        from semhash.near_codes import NearScheme

        return NearScheme.from_meta(self.near_model)

    @property
    def bound(self) -> bool:
        """True once an indexing run has tied the index to one model's encoder."""
        return self.model_fingerprint is not None and self.n_bits is not None


def utc_now() -> datetime:
    """Naive UTC timestamp (SQLite's DATETIME keeps no time zone)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DATABASE_SCHEMES = ("postgresql", "postgres")


def is_database_url(text: str | os.PathLike) -> bool:
    """Whether an ``--index`` value is a database URL (``scheme://...``) rather than a file."""
    return isinstance(text, str) and bool(_URL_RE.match(text))


@dataclass(frozen=True)
class IndexLocation:
    """Where an index lives: a SQLite file, or a PostgreSQL database named by an SQLAlchemy
    URL (``postgresql+psycopg://user:password@host:port/dbname``).

    ``str()`` is what messages print: the file, or the URL without its password.  A database
    index keeps its derived caches in ``cache_dir``: under ``cache_root`` (default: the
    workspace's ``cache`` folder), one folder per database, named from the URL without the
    password.
    """

    file: Path | None = None
    url: URL | None = None
    cache_root: Path | None = None

    @classmethod
    def parse(cls, value: "str | os.PathLike | IndexLocation", cache_root: str | Path | None = None) -> "IndexLocation":
        if isinstance(value, IndexLocation):
            if cache_root is not None and value.url is not None and value.cache_root is None:
                return cls(url=value.url, cache_root=Path(cache_root))
            return value
        if not is_database_url(value):
            return cls(file=Path(value).expanduser().absolute())
        text_value = str(value)
        scheme = text_value.split("://", 1)[0]
        if text_value.split("://", 1)[1].split("/", 1)[0].count("@") > 1:  # user:p@ss@host: which @ ends the password?
            raise IndexError_(
                f"{_redact_text(text_value)}: the user or password in this URL contains '@': write it as %40"
            )
        try:
            url = make_url(text_value)
        except (ArgumentError, ValueError):
            raise IndexError_(f"{_redact_text(text_value)}: not a valid database URL") from None
        if url.get_backend_name() not in _DATABASE_SCHEMES:
            raise IndexError_(
                f"{cls(url=url)}: unsupported index location {scheme}://: use a SQLite file path "
                "or a postgresql+psycopg://user@host/dbname URL"
            )
        if url.get_backend_name() == "postgres" or url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")  # psycopg 3, the driver semhash installs
        if not url.database:
            raise IndexError_(f"{cls(url=url)}: the URL names no database (postgresql+psycopg://user@host/dbname)")
        return cls(url=url, cache_root=Path(cache_root) if cache_root is not None else None)

    @property
    def is_url(self) -> bool:
        return self.url is not None

    @property
    def password(self) -> str | None:
        """The password in the URL's user part (else in a ``?password=`` parameter)."""
        secrets = self.secrets
        return secrets[0] if secrets else None

    @property
    def secrets(self) -> list[str]:
        """Every secret the URL carries: the password of its user part and the value of every
        query parameter whose name says password (libpq's ``password``, ``sslpassword``)."""
        if self.url is None:
            return []
        found = [str(self.url.password)] if self.url.password else []
        for key, value in self.url.query.items():
            if "password" in key.lower():
                found += [value] if isinstance(value, str) else list(value)
        return [secret for secret in found if secret]

    @property
    def cache_dir(self) -> Path:
        """The folder of this index's derived caches: beside the file, or for a database
        ``<cache_root>/<dialect>-<host>-<port>-<db>-<user>-<hash>``."""
        if self.file is not None:
            return self.file.parent
        from semhash.workspace import resolve_home

        url = self.url
        root = self.cache_root if self.cache_root is not None else resolve_home() / "cache"
        parts = [url.get_backend_name(), url.host or "socket", str(url.port or ""), url.database or "", url.username or ""]
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(p for p in parts if p))[:80]
        digest = hashlib.sha256(str(self).encode()).hexdigest()[:8]  # query string, socket path
        return Path(root).expanduser().absolute() / f"{name}-{digest}"

    @property
    def cache_base(self) -> Path:
        """The path derived cache files are named after (``index.lookup`` from it)."""
        return self.file if self.file is not None else self.cache_dir / "index.sqlite"

    def to_config(self) -> dict[str, str | None]:
        """What another process needs to open the same index, caches included (the URL with
        its password: for the environment of a child process, never for a message)."""
        if self.file is not None:
            return {"index": str(self.file), "cache_root": None}
        return {
            "index": self.url.render_as_string(hide_password=False),  # type: ignore[union-attr]
            "cache_root": str(self.cache_dir.parent),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "IndexLocation":
        return cls.parse(config["index"], cache_root=config.get("cache_root"))

    def scrub(self, message: str) -> str:
        """``message`` with every secret of this location (plain and URL-quoted) taken out:
        what every message that may quote the URL or a driver's error goes through."""
        for password in sorted(self.secrets, key=len, reverse=True):
            for secret in {password, quote(password, safe=""), quote(password)}:
                message = message.replace(secret, "***")
        return message

    def __str__(self) -> str:
        """The file, or the URL with no secret in it (its password and password parameters
        shown as ***): what messages, `status` and `--json` print."""
        if self.file is not None:
            return str(self.file)
        url = self.url
        assert url is not None
        query = {key: ("***" if "password" in key.lower() else value) for key, value in url.query.items()}
        shown = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, query)
        return shown.render_as_string(hide_password=False).replace("=%2A%2A%2A", "=***")

    def __fspath__(self) -> str:
        if self.file is None:
            raise TypeError(f"{self} is a database, not a file")
        return str(self.file)


def _redact_text(text_value: str) -> str:
    """A URL that could not be parsed: everything before the last '@' of its host part, and
    every password parameter, hidden."""
    scheme, _, rest = text_value.partition("://")
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    path = re.sub(r"([?&][^=&]*password[^=&]*=)[^&]*", r"\1***", path, flags=re.I)
    return f"{scheme}://{netloc}{slash}{path}"


class IndexDB:
    """An open index.  Use as a context manager, or call :meth:`close`.

    ``path`` names the index in messages: the file's :class:`~pathlib.Path` for SQLite, the
    :class:`IndexLocation` (printed without password) for a database.  :meth:`session` gives
    read snapshots; :meth:`write_session` takes the write lock up front (``BEGIN IMMEDIATE``
    on SQLite, an advisory lock on PostgreSQL) so two writers wait for each other instead of
    failing half-way with "database is locked".
    """

    def __init__(self, path: "Path | IndexLocation", engine: Engine, schema_version: int = SCHEMA_VERSION):
        self.location = IndexLocation.parse(path)
        # older only for an index on read-only media, read as it is: no near tier there
        self.schema_version = schema_version
        self.path = self.location if self.location.is_url else self.location.file
        self.engine = engine
        self._write_engine = _writer(engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def cache_base(self) -> Path:
        """Derived cache files are named after this path (the SQLite file itself, or a name
        in the database's cache folder)."""
        return self.location.cache_base

    @property
    def lookup_path(self) -> Path:
        from semhash.index.search import lookup_path_for

        return lookup_path_for(self.cache_base)

    def cache_file_mode(self) -> int:
        """Permission bits for a derived cache file: the SQLite file's own (whoever can read
        the index can read its cache); for a database, owner-only, in a cache folder made
        here when missing.  Raises OSError when the folder cannot be made."""
        if self.location.file is not None:
            return stat.S_IMODE(self.location.file.stat().st_mode)
        self.location.cache_dir.mkdir(parents=True, exist_ok=True)
        return 0o600

    @property
    def has_near_tier(self) -> bool:
        """Whether the record has the near tier's columns (schema 3)."""
        return self.schema_version >= 3

    @property
    def has_photo_facts(self) -> bool:
        """Schema 4's capture time, camera and format columns are there (an older index read
        as it is, on read-only media, has none)."""
        return self.schema_version >= 4

    def require_near_tier(self) -> None:
        if not self.has_near_tier:
            raise IndexError_(
                f"{self.path}: this index (schema version {self.schema_version}, read-only) predates the "
                "near-duplicate tier: run `semhash index` on it once with write access"
            )

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
        meta = IndexMeta(
            schema_version=int(values["schema_version"]),
            created_at=values.get("created_at", ""),
            generation=int(values.get("generation", 0)),
            model_name=values.get("model_name"),
            model_fingerprint=values.get("model_fingerprint"),
            n_bits=int(bits) if bits is not None else None,
            input_shape=tuple(int(s) for s in json.loads(shape)) if shape is not None else None,
            near_model=values.get("near_model") or None,
        )
        meta.near_scheme  # a malformed near model is a damaged meta table too
        return meta
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
        .values(value=cast(cast(MetaRow.value, BigInteger) + 1, String))
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


def bind_near_model(session: Session, scheme) -> None:
    """Record how the near codes are made (a :class:`semhash.near_codes.NearScheme`; PDQ
    removes the key)."""
    value = scheme.to_meta()
    if value is None:
        session.execute(delete(MetaRow).where(MetaRow.key == "near_model"))
    else:
        set_meta(session, near_model=value)


def delete_all_rows(session: Session) -> int:
    """Drop every image row (used by --rebuild); returns how many there were."""
    n = int(session.scalar(select(func.count()).select_from(ImageRow)) or 0)
    session.execute(delete(ImageRow))
    return n


def chunked(items: list, size: int = 500) -> Iterator[list]:
    """Slices of at most ``size``: keeps ``IN (...)`` lists under SQLite's variable limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def key_range(key: str) -> tuple[str, str]:
    """[low, high) string bounds of every key under the folder whose key is ``key``.  A range
    on the UNIQUE path index rather than LIKE, which would treat '_' and '%' in folder names
    as wildcards.  Keys keep folder prefixes (see pathkeys), SQLite compares TEXT bytewise,
    which orders UTF-8 like Python orders code points, and '0' follows '/'."""
    low = key if key.endswith("/") else key + "/"
    return low, low[:-1] + chr(ord("/") + 1)


def upsert_images(session: Session, rows: Sequence[dict], update_columns: Sequence[str]) -> None:
    """Insert image rows; where a row with the same path is already there (another indexer
    got there first), set only ``update_columns`` on it.  Keyed on the UNIQUE path, inside
    the caller's transaction, so concurrent indexers never fail on or duplicate a path.
    ON CONFLICT ... DO UPDATE exists in SQLite and PostgreSQL alike."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    table = ImageRow.__table__
    stmt = dialect_insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.path], set_={name: stmt.excluded[name] for name in update_columns}
    )
    session.connection().execute(stmt, list(rows))


# --------------------------------------------------------------------------- errors
# SQLite primary result codes (extended codes keep these in their low byte)
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
DAMAGED_HINT = "restore a backup, or rebuild it with `semhash index DIR --rebuild`"


def _sqlite_code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _nearly_full(path: Path | None) -> bool:
    """Whether the file system holding ``path`` has less than 1 MiB free."""
    if path is None:
        return False
    try:
        return shutil.disk_usage(Path(path).parent).free < 1 << 20
    except OSError:
        return False


def damage_confirmed(path: Path) -> bool:
    """Whether SQLite's quick check (every page and index, without comparing index entries
    to rows) finds ``path`` damaged; False when the file is intact or cannot be checked now
    (gone, busy).  Its own read-only connection: SQLite keeps the process's locks on the file
    when it closes it, as a plain open()/close() would not."""
    if not path.is_file():
        return False
    try:
        con = sqlite3.connect(f"file:{quote(os.fsencode(path))}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_S)
        try:
            result = con.execute("PRAGMA quick_check(1)").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return _sqlite_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return result != [("ok",)]


def is_damage(exc: BaseException) -> bool:
    """Whether a database error means the file itself is damaged."""
    return isinstance(exc, IndexDamagedError) or _sqlite_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _pg_cause_kind(exc: BaseException) -> str | None:
    """What a PostgreSQL (psycopg) error means for the user, from its SQLSTATE or, for a
    failed connection (libpq reports those without one), its message."""
    orig = getattr(exc, "orig", None) or exc
    if type(orig).__module__.split(".")[0] != "psycopg":
        return None
    state = getattr(orig, "sqlstate", None) or ""
    message = str(orig)
    if state in ("28P01", "28000") or "password authentication failed" in message or "no password supplied" in message:
        return "login"
    if state == "3D000" or ("database" in message and "does not exist" in message):
        return "no database"
    if (state.startswith("08") or state in ("57P01", "57P02", "57P03") or "connection failed" in message
            or "could not connect" in message or "timeout expired" in message or "server closed the connection" in message):
        return "connect"  # fmt: skip
    if state in ("42501", "25006"):
        return "read-only"
    if state == "53100":
        return "full"
    if state.startswith("55P03") or state.startswith("40"):
        return "locked"
    return "other"


def index_error(path: "Path | str | IndexLocation", exc: BaseException) -> IndexError_:
    """One line naming the index file, the cause, and what to do about it."""
    location = path if isinstance(path, IndexLocation) else None
    path = printable(str(path))
    orig = getattr(exc, "orig", None) or exc
    cause = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if location is not None:
        cause = location.scrub(cause)
    kind = _pg_cause_kind(exc)
    if kind == "connect":  # unavailable, perhaps for a moment (a restart): the web answers 503
        return IndexBusyError(f"{path}: cannot connect to the database server ({cause}): is it running, and are host and port right?")
    if kind == "login":
        return IndexError_(f"{path}: the database server refused the login ({cause}): check the user name and password")
    if kind == "no database":
        return IndexError_(f"{path}: no such database on the server ({cause}): create it first (createdb NAME)")
    if kind == "read-only":
        return IndexError_(f"{path}: cannot write to the index: permission denied ({cause})")
    if kind == "full":
        return IndexError_(
            f"{path}: cannot write to the index: the database server's disk is full ({cause}); "
            "everything committed before is kept"
        )
    if kind == "locked":
        return IndexError_(f"{path}: the index is busy ({cause}): try again")
    code = _sqlite_code(exc)
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        # "damaged" means damaged: a read can also fail this way for a moment, so SQLite's own
        # check of the file decides what to say
        file = None if location is not None and location.is_url else Path(location.file if location else path)
        if file is not None and not damage_confirmed(file):
            return IndexBusyError(f"{path}: a read of the index failed ({cause}), but the file checks out intact: try again")
        return IndexDamagedError(f"{path}: the index is damaged ({cause}): {DAMAGED_HINT}")
    if code == _SQLITE_READONLY:
        return IndexError_(
            f"{path}: cannot write to the index: it is read-only ({cause}); "
            "check the permissions of the file and of its folder"
        )
    if code == _SQLITE_FULL:
        return IndexError_(
            f"{path}: cannot write to the index: the disk is full ({cause}); "
            "everything committed before is kept: free some space and run again"
        )
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return IndexError_(
            f"{path}: the index is locked by another process ({cause}; waited {_BUSY_TIMEOUT_S:g} s): "
            "try again when it has finished"
        )
    if code == _SQLITE_CANTOPEN:
        return IndexError_(f"{path}: cannot open the index ({cause})")
    if code == _SQLITE_IOERR and _nearly_full(location.file if location is not None else Path(path)):
        # SQLite reports some writes that found no space (a WAL frame, a temporary table) as
        # I/O errors: say what the user can act on
        return IndexError_(
            f"{path}: cannot write to the index: the disk is full ({cause}); "
            "everything committed before is kept: free some space and run again"
        )
    if code == _SQLITE_IOERR:
        return IndexError_(f"{path}: input/output error on the index ({cause})")
    return IndexError_(f"{path}: index database error ({cause})")


@contextmanager
def database_errors(path: "Path | str | IndexLocation") -> Iterator[None]:
    """Turn any database error inside the block into one :class:`IndexError_` line.  Library
    entry points that touch the index wrap their work in this; nothing else catches them."""
    try:
        yield
    except (SQLAlchemyError, sqlite3.Error) as exc:
        reraise_interrupt(exc)  # a Ctrl-C that stopped a statement is a Ctrl-C
        raise index_error(path, exc) from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "psycopg":  # a driver error outside SQLAlchemy
            raise
        raise index_error(path, exc) from None


# --------------------------------------------------------------------------- opening
def _make_engine(path: Path, create: bool, immutable: bool = False) -> Engine:
    # A creator (not a URL) so that any byte in the path works, and mode=rw so that a file
    # deleted between our checks and the connect is not silently re-created empty.
    # immutable=1 (read-only, no locks, no WAL) is only for a WAL index in a folder we
    # cannot write, where SQLite could not create the -shm file a WAL reader needs.
    params = "mode=ro&immutable=1" if immutable else f"mode={'rwc' if create else 'rw'}"
    uri = f"file:{quote(os.fsencode(path))}?{params}"

    def connect() -> sqlite3.Connection:
        # the timeout is read at each connect, so tests can shorten it
        return interruptible(
            sqlite3.connect(uri, uri=True, isolation_level=None, timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
        )

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # real transactions: consistent reads, atomic writes
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

    return engine


def _make_database_engine(location: IndexLocation) -> Engine:
    """A PostgreSQL engine: reads in REPEATABLE READ (one snapshot per transaction); a write
    transaction (:func:`_writer`) takes semhash's advisory lock first."""
    engine = create_engine(
        location.url,  # type: ignore[arg-type]
        isolation_level="REPEATABLE READ",
        hide_parameters=True,
        pool_pre_ping=True,  # a connection the server dropped (a restart) is replaced, not used
        pool_size=2,
        max_overflow=8,
        connect_args={"connect_timeout": _CONNECT_TIMEOUT_S, "application_name": "semhash"},
    )

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # writers queue here, as on SQLite's BEGIN IMMEDIATE
        if conn.get_execution_options().get("semhash_write"):
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_WRITE_LOCK})

    return engine


def _writer(engine: Engine) -> Engine:
    """The engine a write transaction runs on: it takes the write lock before anything else."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine.execution_options(isolation_level="READ COMMITTED", semhash_write=True)


def _read_version(engine: Engine) -> Any:
    with Session(engine) as s, s.begin():
        return s.scalar(select(MetaRow.value).where(MetaRow.key == "schema_version"))


def _initialise(engine: Engine) -> None:
    """Create the tables and meta of a new index.  Inside the write lock, so two processes
    creating the same new index at once do it exactly once."""
    with Session(_writer(engine)) as s, s.begin():
        Base.metadata.create_all(s.connection())
        if s.get(MetaRow, "schema_version") is None:
            set_meta(
                s,
                schema_version=SCHEMA_VERSION,
                created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                generation=0,
            )


def _ensure_wal(engine: Engine) -> None:
    """Switch the file to WAL (persistent; a no-op once done).  Not possible inside a
    transaction, on a read-only file, or while another process holds it: then it stays as
    it is and the next writer that opens it tries again."""
    raw = engine.raw_connection()
    try:
        con = raw.driver_connection
        if str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass
    finally:
        raw.close()


# Rows whose text changes under the version-2 key scheme: version 1 stored paths as they
# were, and only a backslash (doubled in keys) reads differently.  replace() is portable SQL.
def _escaped(column):
    return func.replace(column, "\\", "\\\\", type_=Text)


def _v1_rows_to_rewrite(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(ImageRow).where(
                (_escaped(ImageRow.path) != ImageRow.path) | (_escaped(ImageRow.label) != ImageRow.label)
            )
        )
        or 0
    )


def _upgrade(engine: Engine) -> None:
    """Bring an older index to :data:`SCHEMA_VERSION` in one transaction: version 1 -> 2
    rewrites the few paths and labels whose text differs as keys (those with a backslash);
    2 -> 3 adds the near-tier and pixel-size columns (NULL until the next index run) and the
    decisions table; 3 -> 4 the capture time, camera and format columns (NULL: the rows keep
    their codes, so only files hashed again get them).  Sets schema_version and bumps the
    generation."""
    with Session(_writer(engine)) as s, s.begin():
        version = int(s.scalar(select(MetaRow.value).where(MetaRow.key == "schema_version")))
        if version >= SCHEMA_VERSION:
            return  # another process upgraded it while we waited for the lock
        if version == 1:
            _paths_to_keys(s)
        conn = s.connection()
        present = {c["name"] for c in inspect(conn).get_columns(ImageRow.__tablename__)}
        table = ImageRow.__table__
        for name in (*V3_COLUMNS, *V4_COLUMNS):
            if name not in present:
                column_type = table.c[name].type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {column_type}")
        Base.metadata.create_all(conn, tables=[DecisionRow.__table__])
        s.execute(update(MetaRow).where(MetaRow.key == "schema_version").values(value=str(SCHEMA_VERSION)))
        bump_generation(s)


def _paths_to_keys(s: Session) -> None:
    """Version 1 -> 2: paths and labels as keys (only a backslash reads differently)."""
    changed = _escaped(ImageRow.path) != ImageRow.path
    # two steps so that no intermediate path collides with another row's (UNIQUE): first
    # every changed path gets a '?' prefix (version-1 paths are absolute, so none starts
    # with '?'), then the prefix goes.
    s.execute(update(ImageRow).where(changed).values(path=literal("?", Text).concat(_escaped(ImageRow.path))))
    s.execute(
        update(ImageRow)
        .where(func.substr(ImageRow.path, 1, 1) == "?")
        .values(path=func.substr(ImageRow.path, 2, type_=Text))
    )
    s.execute(update(ImageRow).where(_escaped(ImageRow.label) != ImageRow.label).values(label=_escaped(ImageRow.label)))


def importing_pattern(target: Path) -> str:
    """The name of the file a bulk import builds beside ``target`` (and its -wal/-shm), with
    the importing process's id as group ``pid``."""
    return rf"\.{re.escape(target.name)}\.importing-(?P<pid>\d+)(?:-.*)?"


#: a lookup file being written (index/lookup.py names it with the writer's process id)
LOOKUP_TMP_PATTERN = r".*\.(?:lookup|near)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp"


def remove_leftovers(path: Path) -> list[str]:
    """The temporary files a process killed while writing this index left beside it (a bulk
    import's file, a lookup being saved), once that process is gone; cheap (one listing of the
    folder), done whenever an index file is opened and the folder is writable."""
    folder = path.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return []
    return remove_abandoned(folder, importing_pattern(path)) + remove_abandoned(folder, LOOKUP_TMP_PATTERN)


def open_index(path: "str | Path | IndexLocation", create: bool = False) -> IndexDB:
    """Open (or with ``create=True`` create) a semhash index: a SQLite file, or a PostgreSQL
    database given as an SQLAlchemy URL (``postgresql+psycopg://user@host/dbname``; the
    database must exist, its tables are created on first write).

    Refuses, with one-line :class:`IndexError_` naming the index and the cause, anything that
    is not a SQLite file, a file or database without semhash tables, and a schema version
    newer than this code understands: guessing at such a file could corrupt someone's data.
    An older version is upgraded in place (one transaction).  A read-only WAL index in a
    folder that cannot be written is opened immutable (read-only).  A database that cannot
    be reached (server down, wrong password, no such database) is one line too.
    """
    location = IndexLocation.parse(path)
    if location.is_url:
        return _open_database(location, create)
    path = location.file
    assert path is not None
    if path.is_dir():
        raise IndexError_(f"{path}: is a folder, not an index file")
    if not path.exists():
        if not create:
            raise IndexError_(f"{path}: no index here: run 'semhash index DIR' first")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexError_(f"{path}: cannot create the index folder ({exc.strerror or exc})") from None
    else:
        # Never open() the file ourselves: this process may hold SQLite connections to it, and
        # closing any descriptor of a file drops every POSIX lock the process holds on it
        # (SQLite's "how to corrupt" hazard; a server's readers then saw writes half-done).
        # SQLite itself tells a file that is not a database (below).
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise IndexError_(f"{path}: cannot read index ({exc.strerror or exc})") from None
        if size == 0 and not create:
            raise IndexError_(f"{path}: not a semhash index (empty file)")

    remove_leftovers(path)
    engine = _make_engine(path, create)
    immutable = False
    try:
        with database_errors(path):
            try:
                tables = set(inspect(engine).get_table_names())
            except DBAPIError as exc:
                if _sqlite_code(exc) == _SQLITE_NOTADB:  # the header is not SQLite's
                    raise IndexError_(f"{path}: not a semhash index (not a SQLite database)") from None
                wal = Path(f"{path}-wal")
                if _sqlite_code(exc) not in (_SQLITE_READONLY, _SQLITE_CANTOPEN) or wal.exists() or not path.exists():
                    raise
                engine.dispose()  # a WAL file in a read-only folder: read it as it is
                engine, immutable = _make_engine(path, False, immutable=True), True
                tables = set(inspect(engine).get_table_names())
            version = _check_schema(engine, path, tables, create, "SQLite file")
            if not immutable:
                _ensure_wal(engine)
    except BaseException:
        engine.dispose()
        raise
    return IndexDB(path, engine, version)


def _open_database(location: IndexLocation, create: bool) -> IndexDB:
    try:
        import psycopg  # noqa: F401  (the driver: an optional extra)
    except ImportError:
        raise IndexError_(
            f"{location}: a PostgreSQL index needs the psycopg driver: pip install 'semhash[postgres]'"
        ) from None
    engine = _make_database_engine(location)
    try:
        with database_errors(location):
            tables = set(inspect(engine).get_table_names())
            version = _check_schema(engine, location, tables, create, "database")
    except BaseException:
        engine.dispose()
        raise
    return IndexDB(location, engine, version)


def _check_schema(engine: Engine, path: "Path | IndexLocation", tables: set[str], create: bool, what: str) -> int:
    """Create a new index's tables (``create``), then refuse what is not a semhash index of a
    schema version this code understands; upgrade an older one.  -> the schema version the
    index is read as (older only for one that cannot be written)."""
    if not tables and create:
        _initialise(engine)
        tables = set(inspect(engine).get_table_names())
    if not {"images", "meta"} <= tables:
        raise IndexError_(f"{path}: not a semhash index ({what} without semhash tables)")
    raw = _read_version(engine)
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
    if version < SCHEMA_VERSION:
        return _upgrade_or_read_as_is(engine, path, version)
    return version


def _upgrade_or_read_as_is(engine: Engine, path: "Path | IndexLocation", version: int) -> int:
    """Upgrade; an index that cannot be written (read-only media) is read as it is when its
    rows need no rewriting (every version-2 file; a version-1 file whose paths are already
    keys), without the near tier.  -> the version the index is read as."""
    try:
        _upgrade(engine)
    except DBAPIError as exc:
        if _sqlite_code(exc) != _SQLITE_READONLY:
            raise
        with Session(engine) as s, s.begin():
            if version >= 2 or _v1_rows_to_rewrite(s) == 0:
                return version
        raise IndexError_(
            f"{path}: index schema version {version} must be upgraded to {SCHEMA_VERSION}, which needs "
            "write access to the file and its folder: open it once with write access "
            f"(for example `semhash status --index {path}`)"
        ) from None
    return SCHEMA_VERSION
