"""Request and response bodies of the serving API (they make its OpenAPI page)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_K = 100
MAX_QUERY_CHARS = 500
MAX_IDS = 200  # recent items, excluded items
MAX_EVENTS = 1000  # per POST /v1/events
ID = Field(min_length=1, max_length=128)

_ITEM_EXAMPLE: Any = {
    "rank": 1,
    "item_id": "i0042",
    "title": "Velora running shoes",
    "category": "Sports/Shoes",
    "price": 79.9,
    "score": 2.31,
    "reasons": "you often buy Velora; popular in Sports/Shoes this week",
}


class Item(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": _ITEM_EXAMPLE})

    rank: int
    item_id: str
    title: str | None
    category: str | None
    price: float | None
    score: float
    reasons: str | None = None
    image_url: str | None = None


class Answer(BaseModel):
    request_id: str = Field(description="quote it in the events about these items")
    model: str
    version: int
    items: list[Item]


class Recommendations(Answer):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "request_id": "3f9a1c0d2b4e6f70.9c1d2e3f4a5b6c7d",
                "model": "shopml-recommender",
                "version": 3,
                "user_id": "u1056",
                "cold_start": False,
                "items": [_ITEM_EXAMPLE],
            }
        }
    )

    user_id: str | None
    cold_start: bool = Field(description="the model knows no history of this shopper")


class RecommendBody(BaseModel):
    """An anonymous or new shopper, with what the page knows of them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "session_id": "s-77",
                "recent_items": ["i0042", "i0007"],
                "age": 34,
                "gender": "F",
                "region": "North",
                "k": 10,
            }
        },
    )

    user_id: str | None = Field(default=None, min_length=1, max_length=128)
    session_id: str | None = Field(default=None, min_length=1, max_length=128)
    recent_items: list[str] = Field(default_factory=list, max_length=MAX_IDS)
    age: float | None = Field(default=None, ge=0, le=120)
    gender: str | None = Field(default=None, max_length=32)
    region: str | None = Field(default=None, max_length=64)
    k: int = Field(default=10, ge=1, le=MAX_K)
    explain: bool = False
    category: str | None = Field(default=None, min_length=1, max_length=200)
    exclude: list[str] = Field(default_factory=list, max_length=MAX_IDS)


class SearchAnswer(Answer):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "request_id": "3f9a1c0d2b4e6f70.9c1d2e3f4a5b6c7d",
                "model": "shopml-search",
                "version": 2,
                "query": "runnig shoes",
                "corrected": "running shoes",
                "fallback": "corrected",
                "fallback_reason": "showing results for the corrected query",
                "user_id": "u1056",
                "personal": True,
                "offset": 0,
                "items": [_ITEM_EXAMPLE],
            }
        }
    )

    query: str
    corrected: str | None
    fallback: Literal["corrected", "relaxed", "category", "popular"] | None
    fallback_reason: str | None
    user_id: str | None
    personal: bool = Field(description="the shopper's interests re-ranked the results")
    offset: int


class Similar(Answer):
    item_id: str


class Event(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "type": "click",
                "user_id": "u1056",
                "item_id": "i0042",
                "request_id": "3f9a1c0d2b4e6f70.9c1d2e3f4a5b6c7d",
                "position": 1,
                "ts": "2026-12-06T10:15:00Z",
            }
        },
    )

    type: Literal["impression", "click", "add_to_cart", "purchase"]
    user_id: str = ID
    item_id: str = ID
    request_id: str | None = Field(
        default=None,
        max_length=64,
        description="the answer that showed the item; required for impressions and clicks",
    )
    position: int | None = Field(default=None, ge=1, le=1000, description="1-based, in that answer")
    session_id: str | None = Field(default=None, min_length=1, max_length=128)
    quantity: int | None = Field(default=None, ge=1, le=10_000)
    value: float | None = Field(default=None, ge=0, le=1e9)
    ts: str | None = Field(
        default=None, max_length=40, description="ISO 8601; default: when the service got it"
    )


class Events(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsAccepted(BaseModel):
    accepted: int
    request_id: str


class ServedModel(BaseModel):
    model: str
    version: int
    snapshot_id: str | None
    loaded_at: str = Field(description="when this process started serving it")
    promoted_at: str | None
    manifest_sha256: str
    precomputed_shoppers: int = Field(
        0, description="known shoppers whose plain list this process computed at load"
    )


class Models(BaseModel):
    models: list[ServedModel]
    checked_at: str | None


class Problem(BaseModel):
    """Every error: a code, a sentence, and what it concerns."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "error": "invalid_parameter",
                "message": "k: Input should be less than or equal to 100",
                "parameter": "k",
                "request_id": "3f9a1c0d2b4e6f70.9c1d2e3f4a5b6c7d",
            }
        }
    )

    error: str
    message: str
    request_id: str | None = None
    parameter: str | None = None
    item_id: str | None = None
    retry_after: int | None = None
