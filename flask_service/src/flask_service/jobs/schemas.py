"""Job bodies (contract: JobCreate, ImportItemsJobCreate, ItemsReportJobCreate, Job, JobPage,
JobEvent) and request parameters.

JobCreate is a `oneOf` chosen by `kind`: `JobCreate` checks `kind` first (missing or unknown
is a 422 at `body.kind`), then loads the whole body with the kind's own schema, so an unknown
field is a 422 at `body.<field>` and an item's field at `body.items.<n>.<field>`.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, post_load, pre_dump, validate

from ..items.schemas import ItemCreate, ItemListArgs, Tag
from ..models import Job as JobRow

IMPORT_ITEMS = "import_items"
ITEMS_REPORT = "items_report"
KINDS = (IMPORT_ITEMS, ITEMS_REPORT)
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
MAX_IMPORT_ITEMS = 10_000
LAST_EVENT_ID_PATTERN = r"^[0-9]{1,18}$"
_SCHEMAS = "#/components/schemas/"


def Kind(kind: str) -> fields.String:
    return fields.String(required=True, validate=validate.OneOf([kind]))


class ImportItemsJobCreate(ma.Schema):
    kind = Kind(IMPORT_ITEMS)
    items = fields.List(
        fields.Nested(ItemCreate),
        required=True,
        validate=validate.Length(1, MAX_IMPORT_ITEMS),
    )


class ItemsReportJobCreate(ma.Schema):
    kind = Kind(ITEMS_REPORT)
    tag = Tag()


KIND_SCHEMAS: dict[str, type[ma.Schema]] = {
    IMPORT_ITEMS: ImportItemsJobCreate,
    ITEMS_REPORT: ItemsReportJobCreate,
}


class JobCreate(ma.Schema):
    """`kind` picks the schema that loads the whole body (its document is JOB_CREATE_DOC)."""

    class Meta:
        unknown = ma.INCLUDE  # the kind's own schema refuses unknown fields

    kind = fields.String(required=True, validate=validate.OneOf(KINDS))

    @post_load
    def _load_by_kind(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        loaded: dict[str, Any] = KIND_SCHEMAS[data["kind"]]().load(data)
        return loaded


def _nullable_one_of(*names: str) -> dict[str, Any]:
    return {"oneOf": [{"type": "null"}, *({"$ref": _SCHEMAS + name} for name in names)]}


class JobProgress(ma.Schema):
    done = fields.Integer(required=True, validate=validate.Range(min=0))
    total = fields.Integer(required=True, validate=validate.Range(min=0))


class ImportItemsResult(ma.Schema):
    created = fields.Integer(required=True, validate=validate.Range(min=0))


class ItemsReportResult(ma.Schema):
    count = fields.Integer(required=True, validate=validate.Range(min=0))
    sum = fields.Float(required=True)
    mean = fields.Float(required=True, allow_none=True)
    p50 = fields.Float(required=True, allow_none=True)
    p95 = fields.Float(required=True, allow_none=True)
    per_tag = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(validate=validate.Range(min=0)),
        required=True,
    )


class Job(ma.Schema):
    id = fields.UUID(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    progress = fields.Nested(JobProgress, required=True)
    result = fields.Raw(
        required=True,
        metadata={
            "description": "Set when the job succeeded.",
            **_nullable_one_of("ImportItemsResult", "ItemsReportResult"),
        },
    )
    error = fields.Raw(
        required=True,
        metadata={"description": "Set when the job failed.", **_nullable_one_of("Problem")},
    )
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    started_at = fields.DateTime(required=True, allow_none=True)
    finished_at = fields.DateTime(required=True, allow_none=True)

    @pre_dump
    def _from_row(self, job: JobRow | dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if isinstance(job, dict):
            return job
        return {
            "id": job.id,
            "kind": job.kind,
            "status": job.status,
            "progress": {"done": job.progress_done, "total": job.progress_total},
            "result": job.result,
            "error": job.error,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }


class JobPage(ma.Schema):
    items = fields.List(fields.Nested(Job), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class JobListArgs(ItemListArgs):
    """The items list's limit and cursor; jobs have no filters."""

    class Meta:
        exclude = ("tag", "q")


class JobEvent(ma.Schema):
    """One Server-Sent Event; its document is JOB_EVENT_DOC (a string holding JSON)."""

    event = fields.String(
        required=True, validate=validate.OneOf(["progress", "succeeded", "failed", "cancelled"])
    )
    id = fields.String(required=True)
    data = fields.String(required=True)
    retry = fields.Integer(validate=validate.Range(min=0))


class LastEventIdHeader(ma.Schema):
    last_event_id = fields.String(
        data_key="Last-Event-ID",
        validate=validate.Regexp(LAST_EVENT_ID_PATTERN),
        metadata={"description": "Resume after this event id (sent by EventSource on reconnect)."},
    )


# What marshmallow cannot say: a oneOf chosen by a discriminator, and a string carrying JSON.
JOB_CREATE_DOC: dict[str, Any] = {
    "description": "What to run; `kind` selects the job.",
    "oneOf": [
        {"$ref": _SCHEMAS + "ImportItemsJobCreate"},
        {"$ref": _SCHEMAS + "ItemsReportJobCreate"},
    ],
    "discriminator": {
        "propertyName": "kind",
        "mapping": {kind: _SCHEMAS + schema.__name__ for kind, schema in KIND_SCHEMAS.items()},
    },
}
JOB_EVENT_DOC: dict[str, Any] = {
    "type": "object",
    "description": "One Server-Sent Event; `data` is the job as JSON at that moment.",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["progress", "succeeded", "failed", "cancelled"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": _SCHEMAS + "Job"},
        },
        "retry": {"type": "integer", "minimum": 0},
    },
}
