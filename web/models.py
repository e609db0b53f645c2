"""Pydantic response models of the HTTP API (the shapes in /openapi.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_serializer


class Error(BaseModel):
    """Every error: one line saying what was wrong (plus, for a malformed request, the
    parameters that failed validation)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class MatchOut(BaseModel):
    id: int = Field(description="Row id of the indexed image (use it with /api/images/{id} and /api/search/id/{id}).")
    path: str
    tier: str = Field(description="Why it matches: exact (the same bytes), near (a copy: PDQ codes within the near "
                      "threshold), similar (the model's code within the radius).")
    distance: int = Field(description="Hamming distance to the query in the code of its tier (0 for exact; PDQ's 256 "
                          "bits for near; the model's code for similar).")
    label: str | None


class QueryOut(BaseModel):
    """One query, in the shape of `semhash query --json` plus each match's id and the total."""

    query: str = Field(description="The uploaded file's name, the indexed image's path, or the code's bits.")
    code: int = Field(description="The query's code: bit i is coding unit i.")
    bits: str = Field(description="The code's bits, unit 0 first.")
    total: int = Field(description="Indexed images within the radius (matches holds at most `limit` of them).")
    matches: list[MatchOut]
    note: str | None = Field(
        None,
        description="Only for a code that could be read two ways (0/1 digits of another length than n_bits "
        "are an integer: '0101' on a 30-bit index is 101): which reading was used.",
    )
    hint: str | None = Field(
        None,
        description="Only for an uploaded image unlike the images the model was trained on (colour against a grey "
        "model, or much larger than its input): why its matches may mean little.",
    )

    @model_serializer(mode="wrap")
    def _note_only_when_there_is_one(self, handler):  # the shape of `semhash query --json`
        data = handler(self)
        for optional in ("note", "hint"):
            if data.get(optional) is None:
                data.pop(optional, None)
        return data


class ImageOut(BaseModel):
    id: int
    path: str
    label: str | None
    code: int
    bits: str
    file_url: str
    thumbnail_url: str


class BucketOut(BaseModel):
    """The images whose code is exactly `code`."""

    code: int
    bits: str
    size: int = Field(description="Images in the bucket (members holds at most `limit`, by path).")
    members: list[ImageOut]


class BucketSummaryOut(BaseModel):
    code: int
    bits: str
    size: int
    purity: float | None = Field(description="Gini purity of the bucket's labels; null without labels.")
    majority_label: str | None
    majority_share: float | None


class BucketsOut(BaseModel):
    images: int
    buckets: int
    purity: float | None = Field(description="Size-weighted bucket purity over the whole index.")
    coverage: float | None = Field(description="Share of images whose bucket holds another image.")
    largest: list[BucketSummaryOut]


class StatusOut(BaseModel):
    index_path: str
    count: int
    labels: int
    model: str | None
    model_fingerprint: str | None
    bits: int | None
    input_shape: list[int] | None
    near_code: str = Field("PDQ (256 bits)", description="What makes the near tier's codes: PDQ, or a model (`semhash index --near-model`).")
    near_threshold: int = Field(31, description="The near tier's default threshold, in bits of that code.")
    created_at: str
    last_indexed_at: str | None
    generation: int
    schema_version: int
    empty: bool
    model_available: bool
    model_error: str | None
    search_cache: str | None
    review: bool = Field(False, description="Whether this server records decisions about duplicates (`semhash serve --review`).")


class FigureOut(BaseModel):
    name: str
    url: str


class ReportOut(BaseModel):
    model: str
    name: str = Field(description="The report's folder under HOME/reports/.")
    written_at: str
    headline: str
    figures: list[FigureOut]
    report: dict[str, Any] = Field(description="The report.json written by `semhash evaluate`.")


class MemberOut(BaseModel):
    id: int
    path: str
    tier: str = Field(description="How it is linked to the group's keeper: exact, near or similar ('keeper' for the keeper).")
    distance: int = Field(description="Distance to the keeper in that tier's code.")
    size: int = Field(description="Bytes.")
    width: int | None
    height: int | None
    mtime: float = Field(description="The file's modification time, seconds since the epoch.")
    label: str | None = Field(None, description="The label it was indexed with.")
    taken_at: float | None = Field(None, description="When the photo was taken (EXIF DateTimeOriginal), seconds since the epoch; null when it says nothing.")
    camera: str | None = Field(None, description="The camera's make and model (EXIF).")
    format: str | None = Field(None, description="The file format as decoded: JPEG, PNG, WEBP, HEIF, AVIF, a RAW file's extension (DNG, CR2, ...).")


class GroupOut(BaseModel):
    key: str = Field(description="sha256 of the group's sorted paths: what a decision about it is recorded under.")
    decision: str | None = Field(None, description="The decision recorded for exactly this group: keep or skip (groups marked not_duplicates are not listed).")
    decided_keeper: str | None = Field(None, description="With decision keep: the path chosen to keep.")
    reclaimable_bytes: int
    keeper: MemberOut
    duplicates: list[MemberOut]


class DuplicatesTotals(BaseModel):
    groups: int
    redundant_files: int
    reclaimable_bytes: int
    images: int
    too_flat: int = Field(description="Images left out of the near tier: too flat for PDQ.")
    without_near_code: int
    hidden_by_decisions: int


class FolderCount(BaseModel):
    folder: str
    groups: int = Field(description="Groups with an image inside this folder (at any depth), before decisions.")


class LabelCount(BaseModel):
    label: str
    groups: int = Field(description="Groups with an image of this label, before decisions.")


class DuplicatesOut(BaseModel):
    """`semhash duplicates --json`, a page of its groups at a time (largest reclaimable first)."""

    groups: list[GroupOut]
    totals: DuplicatesTotals
    tiers: list[str]
    near_threshold: int
    radius: int | None
    keep: str
    offset: int
    limit: int
    folder: str | None = Field(None, description="Only groups with an image inside this folder (at any depth).")
    label: str | None = Field(None, description="Only groups with an image of this label.")
    folders: list[FolderCount] = Field(description="The folders with the most groups (at most 200), whatever the folder and label asked for.")
    labels: list[LabelCount] = Field(description="Every label of a grouped image, with its number of groups.")


class DecisionIn(BaseModel):
    """A decision about one group of duplicates (``serve --review`` only)."""

    key: str = Field(pattern="^[0-9a-f]{64}$", description="The group's key, as /api/duplicates lists it.")
    decision: Literal["not_duplicates", "keep", "skip"]
    keeper: str | None = Field(None, max_length=4096, description="With keep: the path of the member to keep.")


class DecisionOut(BaseModel):
    key: str = Field(description="The group's key (sha256 of its sorted paths).")
    decision: str
    keeper: str | None


class AcceptOut(BaseModel):
    decided: int = Field(description="Groups decided 'keep the suggested keeper' by this request (those undecided before).")


class PlanGroupOut(BaseModel):
    key: str
    keeper: str = Field(description="The path kept.")
    duplicates: list[str] = Field(description="The paths `semhash duplicates --plan FILE --move-to DIR` moves.")


class PlanOut(BaseModel):
    """The review's plan: every group decided 'keep', for `semhash duplicates --plan FILE --move-to DIR`."""

    format: Literal["semhash-plan"]
    version: int
    index: str
    tiers: list[str]
    near_threshold: int
    radius: int | None
    keep: str
    groups: list[PlanGroupOut]
