"""Job bodies (contract: JobCreate, ImportItemsJobCreate, ItemsReportJobCreate, Job, JobPage,
JobEvent).

`JobCreate` is a union discriminated by `kind`. Pydantic reports an error inside a member under
the member's tag (`import_items.items.3.price`) and a bad or missing tag at the body itself; the
contract names the field (`body.items.3.price`, `body.kind`), so JobCreate rewrites locations.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    MISSING,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..docs import Problem
from ..items.schemas import ItemCreate, Tag

MAX_IMPORT_ITEMS = 10_000
KINDS = ("import_items", "items_report")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_TAG_ERRORS = frozenset({"union_tag_invalid", "union_tag_not_found"})

JobKind = Literal["import_items", "items_report"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ImportItemsJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["import_items"]
    items: Annotated[list[ItemCreate], Field(min_length=1, max_length=MAX_IMPORT_ITEMS)]


class ItemsReportJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["items_report"]
    tag: Tag | MISSING = MISSING  # optional, but never null


JobCreateBody = Annotated[ImportItemsJobCreate | ItemsReportJobCreate, Field(discriminator="kind")]


class JobCreate(RootModel[JobCreateBody]):
    """What to run; `kind` selects the job."""

    @model_validator(mode="wrap")
    @classmethod
    def _contract_locations(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(
                exc.title, [_relocated(error, value) for error in exc.errors()]
            ) from None


def _relocated(error: Any, value: Any) -> InitErrorDetails:
    loc = tuple(error["loc"])
    if error["type"] in _TAG_ERRORS:
        if isinstance(value, dict):
            loc = ("kind",)
        message = "kind must be one of: " + ", ".join(KINDS) + "."
        return {
            "type": PydanticCustomError("union_tag_invalid", message),
            "loc": loc,
            "input": value.get("kind") if isinstance(value, dict) else value,
        }
    if loc and loc[0] in KINDS:
        loc = loc[1:]  # the member's tag is not part of the body
    details: InitErrorDetails = {"type": error["type"], "loc": loc, "input": error["input"]}
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details


class JobProgress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    done: Annotated[int, Field(ge=0)]
    total: Annotated[int, Field(ge=0)]


class ImportItemsResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    created: Annotated[int, Field(ge=0)]


class ItemsReportResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: Annotated[int, Field(ge=0)]
    sum: float
    mean: float | None
    p50: float | None
    p95: float | None
    per_tag: dict[str, Annotated[int, Field(ge=0)]]


def _result_is_one_of(schema: dict[str, Any]) -> None:
    # The variants exclude each other (extra="forbid"), so the contract says oneOf (null first).
    result = schema["properties"]["result"]
    variants = result.pop("anyOf")
    result["oneOf"] = sorted(variants, key=lambda variant: variant != {"type": "null"})


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_result_is_one_of)

    id: uuid.UUID
    kind: JobKind
    status: JobStatus
    progress: JobProgress
    result: ImportItemsResult | ItemsReportResult | None = Field(
        description="Set when the job succeeded."
    )
    error: Problem | None = Field(description="Set when the job failed.")
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class JobPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Job]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class JobEvent(BaseModel):
    """One Server-Sent Event; `data` is the job as JSON at that moment (documentation only:
    events.format_event writes the lines)."""

    event: Literal["progress", "succeeded", "failed", "cancelled"]
    id: Annotated[str, Field(pattern=r"^[0-9]+$")]
    data: Annotated[
        str,
        Field(
            json_schema_extra={
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/Job"},
            }
        ),
    ]
    retry: Annotated[int, Field(ge=0)] | MISSING = MISSING
