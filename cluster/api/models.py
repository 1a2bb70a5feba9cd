"""Request and response bodies of the region API (documented in its OpenAPI schema).

Request models forbid unknown fields and non-finite numbers, so a malformed body is
refused before anything is read or written, with an error naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints

__all__ = [
    "ErrorOut",
    "FeaturesIn",
    "FeaturesOut",
    "InteractionIn",
    "InteractionsIn",
    "InteractionsOut",
    "ItemOut",
    "RecommendOut",
    "WriteOut",
]

FEATURE_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
EVENT_ID = r"^[A-Za-z0-9_.:\-]{1,64}$"
FeatureName = Annotated[str, StringConstraints(pattern=FEATURE_NAME)]
FeatureValue = (
    StrictBool
    | StrictInt
    | float
    | Annotated[str, StringConstraints(max_length=256)]
    | Annotated[list[float], Field(max_length=256)]
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class FeaturesIn(_In):
    """``PUT /v1/users/{user_id}/features``: the user's features, optionally their embedding."""

    features: dict[FeatureName, FeatureValue] = Field(
        max_length=256, description="feature name -> number, string, boolean or list of numbers"
    )
    embedding: list[float] | None = Field(
        default=None, description="the user's embedding (storage.vector.dim numbers), optional"
    )


class InteractionIn(_In):
    """One interaction of ``POST /v1/interactions``."""

    user_id: str = Field(description="'<jurisdiction>:<id>', e.g. eu:42")
    item_id: str = Field(description="1-128 characters of letters, digits, '_', '.', '-'")
    type: Literal["purchase", "click", "view"] = Field(
        description="purchase and click are flushed before view"
    )
    ts: float | None = Field(default=None, ge=0, description="unix seconds; default now")
    event_id: Annotated[str, StringConstraints(pattern=EVENT_ID)] | None = Field(
        default=None, description="idempotency key; default generated (send one to retry safely)"
    )


class InteractionsIn(_In):
    """``POST /v1/interactions``: a batch (at most ``deploy.ingest.max_batch``)."""

    interactions: list[InteractionIn] = Field(min_length=1)


class ErrorOut(BaseModel):
    """Every error answer."""

    error: str = Field(description="what was wrong, with the value, and what to do")
    code: str = Field(description="machine-readable: invalid_request, residency, buffer_full, ...")
    field: str | None = Field(default=None, description="the request field at fault")


class FeaturesOut(BaseModel):
    """``GET /v1/users/{user_id}/features``."""

    user_id: str
    features: dict[str, Any]
    updated_at: float | None = None
    served_by: str = Field(description="the region that processed the request")
    plan: dict[str, Any] = Field(description="the router's plan: entry, replica, fallbacks, reason")


class WriteOut(BaseModel):
    """``PUT /v1/users/{user_id}/features``."""

    user_id: str
    version: int
    written_to: str = Field(description="the region of the replica that took the write")
    failed_over: bool
    reason: str
    durable: bool = True


class InteractionsOut(BaseModel):
    """``POST /v1/interactions``: acknowledged only when durable."""

    accepted: int
    event_ids: list[str]
    by_region: dict[str, int]
    durable: bool


class ItemOut(BaseModel):
    """``GET /v1/items/{item_id}``."""

    item_id: str
    item: dict[str, Any]
    shard: str
    served_by: str


class RecommendOut(BaseModel):
    """``GET /v1/recommend/{user_id}``."""

    user_id: str
    items: list[dict[str, Any]]
    strategy: str
    degraded: bool
    degraded_stage: str | None
    reason: str
    stage_ms: dict[str, float]
    budgets_ms: dict[str, float]
    served_by: str
