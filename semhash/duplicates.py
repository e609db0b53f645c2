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
``shortest-path``, ``original-format`` (RAW over HEIC/AVIF over the rest, then the largest),
``oldest-capture`` (EXIF capture time, else mtime; then the largest); ties by path.  Groups a user marked "not duplicates" (the ``decisions``
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
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any, Callable, Iterable

import numpy as np
from sqlalchemy import delete, insert, select

from semhash.errors import SemhashError
from semhash.tiers import DIHEDRAL_MAX, MAX_GROUP_THRESHOLD, MIN_QUALITY, TIERS, tiers_for

KEEP_RULES = ("largest", "oldest", "newest", "shortest-path", "original-format", "oldest-capture")
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
    label: str | None = None  # the label it was indexed with (its top folder, or the import's)
    taken_at: float | None = None  # EXIF capture time, seconds since the epoch (None: the photo says none)
    camera: str | None = None  # EXIF make and model
    format: str | None = None  # the file format as decoded ("JPEG", "HEIF", "DNG", ...)

    @property
    def pixels(self) -> int:
        return int(self.width or 0) * int(self.height or 0)

    @property
    def captured_at(self) -> float:
        """When the photo was taken: its EXIF capture time, else its file's mtime."""
        return self.mtime if self.taken_at is None else self.taken_at


@dataclass
class Group:
    key: str  # sha256 of the sorted member paths: what a decision is recorded under
    keeper: Member
    duplicates: list[Member]
    decision: str | None = None  # "keep" or "skip" recorded for exactly this group
    decided_keeper: str | None = None  # with "keep": the path the user chose

    @cached_property  # a group's members never change once it is made
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

    @cached_property  # a report's groups never change once it is made (filters make another report)
    def redundant(self) -> int:
        return sum(len(g.duplicates) for g in self.groups)

    @cached_property
    def reclaimable(self) -> int:
        return sum(g.reclaimable for g in self.groups)

    def to_json(self, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """The report as `semhash duplicates --json` prints it; ``offset``/``limit`` pick the
        groups listed (the totals always cover all of them)."""
        page = self.groups[offset:] if limit is None else self.groups[offset : offset + limit]
        return {
            "groups": [
                {"key": g.key, "decision": g.decision, "decided_keeper": g.decided_keeper, "reclaimable_bytes": g.reclaimable,
                 "keeper": asdict(g.keeper), "duplicates": [asdict(m) for m in g.duplicates]}
                for g in page
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


def _keep_key(keep: str) -> Callable[["Member"], tuple]:
    """The sort key that puts the best keeper first (ties by path)."""
    if keep == "largest":
        return lambda m: (-m.pixels, -m.size, m.path)
    if keep == "oldest":
        return lambda m: (m.mtime, m.path)
    if keep == "newest":
        return lambda m: (-m.mtime, m.path)
    if keep == "shortest-path":
        return lambda m: (len(m.path), m.path)
    if keep == "original-format":  # a camera's RAW file over its HEIC/AVIF over a JPEG, then the largest
        from semhash.formats import FORMAT_RANK

        return lambda m: (-FORMAT_RANK.get(PurePath(m.path).suffix.lower(), 1), -m.pixels, -m.size, m.path)
    if keep == "oldest-capture":  # the first shot; an edited or exported copy keeps the EXIF time, so then the largest
        return lambda m: (m.captured_at, -m.pixels, -m.size, m.path)
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
    if i == j:
        return
    key = (i, j) if i < j else (j, i)
    old = pairs.get(key)
    if old is None or (TIERS.index(tier), d) < (TIERS.index(old[0]), old[1]):
        pairs[key] = (tier, int(d))


@dataclass
class _Record:
    """The columns of every row that grouping needs, as arrays (paths are read later, only
    for the rows that end up in a group)."""

    ids: np.ndarray  # int64
    content_hash: np.ndarray  # S64
    near: np.ndarray  # (N, 32) uint8, zeros where there is none
    has_near: np.ndarray  # bool
    quality: np.ndarray  # int16, -1 where unknown
    variants: list[bytes | None] | None  # 224 bytes each, only with mirrors
    codes: np.ndarray | None  # uint64, only for the similar tier


def _read_record(conn, has_near_tier: bool, mirrors: bool, similar: bool) -> _Record:
    """One pass over the rows on a DBAPI connection, a chunk at a time into arrays."""
    from semhash.perceptual import NEAR_BYTES

    columns = ["id", "content_hash", "code"]
    if has_near_tier:
        columns += ["near_code", "near_quality"] + (["near_variants"] if mirrors else [])
    cursor = conn.cursor()
    ids, hashes, near, has, quality, variants, codes = [], [], [], [], [], [], []
    zero = bytes(NEAR_BYTES)
    try:
        cursor.execute(f"SELECT {', '.join(columns)} FROM images ORDER BY id")
        while True:
            rows = cursor.fetchmany(1 << 16)
            if not rows:
                break
            ids.append(np.fromiter((r[0] for r in rows), np.int64, len(rows)))
            hashes.append(np.array([r[1] or "" for r in rows], dtype="S64"))
            if similar:
                codes.append(np.fromiter((r[2] for r in rows), np.int64, len(rows)).view(np.uint64))
            if has_near_tier:
                ok = [r[3] is not None and len(r[3]) == NEAR_BYTES for r in rows]
                near.append(np.frombuffer(b"".join(bytes(r[3]) if k else zero for r, k in zip(rows, ok)), np.uint8).reshape(-1, NEAR_BYTES))
                has.append(np.array(ok, bool))
                quality.append(np.array([-1 if r[4] is None else r[4] for r in rows], np.int16))
                if mirrors:
                    variants.extend(None if r[5] is None else bytes(r[5]) for r in rows)
    finally:
        cursor.close()
    n = int(sum(len(x) for x in ids))
    return _Record(
        np.concatenate(ids) if ids else np.zeros(0, np.int64),
        np.concatenate(hashes) if hashes else np.zeros(0, "S64"),
        np.concatenate(near) if near else np.zeros((n, NEAR_BYTES), np.uint8),
        np.concatenate(has) if has else np.zeros(n, bool),
        np.concatenate(quality) if quality else np.full(n, -1, np.int16),
        variants if mirrors else None,
        np.concatenate(codes) if codes else None,
    )


def _members(conn, ids: list[int], paramstyle: str, schema_version: int = 4) -> dict[int, "Member"]:
    """The rows ``ids`` as members (tier and distance filled in later); an index read as an
    older ``schema_version`` has no pixel sizes (before 3) nor photo facts (before 4)."""
    from semhash.index.db import chunked

    marker = "?" if paramstyle == "qmark" else "%s"
    sizes = "width, height" if schema_version >= 3 else "NULL, NULL"
    facts = "taken_at, camera, format" if schema_version >= 4 else "NULL, NULL, NULL"
    found = {}
    for chunk in chunked(sorted(ids)):
        cursor = conn.cursor()
        try:
            cursor.execute(f"SELECT id, path, size, {sizes}, mtime, label, {facts} FROM images WHERE id IN "
                           f"({', '.join([marker] * len(chunk))})", tuple(chunk))  # fmt: skip
            for i, path, size, width, height, mtime, label, taken_at, camera, file_format in cursor.fetchall():
                found[int(i)] = Member(int(i), path, "", 0, int(size or 0), width, height, float(mtime or 0.0), label,
                                       None if taken_at is None else float(taken_at), camera, file_format)  # fmt: skip
        finally:
            cursor.close()
    return found


def find_duplicates(
    index_path: str | Path,
    *,
    tier: str = "near",
    near_threshold: int | None = None,
    radius: int | None = None,
    keep: str = "largest",
    min_quality: int = MIN_QUALITY,
    mirrors: bool = False,
    decided: bool = True,
) -> DuplicatesReport:
    """Every group of copies in the index (see the module's docstring), the recorded
    decisions applied unless ``decided`` is false.  ``tier``: the
    loosest tier included (``near``: exact and near); ``radius`` is the similar tier's
    (required with it); ``mirrors`` also links copies rotated or mirrored (each image's 7
    other dihedral codes searched too: 8x the near tier's queries).

    Files with the same bytes are one node (their codes are the same): the near and similar
    tiers pair nodes, grouping takes nodes by their best keeper, and a node joins a group
    whole.  Memory: a few arrays per row (~120 bytes), paths only for the rows grouped."""
    from semhash.index.db import database_errors, open_index, read_meta

    with open_index(index_path) as db, database_errors(db.path):
        if "near" in tiers_up_to(tier):
            db.require_near_tier()
        with db.session() as s, s.begin():
            meta = read_meta(s, db.path)
            conn = s.connection()
            report = duplicates_in(conn.connection, conn.dialect.paramstyle, meta, db.has_near_tier, tier=tier,
                                   near_threshold=near_threshold, radius=radius, keep=keep, min_quality=min_quality,
                                   mirrors=mirrors)  # fmt: skip
            return apply_decisions(report, read_decisions(conn.connection, db.has_near_tier)) if decided else report


_DECIDED_SQL = "SELECT group_key, decision, members, keeper FROM decisions"


def duplicates_in(
    conn,
    paramstyle: str,
    meta,
    has_near_tier: bool,
    *,
    tier: str = "near",
    near_threshold: int | None = None,
    radius: int | None = None,
    keep: str = "largest",
    min_quality: int = MIN_QUALITY,
    mirrors: bool = False,
) -> DuplicatesReport:
    """:func:`find_duplicates` on a DBAPI connection already inside a read snapshot (the web
    reader's own), for the record state ``meta``."""
    from semhash.index.near_lookup import NearLookup
    from semhash.perceptual import N_DIHEDRAL, NEAR_BYTES

    tiers = tiers_up_to(tier)
    scheme = meta.near_scheme
    try:
        threshold = scheme.check_threshold(near_threshold)
    except ValueError as exc:
        raise DuplicatesError(str(exc)) from None
    if scheme.is_pdq and threshold > MAX_GROUP_THRESHOLD:
        raise DuplicatesError(f"near threshold {threshold} is over {MAX_GROUP_THRESHOLD} of 256 bits: that far apart, images are not copies")
    key_of = _keep_key(keep)
    if "similar" in tiers and radius is None:
        raise DuplicatesError("the similar tier needs a Hamming radius: --radius R on the command line, radius=R in the API (0-2 finds look-alikes)")
    if "near" in tiers and not has_near_tier:
        raise DuplicatesError("this index predates the near-duplicate tier: run `semhash index` on it once with write access")
    record = _read_record(conn, has_near_tier, mirrors and "near" in tiers, "similar" in tiers)
    n = len(record.ids)
    # nodes: files with the same bytes (an empty hash, from an import without one, is its own node)
    hashes = record.content_hash
    blank = hashes == b""
    _, node_of = np.unique(np.where(blank, np.char.add(b"#", np.arange(n).astype("S20")), hashes), return_inverse=True)
    node_of = node_of.reshape(-1)
    n_nodes = int(node_of.max()) + 1 if n else 0
    rep = np.full(n_nodes, n, np.int64)
    np.minimum.at(rep, node_of, np.arange(n))  # each node's first row
    node_size = np.bincount(node_of, minlength=n_nodes)
    pairs: dict[tuple[int, int], tuple[str, int]] = {}
    too_flat = without = 0
    if "near" in tiers:
        usable = record.has_near[rep] & ((record.quality[rep] < 0) | (record.quality[rep] >= min_quality))
        without = int((~record.has_near).sum())
        too_flat = int((record.has_near & (record.quality >= 0) & (record.quality < min_quality)).sum())
        nodes = np.flatnonzero(usable)
        if len(nodes):
            lookup = NearLookup(nodes, record.near[rep[nodes]], scheme.layout())
            i, j, d = lookup.pairs(threshold)
            for a, b, dist in zip(nodes[i].tolist(), nodes[j].tolist(), d.tolist()):
                _link(pairs, a, b, "near", dist)
            if mirrors and record.variants is not None:
                owners = [int(k) for k in nodes if record.variants[rep[k]] is not None
                          and len(record.variants[rep[k]]) == NEAR_BYTES * (N_DIHEDRAL - 1)]  # fmt: skip
                if owners:
                    queries = np.frombuffer(b"".join(record.variants[rep[k]] for k in owners), np.uint8).reshape(-1, NEAR_BYTES)
                    q, pos, dist = lookup.search(queries, min(threshold, DIHEDRAL_MAX))
                    owner_of = np.repeat(np.array(owners, np.int64), N_DIHEDRAL - 1)
                    for a, b, dd in zip(owner_of[q].tolist(), nodes[pos].tolist(), dist.tolist()):
                        _link(pairs, a, b, "near", dd)
    if "similar" in tiers and n_nodes:
        from semhash.index.lookup import build_from_rows

        codes = record.codes[rep]  # type: ignore[index]
        found = build_from_rows([(np.arange(n_nodes), codes.view(np.int64))], int(meta.n_bits or 64)).search(codes, int(radius))
        for a in range(n_nodes):
            for b, dist in zip(*found[a]):
                _link(pairs, a, int(b), "similar", int(dist))
    # rows of every node that can be in a group: several files, or a pair
    linked = {k for pair in pairs for k in pair} | set(np.flatnonzero(node_size > 1).tolist())
    rows_of: dict[int, list[int]] = {}
    for row in np.flatnonzero(np.isin(node_of, np.fromiter(linked, np.int64, len(linked)))).tolist():
        rows_of.setdefault(int(node_of[row]), []).append(row)
    members = _members(conn, [int(record.ids[r]) for rows in rows_of.values() for r in rows], paramstyle,
                       meta.schema_version if has_near_tier else 2)  # fmt: skip
    ids = record.ids.tolist()
    best = {k: members[ids[rows[0]]] if len(rows) == 1 else min((members[ids[r]] for r in rows), key=key_of)
            for k, rows in rows_of.items()}  # fmt: skip
    for k in rows_of:  # a node with several files and no pair is a group of its own
        pairs.setdefault((k, k), ("exact", 0))
    ordered = sorted(best, key=lambda k: key_of(best[k]))
    position = {k: p for p, k in enumerate(ordered)}
    node_pairs = {(position[a], position[b]) if position[a] <= position[b] else (position[b], position[a]): v
                  for (a, b), v in pairs.items()}  # fmt: skip
    groups = []
    for keeper_pos, linked_nodes in _node_groups(len(ordered), node_pairs):
        keeper_node = ordered[keeper_pos]
        keeper = best[keeper_node]
        dups = [_linked(members[ids[r]], "exact", 0) for r in rows_of[keeper_node] if ids[r] != keeper.id]
        for pos, tier_name, d in linked_nodes:
            dups += [_linked(members[ids[r]], tier_name, d) for r in rows_of[ordered[pos]]]
        if not dups:
            continue
        group_paths = {keeper.path, *(m.path for m in dups)}
        dups.sort(key=lambda m: (TIERS.index(m.tier), m.distance, m.path))
        groups.append(Group(group_key(group_paths), _linked(keeper, "keeper", 0), dups))
    groups.sort(key=lambda g: (-g.reclaimable, g.keeper.path))
    return DuplicatesReport(groups, n, tiers, threshold, radius, keep, too_flat, without)


def read_decisions(conn, has_near_tier: bool = True) -> list[tuple]:
    """Every recorded decision, (group key, decision, members JSON, keeper), read on a DBAPI
    connection (a small table: read afresh for every listing)."""
    if not has_near_tier:
        return []
    cursor = conn.cursor()
    try:
        cursor.execute(_DECIDED_SQL)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def apply_decisions(report: DuplicatesReport, decided: list[tuple]) -> DuplicatesReport:
    """``report`` as the user sees it: groups inside a "not duplicates" decision left out
    (a group that gained a member is not inside it any more), each other group with the
    decision recorded for exactly it.  ``report`` itself is not changed."""
    from dataclasses import replace

    marked_with: dict[str, list[set[str]]] = {}  # a keeper's path -> the "not duplicates" sets holding it
    for _, decision, members, _ in decided:
        if decision == "not_duplicates":
            marked = set(json.loads(members))
            for path in marked:
                marked_with.setdefault(path, []).append(marked)
    by_key = {key: (decision, keeper) for key, decision, _, keeper in decided if decision != "not_duplicates"}
    if not marked_with and not by_key:
        return report
    groups, hidden = [], 0
    for group in report.groups:
        candidates = marked_with.get(group.keeper.path)
        if candidates:
            paths = set(group.paths)
            if any(paths <= marked for marked in candidates):
                hidden += 1
                continue
        decision, keeper = by_key.get(group.key, (None, None))
        groups.append(group if decision is None else replace(group, decision=decision, decided_keeper=keeper))
    return replace(report, groups=groups, hidden_by_decisions=hidden)


def _ancestors(path: str) -> list[str]:
    """The folders ``path`` is in, innermost first ("/a/b/c.jpg" -> ["/a/b", "/a", "/"])."""
    found = []
    cut = path.rfind("/")
    while cut > 0:
        path = path[:cut]
        found.append(path)
        cut = path.rfind("/")
    if cut == 0:
        found.append("/")
    return found


def in_folder(path: str, folder: str) -> bool:
    """Whether the stored key ``path`` is inside ``folder`` (at any depth)."""
    folder = folder.rstrip("/")
    return path.startswith(folder + "/")


def filter_groups(report: DuplicatesReport, folder: str | None = None, label: str | None = None) -> DuplicatesReport:
    """The groups with an image inside ``folder`` (at any depth) and with an image labelled
    ``label``; the totals then cover just those."""
    from dataclasses import replace

    if not folder and label is None:
        return report
    groups = [
        g for g in report.groups
        if (not folder or any(in_folder(m.path, folder) for m in (g.keeper, *g.duplicates)))
        and (label is None or any(m.label == label for m in (g.keeper, *g.duplicates)))
    ]  # fmt: skip
    return replace(report, groups=groups)


@dataclass
class Facets:
    """How many groups have an image in each folder (at any depth) and with each label."""

    folders: dict[str, int]
    labels: dict[str, int]

    def to_json(self, most: int = 200) -> dict[str, Any]:
        """The ``most`` folders with the most groups (listed by path) and every label."""
        top = sorted(self.folders.items(), key=lambda kv: (-kv[1], kv[0]))[:most]
        return {
            "folders": [{"folder": f, "groups": n} for f, n in sorted(top)],
            "labels": [{"label": k, "groups": n} for k, n in sorted(self.labels.items())],
        }


def facets_of(report: DuplicatesReport) -> Facets:
    folders: dict[str, int] = {}
    labels: dict[str, int] = {}
    for g in report.groups:
        members = (g.keeper, *g.duplicates)
        for f in {a for m in members for a in _ancestors(m.path)}:
            folders[f] = folders.get(f, 0) + 1
        for k in {m.label for m in members if m.label is not None}:
            labels[k] = labels.get(k, 0) + 1
    return Facets(folders, labels)


def _linked(member: Member, tier: str, distance: int) -> Member:
    """``member`` itself with its link filled in: each row is in one group only, so the rows
    read for grouping are set in place (a copy each cost 0.7 s at 10^5 groups)."""
    member.tier, member.distance = tier, int(distance)
    return member


def _as(member: Member, tier: str, distance: int) -> Member:
    return Member(member.id, member.path, tier, int(distance), member.size, member.width, member.height, member.mtime, member.label)


def _node_groups(n: int, pairs: dict[tuple[int, int], tuple[str, int]]) -> list[tuple[int, list[tuple[int, str, int]]]]:
    """:func:`group_pairs` over nodes numbered in keeper order (a self-pair (k, k) marks a
    node that is a group by itself: several files with the same bytes)."""
    alone = {k for (a, b) in pairs if a == b for k in (a,)}
    real = {key: v for key, v in pairs.items() if key[0] != key[1]}
    groups = dict(group_pairs(n, real, np.arange(n)))
    grouped = {k for k in groups} | {j for members in groups.values() for j, _, _ in members}
    for k in sorted(alone - grouped):
        groups[k] = []
    return sorted(groups.items())


def decided_only(report: DuplicatesReport) -> DuplicatesReport:
    """The groups the user decided to keep one image of (the review page's plan): each with
    the chosen image as its keeper (the suggested one, if another was chosen, becomes a
    duplicate at the chosen one's tier and distance); undecided and skipped groups left out."""
    from dataclasses import replace

    groups = []
    for group in report.groups:
        if group.decision != "keep":
            continue
        chosen = next((m for m in group.duplicates if m.path == group.decided_keeper), None)
        if chosen is None:  # the suggested keeper was chosen
            groups.append(group)
            continue
        others = [m for m in group.duplicates if m.path != chosen.path]
        others.append(_as(group.keeper, chosen.tier, chosen.distance))
        others.sort(key=lambda m: (TIERS.index(m.tier), m.distance, m.path))
        groups.append(replace(group, keeper=_as(chosen, "keeper", 0), duplicates=others))
    return replace(report, groups=groups)


# --------------------------------------------------------------------------- decisions
def record_decision(index_path: str | Path, paths: Iterable[str], decision: str, keeper: str | None = None) -> str:
    """Record a decision about the group of ``paths`` (stored keys); the last one wins.
    -> the group's key."""
    return record_decisions(index_path, [(paths, decision, keeper)])[0]


def record_decisions(index_path: str | Path, decided: list[tuple[Iterable[str], str, str | None]]) -> list[str]:
    """Record several decisions, (paths, decision, keeper) each, in one transaction (all or
    none); the last one about a group wins.  -> the groups' keys."""
    from semhash.index.db import DecisionRow, chunked, database_errors, open_index, utc_now

    rows = []
    for paths, decision, keeper in decided:
        if decision not in DECISIONS:
            raise DuplicatesError(f"unknown decision {decision!r}: use one of {', '.join(DECISIONS)}")
        members = sorted(set(paths))
        if len(members) < 2:
            raise DuplicatesError("a group has at least two images")
        if decision == "keep" and keeper not in members:
            raise DuplicatesError("a keep decision names one of the group's images as the keeper")
        rows.append((group_key(members), decision, json.dumps(members), keeper if decision == "keep" else None))
    if not rows:
        return []
    with open_index(index_path) as db, database_errors(db.path):
        db.require_near_tier()
        with db.write_session() as s, s.begin():
            # no generation bump: a decision changes no image row, so the lookups and
            # every reader's caches stay current; listings read the decisions afresh
            now = utc_now()
            latest = {key: (decision, members, keeper) for key, decision, members, keeper in rows}  # the last one wins
            keys = list(latest)
            for chunk in chunked(keys):
                s.execute(delete(DecisionRow).where(DecisionRow.group_key.in_(chunk)))
            s.execute(insert(DecisionRow), [{"group_key": k, "decision": d, "members": m, "keeper": kp, "decided_at": now}
                                            for k, (d, m, kp) in latest.items()])  # fmt: skip
    return [row[0] for row in rows]


# --------------------------------------------------------------------------- the review's plan
PLAN_FORMAT = "semhash-plan"


def plan_of(report: DuplicatesReport, index: str) -> dict[str, Any]:
    """The review's plan as a document (what the page exports): for every group decided
    "keep", the image kept and the ones to move, with the settings that found the groups."""
    decided = decided_only(report)
    return {
        "format": PLAN_FORMAT,
        "version": 1,
        "index": index,
        "tiers": list(report.tiers),
        "near_threshold": report.near_threshold,
        "radius": report.radius,
        "keep": report.keep,
        "groups": [{"key": g.key, "keeper": g.keeper.path, "duplicates": [m.path for m in g.duplicates]} for g in decided.groups],
    }


def read_plan(path: str | Path) -> dict[str, Any]:
    """A plan exported by the review page, checked (DuplicatesError naming the file)."""
    try:
        plan = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DuplicatesError(f"{path}: cannot read the plan ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DuplicatesError(f"{path}: not a plan: not JSON ({exc})") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT or plan.get("version") != 1:
        raise DuplicatesError(f"{path}: not a plan exported by the review page (no \"format\": \"{PLAN_FORMAT}\", version 1)")
    tiers, threshold, radius = plan.get("tiers"), plan.get("near_threshold"), plan.get("radius")
    if not (isinstance(tiers, list) and tiers and all(t in TIERS for t in tiers) and plan.get("keep") in KEEP_RULES
            and type(threshold) is int and (radius is None or type(radius) is int)):  # fmt: skip
        raise DuplicatesError(f"{path}: the plan's settings are malformed (tiers, near_threshold, radius, keep)")
    groups = plan.get("groups")
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("key"), str) and isinstance(g.get("keeper"), str)
        and isinstance(g.get("duplicates"), list) and all(isinstance(d, str) for d in g["duplicates"])
        for g in groups
    ):  # fmt: skip
        raise DuplicatesError(f"{path}: the plan's groups are malformed (each needs key, keeper and a list of duplicates)")
    return plan


def follow_plan(report: DuplicatesReport, plan: dict[str, Any]) -> tuple[DuplicatesReport, list[str]]:
    """The groups of ``report`` (found with the plan's settings) that the plan decided, each
    keeping the plan's image; -> (that report, the keys of planned groups that are not in the
    index any more as they were planned: left alone)."""
    from dataclasses import replace

    current = {g.key: g for g in report.groups}
    groups, changed = [], []
    for planned in plan["groups"]:
        group = current.get(planned["key"])
        if group is None or planned["keeper"] not in group.paths:
            changed.append(planned["key"])
            continue
        kept = replace(group, decision="keep", decided_keeper=planned["keeper"])
        groups.append(decided_only(replace(report, groups=[kept])).groups[0])
    return replace(report, groups=groups), changed


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
        if target.exists() and source.exists():  # (a target without its source: moved by a run that was stopped)
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


# --------------------------------------------------------------------------- calibration
CALIBRATION_THRESHOLDS = (8, 16, 24, 31, 39, 47)


@dataclass
class Calibration:
    """What the near tier's thresholds mean on this collection: per threshold, the share of
    copies made with each edit that find their original, and the share of copies that match
    an indexed image other than their original (or a copy the index already held of it)."""

    sampled: list[str]  # the indexed images copied (keys)
    thresholds: list[int]
    recall: dict[str, list[float]]  # edit -> recall per threshold
    false_match: list[float]  # per threshold
    default_threshold: int
    skipped: list[str] = field(default_factory=list)  # sampled images that could not be read
    near_code: str = "PDQ (256 bits)"  # what made the near codes

    def to_json(self) -> dict[str, Any]:
        return {"sampled": len(self.sampled), "thresholds": self.thresholds, "default_threshold": self.default_threshold,
                "recall": self.recall, "false_match": self.false_match, "skipped": self.skipped,
                "near_code": self.near_code}  # fmt: skip


def calibrate(index_path: str | Path, sample: int = 100, seed: int = 0, thresholds: Iterable[int] | None = None,
              min_quality: int = MIN_QUALITY, on_progress: Callable[[int], None] | None = None,
              workspace=None) -> Calibration:  # fmt: skip
    """Copy a seeded sample of the indexed images with every edit of :mod:`semhash.edits`
    (in memory: no file is written anywhere) and search the index's near tier with each copy,
    as ``semhash query`` does.  Nothing in the index changes.  ``thresholds``: by default
    :data:`CALIBRATION_THRESHOLDS` for PDQ; for an index with a near model (loaded from
    ``workspace``), 1 to a third of its bits and its default."""
    from PIL import Image

    from semhash.data import decode_views
    from semhash.edits import EDITS, edited_bytes
    from semhash.errors import ImageError
    from semhash.index.db import ImageRow, database_errors, open_index, read_meta
    from semhash.index.pathkeys import key_path
    from semhash.index.search import near_coder
    from semhash.index.tiers import load_near_index
    from semhash.workspace import Workspace

    if sample < 1:
        raise DuplicatesError(f"--sample must be at least 1, got {sample}")
    with open_index(index_path) as db, database_errors(db.path):
        db.require_near_tier()
        with db.session() as s, s.begin():
            meta = read_meta(s, db.path)
            scheme = meta.near_scheme
            near_index = load_near_index(s.connection().connection, scheme)
            rows = s.execute(select(ImageRow.id, ImageRow.path, ImageRow.near_code, ImageRow.near_quality)
                             .where(ImageRow.near_code.is_not(None)).order_by(ImageRow.id)).tuples().all()  # fmt: skip
    if not meta.bound or not rows:
        raise DuplicatesError(f"{db.path}: no indexed image has a near code: run `semhash index DIR` first")
    coder = near_coder(scheme, workspace or Workspace(), db.path)
    if thresholds is None:
        thresholds = CALIBRATION_THRESHOLDS if scheme.is_pdq else [*range(1, scheme.bits // 3 + 1), scheme.threshold]
    thresholds = sorted({int(t) for t in thresholds})
    shape = tuple(meta.input_shape or (8, 8, 1))
    order = np.random.default_rng(seed).permutation(len(rows))
    top = max(thresholds)
    recall_hits = {edit: np.zeros(len(thresholds)) for edit in EDITS}
    false_hits = np.zeros(len(thresholds))
    sampled, skipped, copies = [], [], 0
    for k in order.tolist():
        if len(sampled) >= sample:
            break
        row_id, key, code, quality = rows[k]
        if quality is not None and quality < min_quality:
            continue
        try:
            with Image.open(key_path(key)) as img:
                original = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            skipped.append(f"{key}: {exc}")
            continue
        own_ids, _ = near_index.search(np.frombuffer(code, np.uint8)[None, :], scheme.threshold)
        own = {int(row_id), *own_ids.tolist()}  # the image and the copies the index already holds of it
        for edit in EDITS:
            try:
                decoded = decode_views(f"{key} ({edit})", shape, data=edited_bytes(original, edit))
            except ImageError as exc:
                skipped.append(str(exc))
                continue
            found_ids, found_d = near_index.search(coder.codes([decoded.near])[0][0], top)
            distance = dict(zip(found_ids.tolist(), found_d.tolist()))
            mine = distance.get(int(row_id), top + 1)
            others = min((d for i, d in distance.items() if i not in own), default=top + 1)
            for t_index, t in enumerate(thresholds):
                recall_hits[edit][t_index] += mine <= t
                false_hits[t_index] += others <= t
            copies += 1
        sampled.append(key)
        if on_progress is not None:
            on_progress(len(sampled))
    if not sampled:
        raise DuplicatesError(f"{db.path}: none of the indexed images could be read to make copies of")
    n = len(sampled)
    return Calibration(
        sampled, thresholds, {edit: [round(float(h) / n, 3) for h in hits] for edit, hits in recall_hits.items()},
        [round(float(h) / max(1, copies), 4) for h in false_hits], scheme.threshold, skipped, scheme.describe(),
    )  # fmt: skip
