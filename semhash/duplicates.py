"""Every group of copies in an index (``semhash duplicates``), and moving the extra copies away safely.

Groups come from the tiers (:mod:`semhash.index.tiers`): the exact tier (the same bytes),
the near tier (PDQ codes within the threshold; images too flat for PDQ take no part) and,
when asked, the similar tier (the model's code within a radius).  A pair of images is linked
in the strictest tier that reaches it.

Grouping never chains: images are taken in the order of the keep rule (the best keeper
first); each image not yet grouped that has ungrouped neighbours becomes a keeper, and its
group is those neighbours - so every member is within the threshold of its group's keeper,
and A~B~C never puts A and C together when they are far apart.

Keep rules: ``largest`` (most pixels, then most bytes), ``oldest`` / ``newest`` (file mtime),
``shortest-path``; ties by path.  Groups a user marked "not duplicates" (the ``decisions``
table) never come back, unless a new copy joins them (then the group differs, and shows).

Moving (:func:`move_duplicates`): every non-keeper goes into a folder, under its absolute
path (``/photos/a.jpg`` -> ``DIR/photos/a.jpg``).  A manifest (JSON lines, fsync'ed) lists
every move before the first one; each move is a rename (or, across file systems, a copy
under a temporary name, fsync, rename, then the original's removal), so a kill at any moment
leaves every file in one of its two places; :func:`undo_moves` puts back whatever was moved.
Nothing is ever deleted, and a move that would overwrite a file refuses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from sqlalchemy import delete, select

from semhash.errors import SemhashError
from semhash.tiers import MIN_QUALITY, NEAR_THRESHOLD, TIERS, tiers_for

KEEP_RULES = ("largest", "oldest", "newest", "shortest-path")
DECISIONS = ("not_duplicates", "keep", "skip")
MANIFEST_FORMAT = "semhash-moves"


class DuplicatesError(SemhashError):
    """A duplicates request that cannot be done (one line saying why)."""


@dataclass
class Member:
    """One image of a group (the keeper included)."""

    id: int
    path: str  # the stored key
    tier: str  # how it is linked to the keeper ("keeper" for the keeper itself)
    distance: int  # in that tier's code
    size: int
    width: int | None
    height: int | None
    mtime: float

    @property
    def pixels(self) -> int:
        return int(self.width or 0) * int(self.height or 0)


@dataclass
class Group:
    key: str  # sha256 of the sorted member paths: what a decision is recorded under
    keeper: Member
    duplicates: list[Member]

    @property
    def reclaimable(self) -> int:
        return sum(m.size for m in self.duplicates)

    @property
    def paths(self) -> list[str]:
        return sorted([self.keeper.path, *(m.path for m in self.duplicates)])


@dataclass
class DuplicatesReport:
    groups: list[Group]
    images: int  # rows in the index
    tiers: tuple[str, ...]
    near_threshold: int
    radius: int | None
    keep: str
    too_flat: int  # images left out of the near tier (PDQ quality below min_quality)
    without_near_code: int  # rows with no near code (imported without one, or not re-indexed yet)
    hidden_by_decisions: int = 0  # groups the user marked "not duplicates"

    @property
    def redundant(self) -> int:
        return sum(len(g.duplicates) for g in self.groups)

    @property
    def reclaimable(self) -> int:
        return sum(g.reclaimable for g in self.groups)

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": [
                {"key": g.key, "reclaimable_bytes": g.reclaimable, "keeper": asdict(g.keeper),
                 "duplicates": [asdict(m) for m in g.duplicates]}
                for g in self.groups
            ],  # fmt: skip
            "totals": {"groups": len(self.groups), "redundant_files": self.redundant, "reclaimable_bytes": self.reclaimable,
                       "images": self.images, "too_flat": self.too_flat, "without_near_code": self.without_near_code,
                       "hidden_by_decisions": self.hidden_by_decisions},  # fmt: skip
            "tiers": list(self.tiers),
            "near_threshold": self.near_threshold,
            "radius": self.radius,
            "keep": self.keep,
        }


def group_key(paths: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(paths)).encode("utf-8", "surrogateescape")).hexdigest()


def tiers_up_to(tier: str) -> tuple[str, ...]:
    """``duplicates --tier``: exact -> exact; near -> exact and near (the default); similar or
    all -> all three."""
    if tier == "all":
        return TIERS
    (one,) = tiers_for(tier)
    return TIERS[: TIERS.index(one) + 1]


def _priority(rows: dict[str, np.ndarray], paths: list[str], keep: str) -> np.ndarray:
    """Row positions, the best keeper first."""
    n = len(paths)
    path_order = np.argsort(np.array(paths, dtype=object), kind="stable")
    rank_by_path = np.empty(n, np.int64)
    rank_by_path[path_order] = np.arange(n)
    if keep == "largest":
        return np.lexsort((rank_by_path, -rows["size"], -rows["pixels"]))
    if keep == "oldest":
        return np.lexsort((rank_by_path, rows["mtime"]))
    if keep == "newest":
        return np.lexsort((rank_by_path, -rows["mtime"]))
    if keep == "shortest-path":
        return np.lexsort((rank_by_path, np.array([len(p) for p in paths])))
    raise DuplicatesError(f"unknown keep rule {keep!r}: use one of {', '.join(KEEP_RULES)}")


def group_pairs(n: int, pairs: dict[tuple[int, int], tuple[str, int]], priority: np.ndarray) -> list[tuple[int, list[tuple[int, str, int]]]]:
    """Keeper-centred groups over ``pairs`` ({(i, j): (tier, distance)}, i < j) of ``n``
    items, taking keepers in ``priority`` order: -> [(keeper, [(member, tier, distance)])].
    Every member is a direct neighbour of its keeper (no chaining)."""
    neighbours: dict[int, list[tuple[int, str, int]]] = {}
    for (i, j), (tier, d) in pairs.items():
        neighbours.setdefault(i, []).append((j, tier, d))
        neighbours.setdefault(j, []).append((i, tier, d))
    grouped = np.zeros(n, bool)
    groups = []
    for k in priority.tolist():
        if grouped[k] or k not in neighbours:
            continue
        members = [(j, tier, d) for j, tier, d in neighbours[k] if not grouped[j]]
        if not members:
            continue
        grouped[k] = True
        for j, _, _ in members:
            grouped[j] = True
        groups.append((k, members))
    return groups


def _link(pairs: dict, i: int, j: int, tier: str, d: int) -> None:
    key = (i, j) if i < j else (j, i)
    old = pairs.get(key)
    if old is None or (TIERS.index(tier), d) < (TIERS.index(old[0]), old[1]):
        pairs[key] = (tier, int(d))


def find_duplicates(
    index_path: str | Path,
    *,
    tier: str = "near",
    near_threshold: int | None = None,
    radius: int | None = None,
    keep: str = "largest",
    min_quality: int = MIN_QUALITY,
    mirrors: bool = False,
) -> DuplicatesReport:
    """Every group of copies in the index (see the module's docstring).  ``tier``: the
    strictest tiers included (``near``: exact and near); ``radius`` is the similar tier's
    (required with it); ``mirrors`` also links copies rotated or mirrored (each image's 7
    other dihedral codes searched too: 8x the near tier's work)."""
    from semhash.hashing import from_signed64
    from semhash.index.db import DecisionRow, ImageRow, database_errors, open_index, read_meta
    from semhash.index.near_lookup import NearLookup
    from semhash.perceptual import N_DIHEDRAL, NEAR_BYTES, check_threshold

    tiers = tiers_up_to(tier)
    threshold = NEAR_THRESHOLD if near_threshold is None else check_threshold(near_threshold)
    if keep not in KEEP_RULES:
        raise DuplicatesError(f"unknown keep rule {keep!r}: use one of {', '.join(KEEP_RULES)}")
    if "similar" in tiers and radius is None:
        raise DuplicatesError("the similar tier needs a Hamming radius: add --radius R (0-2 finds look-alikes)")
    with open_index(index_path) as db, database_errors(db.path):
        if "near" in tiers:
            db.require_near_tier()
        with db.session() as s, s.begin():
            meta = read_meta(s, db.path)
            columns = [ImageRow.id, ImageRow.path, ImageRow.content_hash, ImageRow.size, ImageRow.mtime, ImageRow.code]
            if db.has_near_tier:
                columns += [ImageRow.width, ImageRow.height, ImageRow.near_code, ImageRow.near_quality]
                if mirrors:
                    columns.append(ImageRow.near_variants)
            raw = s.execute(select(*columns).order_by(ImageRow.id)).tuples().all()
            decided = s.execute(select(DecisionRow.members).where(DecisionRow.decision == "not_duplicates")).scalars().all() if db.has_near_tier else []  # fmt: skip
    n = len(raw)
    paths = [r[1] for r in raw]
    has_near = db.has_near_tier
    rows = {
        "size": np.array([r[3] or 0 for r in raw], np.int64),
        "mtime": np.array([r[4] or 0.0 for r in raw], np.float64),
        "pixels": np.array([(r[6] or 0) * (r[7] or 0) if has_near else 0 for r in raw], np.int64),
    }
    pairs: dict[tuple[int, int], tuple[str, int]] = {}
    # exact: the same bytes
    by_hash: dict[str, list[int]] = {}
    for k, r in enumerate(raw):
        if r[2]:
            by_hash.setdefault(r[2], []).append(k)
    for members in by_hash.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                _link(pairs, members[a], members[b], "exact", 0)
    too_flat = without = 0
    if "near" in tiers:
        usable, codes = [], []
        for k, r in enumerate(raw):
            code, quality = r[8], r[9]
            if code is None or len(code) != NEAR_BYTES:
                without += 1
            elif quality is not None and quality < min_quality:
                too_flat += 1
            else:
                usable.append(k)
                codes.append(bytes(code))
        if usable:
            positions = np.array(usable, np.int64)
            lookup = NearLookup(positions, np.frombuffer(b"".join(codes), np.uint8).reshape(-1, NEAR_BYTES))
            i, j, d = lookup.pairs(threshold)
            for a, b, dist in zip(positions[i].tolist(), positions[j].tolist(), d.tolist()):
                _link(pairs, a, b, "near", dist)
            if mirrors:
                variants, owners = [], []
                for p, k in enumerate(usable):
                    v = raw[k][10]
                    if v is not None and len(v) == NEAR_BYTES * (N_DIHEDRAL - 1):
                        variants.append(bytes(v))
                        owners.append(k)
                if variants:
                    queries = np.frombuffer(b"".join(variants), np.uint8).reshape(-1, NEAR_BYTES)
                    q, pos, dist = lookup.search(queries, threshold)
                    for a, b, dd in zip(np.repeat(np.array(owners), N_DIHEDRAL - 1)[q].tolist(), positions[pos].tolist(), dist.tolist()):
                        if a != b:
                            _link(pairs, a, b, "near", dd)
    if "similar" in tiers:
        from semhash.index.lookup import build_from_rows

        codes64 = np.array([from_signed64(r[5]) for r in raw], dtype=np.uint64)
        if n:
            found = build_from_rows([(np.arange(n), codes64.view(np.int64))], int(meta.n_bits or 64)).search(codes64, int(radius))
            for a in range(n):
                for b, dist in zip(*found[a]):
                    if int(b) > a:
                        _link(pairs, a, int(b), "similar", int(dist))
    groups, hidden = [], 0
    not_duplicates = [set(json.loads(m)) for m in decided]

    def member(k: int, tier_name: str, d: int) -> Member:
        r = raw[k]
        return Member(int(r[0]), r[1], tier_name, int(d), int(r[3] or 0), r[6] if has_near else None,
                      r[7] if has_near else None, float(r[4] or 0.0))  # fmt: skip

    for keeper, members in group_pairs(n, pairs, _priority(rows, paths, keep)):
        group_paths = {paths[keeper], *(paths[j] for j, _, _ in members)}
        if any(group_paths <= marked for marked in not_duplicates):
            hidden += 1
            continue
        dups = sorted((member(j, t, d) for j, t, d in members), key=lambda m: (TIERS.index(m.tier), m.distance, m.path))
        groups.append(Group(group_key(group_paths), member(keeper, "keeper", 0), dups))
    groups.sort(key=lambda g: (-g.reclaimable, g.keeper.path))
    return DuplicatesReport(groups, n, tiers, threshold, radius, keep, too_flat, without, hidden)


# --------------------------------------------------------------------------- decisions
def record_decision(index_path: str | Path, paths: Iterable[str], decision: str, keeper: str | None = None) -> str:
    """Record a decision about the group of ``paths`` (stored keys); the last one wins.
    -> the group's key."""
    from semhash.index.db import DecisionRow, bump_generation, database_errors, open_index, utc_now

    if decision not in DECISIONS:
        raise DuplicatesError(f"unknown decision {decision!r}: use one of {', '.join(DECISIONS)}")
    members = sorted(set(paths))
    key = group_key(members)
    with open_index(index_path) as db, database_errors(db.path):
        db.require_near_tier()
        with db.write_session() as s, s.begin():
            s.merge(DecisionRow(group_key=key, decision=decision, members=json.dumps(members), keeper=keeper, decided_at=utc_now()))
            bump_generation(s)
    return key


# --------------------------------------------------------------------------- moving
@dataclass
class MoveSummary:
    manifest: Path | None  # None when there was nothing to move
    moved: int = 0
    already_done: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)  # planned files gone before their move


def _target(folder: Path, source: Path) -> Path:
    return folder / source.relative_to(source.anchor)


def _indexed_root(path: Path, label: str | None) -> Path:
    """The folder a row was indexed from: its file's folder, or for a labelled row the folder
    above its first-level subfolder (the one named as the label; the shallowest such
    ancestor, so that in doubt the root is the larger folder)."""
    if label is None:
        return path.parent
    for ancestor in reversed(path.parents):
        if ancestor.name == label and ancestor.parent != ancestor:
            return ancestor.parent
    return path.parent


def _check_folder(folder: Path, indexed_roots: set[Path]) -> None:
    """Refuse a destination inside an indexed folder: the next `semhash index` of that folder
    would index the moved duplicates again."""
    for ancestor in (folder, *folder.parents):
        if ancestor in indexed_roots:
            raise DuplicatesError(
                f"{folder}: inside {ancestor}, an indexed folder: choose a folder outside the indexed folders "
                "(nothing was moved)"
            )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _move_one(source: Path, target: Path) -> None:
    """Rename, or across file systems copy under a temporary name, fsync, rename, and only
    then remove the original: at every moment the file exists whole in one place at least."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise DuplicatesError(f"{target}: already exists: a move never overwrites a file")
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: another file system
            raise
        partial = target.with_name(f".{target.name}.semhash-moving")
        shutil.copy2(source, partial)
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.rename(partial, target)
        _fsync_dir(target.parent)
        os.unlink(source)
    _fsync_dir(target.parent)


def move_duplicates(index_path: str | Path, report: DuplicatesReport, folder: str | Path,
                    on_move: Callable[[Path, Path], None] | None = None) -> MoveSummary:  # fmt: skip
    """Move every non-keeper of ``report`` into ``folder`` (see the module's docstring);
    afterwards their rows leave the index.  The manifest is written into ``folder`` first."""
    from semhash.index.db import ImageRow, bump_generation, chunked, database_errors, open_index
    from semhash.index.pathkeys import key_path
    from semhash.index.search import refresh_lookup

    folder = Path(folder).expanduser().absolute()
    with open_index(index_path) as db, database_errors(db.path), db.session() as s, s.begin():
        roots = {_indexed_root(Path(key_path(p)), None if label is None else key_path(label))
                 for p, label in s.execute(select(ImageRow.path, ImageRow.label)).tuples()}  # fmt: skip
    _check_folder(folder, roots)
    plan = [(Path(key_path(m.path)), m) for g in report.groups for m in g.duplicates]
    for source, _ in plan:
        target = _target(folder, source)
        if target.exists():
            raise DuplicatesError(f"{target}: already exists: a move never overwrites a file (nothing was moved)")
    if not plan:
        return MoveSummary(None)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DuplicatesError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    manifest = folder / f"semhash-moves-{stamp}.jsonl"
    with open(manifest, "x", encoding="utf-8") as fh:
        fh.write(json.dumps({"format": MANIFEST_FORMAT, "version": 1, "index": str(index_path), "created": stamp}) + "\n")
        for source, m in plan:
            fh.write(json.dumps({"from": os.fsdecode(source), "to": os.fsdecode(_target(folder, source)), "bytes": m.size}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(folder)
    summary = MoveSummary(manifest)
    moved_keys = []
    for source, m in plan:
        target = _target(folder, source)
        if not source.exists():
            if target.exists():
                summary.already_done += 1
                moved_keys.append(m.path)
            else:
                summary.missing.append(m.path)
            continue
        try:
            _move_one(source, target)
        except OSError as exc:
            raise DuplicatesError(
                f"{source}: cannot move it to {target} ({exc.strerror or exc}); {summary.moved} files moved before it, "
                f"listed in {manifest}: undo them with `semhash duplicates --undo {manifest}`"
            ) from None
        summary.moved += 1
        summary.bytes += m.size
        moved_keys.append(m.path)
        if on_move is not None:
            on_move(source, target)
    with open_index(index_path) as db, database_errors(db.path):
        with db.write_session() as s, s.begin():
            for chunk in chunked(moved_keys):
                s.execute(delete(ImageRow).where(ImageRow.path.in_(chunk)))
            bump_generation(s)
        refresh_lookup(db)
    return summary


@dataclass
class UndoSummary:
    restored: int = 0
    already_back: int = 0
    conflicts: list[str] = field(default_factory=list)  # both places hold a file: left as they are


def read_manifest(manifest: str | Path) -> list[dict[str, Any]]:
    path = Path(manifest)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DuplicatesError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    try:
        head = json.loads(lines[0]) if lines else {}
        entries = [json.loads(line) for line in lines[1:] if line.strip()]
    except json.JSONDecodeError as exc:
        raise DuplicatesError(f"{path}: not a semhash move manifest (line {exc.lineno}: {exc.msg})") from None
    if head.get("format") != MANIFEST_FORMAT or not all({"from", "to"} <= set(e) for e in entries):
        raise DuplicatesError(f"{path}: not a semhash move manifest")
    return entries


def undo_moves(manifest: str | Path) -> UndoSummary:
    """Put back every file a manifest lists as moved (those still where they were are left;
    a file at both places is a conflict, left as it is and reported)."""
    summary = UndoSummary()
    for entry in reversed(read_manifest(manifest)):
        source, target = Path(entry["from"]), Path(entry["to"])
        if target.exists() and not source.exists():
            _move_one(target, source)
            summary.restored += 1
        elif target.exists() and source.exists():
            summary.conflicts.append(os.fsdecode(source))
        else:
            summary.already_back += 1
    return summary
