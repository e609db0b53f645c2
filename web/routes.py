"""The HTTP API: thin routes over :class:`semhash.index.browse.IndexReader`.

Every route is ``async def``.  Searches by code or id and a row by id call the reader on the
event loop: a millisecond of SQLite and the lookup, less than a thread-pool hop costs.  Whatever
can take long (decoding uploads, thumbnails, files, the status or bucket statistics computed
once after a re-index, reports) runs in the thread pool, one hop per request.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Header, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from semhash.index.browse import THUMBNAIL_SIZES, BadQuery, FileBytes, Forbidden, ImageRecord, IndexReader, NotFound, SearchResult
from semhash.tiers import MAX_GROUP_THRESHOLD, NEAR_THRESHOLD
from semhash.web.models import (
    AcceptOut,
    BucketOut,
    BucketsOut,
    DecisionIn,
    DecisionOut,
    DuplicatesOut,
    Error,
    FigureOut,
    ImageOut,
    MatchOut,
    PlanOut,
    QueryOut,
    ReportOut,
    StatusOut,
)

MAX_CODES_PER_REQUEST = 64
MAX_ANSWER_ROWS = 10_000  # matches one request may ask for in all (codes x limit): a bounded answer
MAX_UPLOAD_NAME = 200


def _check_answer_size(queries: int, limit: int) -> None:
    if queries * limit > MAX_ANSWER_ROWS:
        raise BadQuery(
            f"{queries} codes x limit {limit} = {queries * limit:,} matches: a request may ask for at most "
            f"{MAX_ANSWER_ROWS:,} in all (lower the limit, or split the codes over several requests)"
        )


_QUERIES_JSON = TypeAdapter(list[QueryOut])


async def _in_a_thread(search, *args, offset: int = 0) -> Response:
    """Run a search and turn its results into JSON bytes, both in a worker thread: the event
    loop only sends the bytes, however large the answer (it is the shape of the route's
    response model, which documents it)."""

    def answer() -> bytes:
        results = search(*args)
        return _QUERIES_JSON.dump_json([_query_out(r, offset) for r in (results if isinstance(results, list) else [results])])

    return Response(content=await run_in_threadpool(answer), media_type="application/json")


def _light(queries: int, radius: int, limit: int) -> bool:
    """Whether a search is small enough to answer on the event loop (sub-millisecond, no
    thread hand-off); anything larger runs in a worker thread, so that one big request never
    holds up the others."""
    return queries == 1 and radius <= 2 and limit <= 100


async def get_reader(request: Request) -> IndexReader:
    return request.app.state.reader


async def fresh_reader(request: Request) -> IndexReader:
    """The reader, its search cache reloaded first (in a worker thread) if the index changed:
    the fast routes below then run on the event loop without ever waiting for a reload."""
    reader: IndexReader = request.app.state.reader
    if reader.stale():
        await run_in_threadpool(reader.refresh)
    return reader


Reader = Annotated[IndexReader, Depends(get_reader)]
FreshReader = Annotated[IndexReader, Depends(fresh_reader)]
Radius = Annotated[int, Query(ge=0, le=64, description="Hamming radius (inclusive).")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="At most this many matches per query.")]
Offset = Annotated[int, Query(ge=0, le=MAX_ANSWER_ROWS - 1, description="Matches to skip (nearest first): the next page of a search. offset + limit is at most 10,000.")]
TierParam = Annotated[
    Literal["all", "exact", "near", "similar"],
    Query(description="Which matches: exact (the same bytes), near (copies: PDQ), similar (the model's code), or all."),
]
NearThreshold = Annotated[
    int | None, Query(ge=0, le=128, description=f"Near tier: the most bits a copy's near code may differ by (PDQ: of 256, default {NEAR_THRESHOLD}; an index with a near model: at most half its bits, default the index's).")
]
ImageId = Annotated[int, PathParam(ge=0, le=2**63 - 1, description="Row id of an indexed image.")]

ERRORS = {
    400: {"model": Error, "description": "A malformed request body, or a Host header this server does not answer to"},
    404: {"model": Error, "description": "No such image, bucket, report or figure"},
    409: {"model": Error, "description": "The index is empty, unreadable right now, or its model cannot be loaded"},
    422: {"model": Error, "description": "A malformed parameter or an unreadable image"},
    503: {"model": Error, "description": "Busy for a moment (a read while the index was written, the database "
          "restarting, too many uploads being decoded): try again after Retry-After seconds"},
}

router = APIRouter(prefix="/api", responses=ERRORS)


# --------------------------------------------------------------------------- converters
def _query_out(result: SearchResult, offset: int = 0) -> QueryOut:
    return QueryOut(
        query=result.query,
        code=result.code,
        bits=result.bits,
        total=result.total,
        matches=[MatchOut(id=m.id, path=m.path, tier=m.tier, distance=m.distance, label=m.label) for m in result.matches[offset:]],
        note=result.note,
        hint=result.hint,
    )


def _image_out(record: ImageRecord) -> ImageOut:
    return ImageOut(
        id=record.id,
        path=record.path,
        label=record.label,
        code=record.code,
        bits=record.bits,
        file_url=f"/api/images/{record.id}/file",
        thumbnail_url=f"/api/images/{record.id}/thumbnail",
    )


def _file_response(found: FileBytes, if_none_match: str | None) -> Response:
    headers = {
        "ETag": found.etag,
        "Cache-Control": "no-cache",  # revalidate: a re-index may give the id another file
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(found.name)}",
    }
    if if_none_match is not None and found.etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(content=found.data, media_type=found.media_type, headers=headers)


def _upload_name(filename: str | None, number: int) -> str:
    name = Path(filename or "").name.strip()
    return name[:MAX_UPLOAD_NAME] if name else f"upload {number}"


# --------------------------------------------------------------------------- routes
@router.get("/status", response_model=StatusOut, summary="What the index holds")
async def status(request: Request, reader: Reader) -> StatusOut:
    return StatusOut(**await run_in_threadpool(reader.status), review=request.app.state.review)


@router.post(
    "/search/upload",
    response_model=list[QueryOut],
    responses={413: {"model": Error, "description": "Over the request's byte, file-count or pixel limit"}},
    summary="Search by uploaded images",
)
async def search_upload(
    request: Request,
    reader: Reader,
    files: Annotated[
        list[UploadFile], File(min_length=1, description="One or more image files (PNG, JPEG, GIF, BMP, TIFF, WebP).")
    ],
    radius: Radius = 2,
    limit: Limit = 100,
    tier: TierParam = "all",
    near_threshold: NearThreshold = None,
    offset: Offset = 0,
) -> list[QueryOut]:
    """Hash each uploaded image with the index's model, then list the indexed images that
    match it, as `semhash query` does: exact copies (the same bytes), near-duplicates (PDQ
    within `near_threshold`), similar images (within `radius`), in that order, each with its
    tier: one result per file, in upload order; `limit` matches from `offset`."""
    _check_answer_size(len(files), offset + limit)
    uploads = [(_upload_name(f.filename, i + 1), await f.read()) for i, f in enumerate(files)]
    gone = threading.Event()  # set when the client disconnects: its decodes are dropped
    watcher = asyncio.create_task(_watch_for_disconnect(request, gone))
    try:
        return await _in_a_thread(reader.search_uploads, uploads, radius, offset + limit, gone.is_set, tier, near_threshold,
                                  offset=offset)  # type: ignore[return-value]
    finally:
        watcher.cancel()


async def _watch_for_disconnect(request: Request, gone: threading.Event) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.25)
    gone.set()


@router.get("/search/id/{image_id}", response_model=list[QueryOut], summary="Search from an indexed image")
async def search_id(reader: FreshReader, image_id: ImageId, radius: Radius = 2, limit: Limit = 100, tier: TierParam = "all",
                    near_threshold: NearThreshold = None, offset: Offset = 0) -> list[QueryOut]:  # fmt: skip
    """The indexed images that match indexed image `image_id`, from its stored codes: the
    same bytes (exact), copies (near: PDQ within `near_threshold`), images within `radius`
    (similar), in that order, each with its tier; `limit` matches from `offset`."""
    _check_answer_size(1, offset + limit)
    if tier == "similar" and _light(1, radius, offset + limit):
        return [_query_out(reader.search_id(image_id, radius, offset + limit, tier), offset)]
    return await _in_a_thread(reader.search_id, image_id, radius, offset + limit, tier, near_threshold, offset=offset)  # type: ignore[return-value]


@router.get("/search/code", response_model=list[QueryOut], summary="Search by code")
async def search_code(
    reader: FreshReader,
    code: Annotated[
        list[str],
        Query(
            min_length=1,
            max_length=MAX_CODES_PER_REQUEST,
            description="A code: exactly n_bits characters 0/1 (unit 0 first, as `semhash query` prints it) "
            "or else a decimal integer (a result's `note` says when the text could be read both ways). "
            "Repeat the parameter for several codes.",
        ),
    ],
    radius: Radius = 2,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[QueryOut]:
    """The indexed images within `radius` of each code, `limit` from `offset` (nearest first).
    At most 10,000 matches in all may be asked for (codes x (offset + limit))."""
    _check_answer_size(len(code), offset + limit)
    if _light(len(code), radius, offset + limit):
        return [_query_out(r, offset) for r in reader.search_codes(code, radius, offset + limit)]
    return await _in_a_thread(reader.search_codes, code, radius, offset + limit, offset=offset)  # type: ignore[return-value]


NearGroupThreshold = Annotated[
    int | None, Query(ge=0, le=MAX_GROUP_THRESHOLD, description=f"Near tier: the most bits a copy's near code may differ by (PDQ: of 256, default {NEAR_THRESHOLD}; an index with a near model: at most half its bits, default the index's).")
]
GroupRadius = Annotated[int | None, Query(ge=0, le=64, description="Similar tier: Hamming radius (needed with tier=similar or all).")]
KeepRule = Annotated[Literal["largest", "oldest", "newest", "shortest-path", "original-format", "oldest-capture"], Query(description="Which image of a group is kept.")]
MinQuality = Annotated[int | None, Query(ge=0, le=100, description="PDQ quality below which an image takes no part in the near tier.")]
Folder = Annotated[str | None, Query(max_length=4096, description="Only groups with an image inside this folder (at any depth), as the paths are stored.")]
Label = Annotated[str | None, Query(max_length=4096, description="Only groups with an image of this label.")]


@router.get("/duplicates", response_model=DuplicatesOut, summary="Groups of copies in the index")
async def duplicates(
    reader: Reader,
    tier: TierParam = "near",
    near_threshold: NearGroupThreshold = None,
    radius: GroupRadius = None,
    keep: KeepRule = "largest",
    min_quality: MinQuality = None,
    folder: Folder = None,
    label: Label = None,
    offset: Annotated[int, Query(ge=0, le=10**9, description="Groups to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many groups.")] = 100,
) -> DuplicatesOut:
    """Every group of copies, as `semhash duplicates --json` lists them (the same bytes, and
    copies within the near threshold; with tier=similar look-alikes too), largest reclaimable
    first, `limit` groups from `offset`; totals cover all of them (inside `folder`, with
    `label`).  The groups are computed once per index state, in the background as soon as
    it changes; decisions are applied afresh."""
    report, facets = await run_in_threadpool(reader.duplicates, tier, near_threshold, radius, keep, min_quality, folder, label)
    return DuplicatesOut(**report.to_json(offset, limit), **facets.to_json(), offset=offset, limit=limit, folder=folder, label=label)


@router.get("/duplicates/plan", response_model=PlanOut, summary="The review's plan, for `semhash duplicates --plan`")
async def plan(reader: Reader, tier: TierParam = "near", near_threshold: NearGroupThreshold = None, radius: GroupRadius = None,
               keep: KeepRule = "largest", min_quality: MinQuality = None) -> Response:  # fmt: skip
    """Every group decided 'keep' on the review page, with the image kept and those to move,
    as a file to download: `semhash duplicates --plan FILE --move-to DIR` moves them (the
    page itself never moves or deletes a file)."""
    found = await run_in_threadpool(reader.plan, tier, near_threshold, radius, keep, min_quality)
    body = PlanOut(**found).model_dump_json(indent=1).encode()
    return Response(content=body, media_type="application/json",
                    headers={"Content-Disposition": 'attachment; filename="semhash-plan.json"'})  # fmt: skip


@router.post("/duplicates/accept", response_model=AcceptOut, summary="Keep the suggestion for every undecided group",
             responses={403: {"model": Error, "description": "The server was not started with --review"}})  # fmt: skip
async def accept(request: Request, reader: Reader, tier: TierParam = "near", near_threshold: NearGroupThreshold = None,
                 radius: GroupRadius = None, keep: KeepRule = "largest", min_quality: MinQuality = None,
                 folder: Folder = None, label: Label = None) -> AcceptOut:  # fmt: skip
    """Decide 'keep the suggested keeper' for every group of the listing not decided yet
    (inside `folder`, with `label`, when given), in one transaction.  Only with
    `semhash serve --review`."""
    if not request.app.state.review:
        raise Forbidden("decisions are recorded only by a server started with `semhash serve --review`")
    decided = await run_in_threadpool(reader.accept_suggestions, tier, near_threshold, radius, keep, min_quality, folder, label)
    return AcceptOut(decided=decided)


@router.post("/duplicates/decisions", response_model=DecisionOut, summary="Record a decision about a group of duplicates",
             responses={403: {"model": Error, "description": "The server was not started with --review"},
                        413: {"model": Error, "description": "A request body over the server's byte limit"}})  # fmt: skip
async def decide(request: Request, reader: Reader, body: DecisionIn) -> DecisionOut:
    """Record what the user decided about one group (its `key` as /api/duplicates lists
    it): `not_duplicates` (the group is not listed again until its membership changes),
    `keep` (with `keeper`), or `skip`.  The last decision about a group wins; a group that
    has changed since it was listed is a 409.  Only with `semhash serve --review`; the
    server never moves or deletes a file."""
    if not request.app.state.review:
        raise Forbidden("decisions are recorded only by a server started with `semhash serve --review`")
    key = await run_in_threadpool(reader.record_decision, body.key, body.decision, body.keeper)
    return DecisionOut(key=key, decision=body.decision, keeper=body.keeper if body.decision == "keep" else None)


@router.get("/images", response_model=ImageOut, summary="An indexed image's row, by its path")
async def image_at(reader: FreshReader,
                   path: Annotated[str, Query(min_length=1, max_length=4096, description="The full path, as results show it.")]) -> ImageOut:  # fmt: skip
    """The row of the image indexed at `path` (exact: the path as results and
    `semhash query` show it); 404 when no image is indexed there."""
    return _image_out(await run_in_threadpool(reader.image_at, path))


@router.get("/images/{image_id}", response_model=ImageOut, summary="An indexed image's row")
async def image(reader: FreshReader, image_id: ImageId) -> ImageOut:
    return _image_out(reader.image(image_id))


def _binary(media_type: str, description: str) -> dict:
    """OpenAPI for a route whose 200 is a file, not JSON."""
    return {"response_class": Response, "responses": {200: {"content": {media_type: {}}, "description": description}}}


IfNoneMatch = Annotated[str | None, Header()]


# HEAD too: download tools and caches ask for a file's size and ETag first
@router.api_route("/images/{image_id}/file", methods=["GET", "HEAD"], summary="An indexed image's file",
                  **_binary("image/*", "The image file"))  # fmt: skip
async def image_file(reader: Reader, image_id: ImageId, if_none_match: IfNoneMatch = None) -> Response:
    """Only files that are rows of the index, reached by row id, inside the folder they
    were indexed from.  A file a browser cannot show (HEIC, a camera's RAW file, TIFF) comes as
    a JPEG of its picture (at most 4096 pixels a side)."""
    return _file_response(await run_in_threadpool(reader.image_file, image_id), if_none_match)


@router.api_route("/images/{image_id}/thumbnail", methods=["GET", "HEAD"], summary="An indexed image's thumbnail",
                  **_binary("image/png", "A PNG thumbnail"))  # fmt: skip
async def image_thumbnail(
    reader: Reader,
    image_id: ImageId,
    size: Annotated[int, Query(ge=THUMBNAIL_SIZES[0], le=THUMBNAIL_SIZES[1])] = 128,
    if_none_match: IfNoneMatch = None,
) -> Response:
    return _file_response(await run_in_threadpool(reader.thumbnail, image_id, size), if_none_match)


@router.get("/buckets", response_model=BucketsOut, summary="The largest buckets, with purity")
async def buckets(reader: Reader, n: Annotated[int, Query(ge=0, le=100)] = 20) -> BucketsOut:
    """Computed once per index state (the first call after a re-index reads every code)."""
    return BucketsOut(**await run_in_threadpool(reader.largest_buckets, n))


@router.get("/buckets/{code}", response_model=BucketOut, summary="A bucket's members")
async def bucket(
    reader: Reader,
    code: Annotated[str, PathParam(description="Bits (unit 0 first) or a decimal integer.")],
    limit: Limit = 100,
) -> BucketOut:
    found = await run_in_threadpool(reader.bucket, code, limit)
    return BucketOut(code=found.code, bits=found.bits, size=found.size, members=[_image_out(m) for m in found.members])


@router.get("/report", response_model=ReportOut, summary="The latest evaluation report of the index's model")
async def report(reader: Reader) -> ReportOut:
    found = await run_in_threadpool(reader.latest_report)
    if found is None:
        model = reader.model_name
        raise NotFound(
            f"no evaluation report for model {model!r} yet: run 'semhash evaluate'"
            if model
            else "no evaluation report: the index is empty"
        )
    return ReportOut(
        model=found.model,
        name=found.name,
        written_at=datetime.fromtimestamp(found.written_at, timezone.utc).isoformat(timespec="seconds"),
        headline=found.headline,
        figures=[FigureOut(name=name, url=f"/api/report/figures/{name}") for name in found.figures],
        report=found.result,
    )


@router.get(
    "/report/figures/{name}", summary="A figure of the latest evaluation report", **_binary("image/png", "A report figure")
)
async def report_figure(reader: Reader, name: str) -> FileResponse:
    return FileResponse(await run_in_threadpool(reader.report_figure, name), media_type="image/png", headers={"Cache-Control": "no-cache"})
