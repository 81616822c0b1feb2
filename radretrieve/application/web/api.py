"""The JSON API under /api: the CLI's `--format json` hits, catalog rows, thumbnails, health and info.

Handlers are plain `def`s, so Starlette runs them on its thread pool: the searcher and the catalog are
thread-safe (per-call search parameters, a duckdb cursor per thread) and text queries go through the
batching encoder thread. The pydantic models below only document the responses in the OpenAPI document;
responses are built as plain dicts (no validation pass on the hot path).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from radretrieve.application.web.service import WebService, route_item_id

K_HELP = "Hits to return (1 to 10000)."
WHERE_HELP = "SQL boolean expression over the catalog view, as the CLI's --where (off with --no-where)."
KIND_HELP = "volume | image"
MODALITY_HELP = "Only this modality (an equality filter, allowed with --no-where too)."
BODY_PART_HELP = "Only this body part (an equality filter, allowed with --no-where too)."
MODE_HELP = (
    "vector | keyword | hybrid (reciprocal rank fusion of both), as the CLI's --mode; default: hybrid where the "
    "out dir has a full-text index, else vector."
)
STUDY_HELP = "An item id or a study key from the index (paths are not accepted)."


class EvidenceModel(BaseModel):
    """What found a keyword or hybrid hit (docs/guide/hybrid-search.md)."""

    mode: str
    matched_terms: list[str]
    highlights: list[list[int]]  # [start, end) character (code point) spans of matching words in `text`
    vector_rank: int | None
    vector_score: float | None
    keyword_rank: int | None
    keyword_score: float | None
    fused_rank: int | None
    exact_words: list[str]  # hybrid: the query words an exact match holds (such hits rank first)


class HitModel(BaseModel):
    """One hit: the fields and order of `radretrieve search --format json`."""

    rank: int
    score: float
    item_id: int
    kind: str
    study_key: str
    source: str
    modality: str
    body_part: str
    description: str
    text: str
    labels: dict[str, str]
    evidence: EvidenceModel | None = None  # keyword and hybrid modes only


class QueryResultModel(BaseModel):
    query: str
    hits: list[HitModel]


class ErrorModel(BaseModel):
    error: str  # the CLI's one-line message


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorModel, "description": "bad where, k out of range, bad kind, empty query"},
    403: {"model": ErrorModel, "description": "where is turned off (--no-where), or the preview is withheld"},
    404: {"model": ErrorModel, "description": "unknown study or item id (also a negative or too large one)"},
    421: {"model": ErrorModel, "description": "the Host header is not a name this server answers to"},
    422: {"model": ErrorModel, "description": "a parameter of the wrong type (an item id that is no integer)"},
}


def api_router(service: WebService, login: bool = False) -> APIRouter:
    """The routes; `login`: the server has a token (the page then offers to sign out)."""
    router = APIRouter(prefix="/api", responses=ERRORS)

    @router.get("/health", summary="200 once the model, indexes and catalog are loaded")
    def health() -> JSONResponse:
        return JSONResponse(service.health())

    @router.get("/info", summary="what `radretrieve info` says about the served out dir")
    def info() -> JSONResponse:
        return JSONResponse(service.info)

    @router.get("/options", summary="the values the page's filters offer, whether where is on, whether to sign in")
    def options() -> JSONResponse:
        return JSONResponse({**service.options, "login": login})

    @router.get("/search", summary="text -> images and volumes", responses={200: {"model": QueryResultModel}})
    def search(
        q: str = Query(..., description="The query text."),
        k: int = Query(10, description=K_HELP),
        where: str | None = Query(None, description=WHERE_HELP),
        kind: str | None = Query(None, description=KIND_HELP),
        modality: str | None = Query(None, description=MODALITY_HELP),
        body_part: str | None = Query(None, description=BODY_PART_HELP),
        mode: str | None = Query(None, description=MODE_HELP),
    ) -> JSONResponse:
        return JSONResponse(service.search_text(q, k, kind, where, modality, body_part, mode))

    @router.get("/similar", summary="study -> similar studies", responses={200: {"model": QueryResultModel}})
    def similar(
        study: str = Query(..., description=STUDY_HELP),
        k: int = Query(10, description=K_HELP),
        where: str | None = Query(None, description=WHERE_HELP),
        kind: str | None = Query(None, description=KIND_HELP),
        modality: str | None = Query(None, description=MODALITY_HELP),
        body_part: str | None = Query(None, description=BODY_PART_HELP),
    ) -> JSONResponse:
        return JSONResponse(service.similar(study, k, kind, where, modality, body_part))

    @router.get("/reports", summary="study -> nearest reports", responses={200: {"model": QueryResultModel}})
    def reports(
        study: str = Query(..., description=STUDY_HELP),
        k: int = Query(5, description=K_HELP),
        where: str | None = Query(None, description=WHERE_HELP.replace("view", "reports view")),
        mode: str | None = Query(None, description=MODE_HELP),
    ) -> JSONResponse:
        return JSONResponse(service.reports(study, k, where, mode))

    @router.get("/item/{item_id}", summary="the catalog row of an item or report (no embedding)")
    def item(item_id: str) -> JSONResponse:
        return JSONResponse(service.item(route_item_id(item_id)))

    @router.get(
        "/thumbnail/{item_id}.png",
        summary="windowed thumbnail PNG of an indexed item (volumes: three sampled slices)",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def thumbnail(item_id: str) -> Response:
        png = service.thumbnail_png(route_item_id(item_id))
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    return router
