"""The HTTP API over one trained run, and the web page at ``/``.

Every id in and out is the data set's raw id (MovieLens ``MovieID`` / ``UserID``),
never an internal index. Errors are JSON ``{"detail", "field", "ids"?}``:
404 for an unknown user or movie in the path, 422 for anything wrong in the request
(unknown movie ids in a history, ``k`` out of range, malformed JSON, wrong types).
A 500 is a bug: it is logged here with its traceback, and the client gets a generic
message, never the traceback.

Only the model threads (serve/worker.py) run the model, one query each at a time. The
recommendation endpoints are ``async``: on the event loop they check the request,
queue its query and await its answer (no thread waits for the model), then render it
(a fraction of a millisecond). The other endpoints are plain ``def`` lookups, run in
FastAPI's thread pool. A known user's answer is computed once and kept (the top
``keep_top``); ``bstrec serve`` ranks every known user in the background from the
start, while it already answers requests.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from bstrec.data.interactions import DataError
from bstrec.recommend import STACK_MAX, Ranked, Recommender, UnknownIdError
from bstrec.results import Movie, Recommendation, Watched
from bstrec.serve import model_process
from bstrec.serve.labels import choices, feature_label
from bstrec.serve.model_process import ModelProcess
from bstrec.serve.worker import ModelWorkers, WorkerSettings
from bstrec.values import plain, plain_id

log = logging.getLogger("bstrec.serve")

STATIC = Path(__file__).parent / "static"
ANSWER_TIMEOUT_S = 120  # a model thread answers every query; past this, a logged 500
MAX_HISTORY = 200  # far above the model's window (it reads the newest max_len only)
MAX_K = 100
RawId = int | Annotated[str, Field(min_length=1, max_length=64)]


# ------------------------------------------------------------------ schemas
# Responses are made of results.py's records (the Python API's own): a recommendation
# is what Run.recommend returns, and its JSON is Recommendations.to_dict().
@dataclass(frozen=True)
class MovieStats(Movie):
    """A movie with its popularity in the training data."""

    n_ratings: int = field(metadata={"description": "ratings in the training data (popularity)"})
    mean_rating: float | None = field(metadata={"description": "mean stars; null without ratings"})


class MovieSearch(BaseModel):
    query: str
    total: int = Field(description="matches before the limit")
    movies: list[MovieStats]


# Every field of a response is always there: the schema says so (required), also of
# the records' fields that have defaults in Python (Recommendation.because, Watched.time).
ALL_REQUIRED = ConfigDict(json_schema_serialization_defaults_required=True)


class RecommendationsOut(BaseModel):
    # results.Recommendations (a list with attributes) as a JSON object: its to_dict()
    model_config = ALL_REQUIRED
    user_id: int | str | None = Field(description="null for a history-only request")
    task: str = Field(description="ranking | rating")
    picks: list[Recommendation]
    history: list[Watched] = Field(description="recent watches, newest first")


class UserOut(BaseModel):
    model_config = ALL_REQUIRED
    user_id: int | str
    n_ratings: int
    features: dict[str, str]
    history: list[Watched] = Field(description="recent watches, newest first")


class Choice(BaseModel):
    value: str
    label: str


class FeatureChoices(BaseModel):
    name: str
    label: str
    choices: list[Choice]


class Precompute(BaseModel):
    """The background ranking of known users (`bstrec serve --precompute`)."""

    enabled: bool
    complete: bool = Field(description="every known user's answer is ready")
    users_done: int
    users_total: int
    keep_top: int = Field(
        description="picks kept per known user; a request for more is computed on demand"
    )
    seconds: float = Field(description="since it started (until it finished)")


class Stacking(BaseModel):
    """Requests that shared a forward pass (``Recommender.rank``)."""

    max_queries: int = Field(description="most queries ranked in one pass")
    shapes_checked: int = Field(
        description="stack shapes checked against one query at a time, bit for bit"
    )
    shapes_exact: int = Field(
        description="of those, the shapes that gave every query its own answer (the "
        "others are ranked one query at a time)"
    )
    stacked_answers: int = Field(description="answers that came from a stack of several")
    turns: int = Field(description="turns of the model threads that served requests")
    requests_served: int = Field(
        description="requests those turns served (over turns: how many shared a turn)"
    )


class Health(BaseModel):
    status: str
    run: str = Field(description="run folder name")
    model: str
    task: str
    data_set: str
    n_users: int
    n_movies: int
    max_len: int = Field(description="history positions the model reads (newest)")
    max_history: int = Field(description="longest history accepted by POST /recommendations")
    candidates: int = Field(
        description="movies the model's cheap stage retrieves for the head to rank, per "
        "request (0: the head ranks the whole catalogue)"
    )
    user_features: dict[str, list[str]] = Field(
        description="optional demographics for POST /recommendations, with their values"
    )
    user_feature_choices: list[FeatureChoices] = Field(
        description="the same features for a person to choose from: a readable name, and "
        "the values in a natural order, each with a label (MovieLens occupations by name, "
        "age groups youngest first); send the value"
    )
    precompute: Precompute
    stacking: Stacking


FeatureValue = int | Annotated[str, Field(max_length=64)]


class UserFeatures(BaseModel):
    """Optional demographics of a person not in the data, with values as GET /health lists
    them (MovieLens 1M: age "25-34", gender "F", occupation "12"). A data set may have
    others (ML-1M also has zip1, the first digit of the zip code): pass them by name."""

    # the user features are the data set's, so other names are allowed and then
    # checked against the model's list, with an error naming the field
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, FeatureValue]
    gender: FeatureValue | None = None
    age: FeatureValue | None = None
    occupation: FeatureValue | None = None


class HistoryRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"history": [2571, 1196, 260], "k": 10}]}
    )
    history: list[RawId] = Field(
        min_length=1,
        max_length=MAX_HISTORY,
        description="raw movie ids watched, oldest first, newest last",
    )
    ratings: list[Annotated[float, Field(ge=0.5, le=5)] | None] | None = Field(
        None,
        description="optional stars of each history movie, in the same order (null: not "
        "rated); a rating model reads the person's taste from them",
    )
    k: int = Field(10, ge=1, le=MAX_K)
    user: UserFeatures | None = None
    now: datetime | None = Field(
        None,
        description="the time of the request, from which the model measures how long ago "
        "each movie was watched (ISO 8601, UTC unless it says otherwise, or Unix seconds). "
        "Default: the data set's last rating. The history is read as watched a minute "
        "apart, the last one at this time.",
    )

    @field_validator("ratings")
    @classmethod
    def _one_per_movie(cls, ratings, info):
        history = info.data.get("history")  # absent when history itself was invalid
        if ratings is not None and history is not None and len(ratings) != len(history):
            raise ValueError(
                f"{len(ratings)} given for {len(history)} movies; give one per movie "
                "(null: not rated)"
            )
        return ratings


class ErrorOut(BaseModel):
    detail: str
    field: str | None = Field(None, description="the request field at fault")
    ids: list[int | str] | None = Field(None, description="the unknown ids")
    errors: list[dict[str, Any]] | None = Field(None, description="every validation error")


ERRORS: dict[int | str, dict[str, Any]] = {422: {"model": ErrorOut}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}, **ERRORS}


class ApiError(Exception):
    def __init__(self, status: int, detail: str, field: str | None = None, ids: list | None = None):
        self.status, self.detail, self.field, self.ids = status, detail, field, ids


# ------------------------------------------------------------------ service
def fold(text: str) -> str:
    """Lower case, accents removed, punctuation as spaces: 'Amélie' -> 'amelie'."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[^\w]+", " ", plain).split())


class Service:
    """The recommender plus what the endpoints need precomputed (search, popularity)."""

    def __init__(self, rec: Recommender, workers: ModelWorkers | ModelProcess):
        self.rec = rec
        self.workers = workers
        ds = rec.ds
        self.n_ratings = np.bincount(ds.item, minlength=ds.n_items)
        if ds.has_ratings:
            rated = ~np.isnan(ds.rating)
            sums = np.bincount(ds.item[rated], weights=ds.rating[rated], minlength=ds.n_items)
            counts = np.bincount(ds.item[rated], minlength=ds.n_items)
            with np.errstate(invalid="ignore", divide="ignore"):
                self.mean_rating = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        else:
            self.mean_rating = np.full(ds.n_items, np.nan)
        self.folded = [fold(str(t)) for t in ds.item_titles]
        # most rated first: the order for an empty query and for ties
        self.by_popularity = np.argsort(-self.n_ratings, kind="stable")

    # lookups never touch the model: they run on the request's own thread
    def movie(self, idx: int) -> MovieStats:
        mean = self.mean_rating[idx]
        return self.rec.record(
            MovieStats,
            idx,
            n_ratings=int(self.n_ratings[idx]),
            mean_rating=None if np.isnan(mean) else round(float(mean), 3),
        )

    def movie_index(self, raw: str) -> int:
        idx = self.rec.item_pos.get(str(raw))
        if idx is None:
            raise ApiError(
                404, f"unknown movie id: {raw}{self._unrated_note([raw])}", "movie_id", [raw]
            )
        return idx

    def search(self, q: str, limit: int) -> dict:
        query = fold(q)
        tokens = query.split()
        hits = []
        for idx in self.by_popularity.tolist():
            title = self.folded[idx]
            if all(t in title for t in tokens):
                # the whole query as typed ranks first, then popularity
                hits.append(
                    (0 if title.startswith(query) else 1 if query in title else 2, len(hits), idx)
                )
        hits.sort()
        return {
            "query": q,
            "total": len(hits),
            "movies": [self.movie(idx) for _, _, idx in hits[:limit]],
        }

    def user(self, raw: str, limit: int) -> dict:
        u = self._user_index(raw)
        ds = self.rec.ds
        lo, hi = int(ds.user_offsets[u]), int(ds.user_offsets[u + 1])
        features = {
            name: ds.user_vocab[name][int(ds.user_features[name][u])]
            for name in self.rec.run.user_feature_names
        }
        return {
            "user_id": plain(ds.user_ids[u]),
            "n_ratings": hi - lo,
            "features": features,
            "history": self.rec.history(u, limit),
        }

    async def for_user(self, raw: str, k: int, timing=None, now: datetime | None = None) -> dict:
        u = self._user_index(raw)
        # a known user's answer is kept once computed (in the background from the start,
        # or by an earlier request): no turn at the model then
        ranked = self.rec.cached(u, k) if now is None else None
        if ranked is not None:
            if timing is not None:
                timing("queue;dur=0.00, model;dur=0.00")
        else:
            try:
                query = self.rec.user_query(u, k, _seconds(now))
            except DataError as e:
                raise ApiError(422, str(e), "now") from None
            job = self.workers.submit(query)
            ranked = await _answer(job)
            if timing is not None:
                timing(job.server_timing())
        return self.rec.answer_user(u, ranked, k).to_dict()

    async def for_history(self, req: HistoryRequest, timing=None) -> dict:
        missing = [m for m in req.history if str(m) not in self.rec.item_pos]
        if missing:
            missing = list(dict.fromkeys(missing))
            shown = ", ".join(str(m) for m in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise ApiError(
                422,
                f"history: unknown movie id{'s' if len(missing) > 1 else ''}: "
                f"{shown}{more}{self._unrated_note(missing)}",
                "history",
                missing,
            )
        features = self._features(req.user)
        try:
            query = self.rec.history_query(
                list(req.history), req.k, features, _seconds(req.now), req.ratings
            )
        except UnknownIdError as e:  # checked above; kept for a race-free guarantee
            raise ApiError(422, str(e), "history", list(e.ids)) from None
        except DataError as e:
            raise ApiError(422, str(e), "user") from None
        job = self.workers.submit(query)
        ranked = await _answer(job)
        if timing is not None:
            timing(job.server_timing())
        return self.rec.answer_history(query, ranked, req.k).to_dict()

    def health(self) -> dict:
        run = self.rec.run
        ds = self.rec.ds
        p = self.workers.progress
        return {
            "status": "ok",
            "run": run.path.name,
            "model": run.config.model.name,
            "task": self.rec.model.task,
            "data_set": ds.name,
            "n_users": ds.n_users,
            "n_movies": ds.n_items,
            "max_len": self.rec.max_len,
            "max_history": MAX_HISTORY,
            "candidates": self.rec.candidates,
            "user_features": {n: list(ds.user_vocab[n][1:]) for n in run.user_feature_names},
            "user_feature_choices": [
                {
                    "name": n,
                    "label": feature_label(n),
                    "choices": choices(n, list(ds.user_vocab[n][1:]), ds.name),
                }
                for n in run.user_feature_names
            ],
            "precompute": {
                "enabled": p.enabled,
                "complete": p.complete,
                "users_done": p.done if p.enabled else self.rec.n_kept,
                "users_total": p.total if p.enabled else ds.n_users,
                "keep_top": self.rec.keep_top,
                "seconds": round(p.seconds, 2),
            },
            "stacking": {
                "max_queries": STACK_MAX if self.rec.candidates else 1,
                **self.workers.stats(),
            },
        }

    def _user_index(self, raw: str) -> int:
        try:
            return self.rec.user_index(raw)
        except UnknownIdError:
            raise ApiError(404, f"unknown user id: {raw}", "user_id", [raw]) from None

    def _features(self, user: UserFeatures | None) -> dict[str, str] | None:
        """Check demographics here, so an error can name the field."""
        if user is None:
            return None
        given = {n: str(v) for n, v in user.model_dump().items() if v is not None}
        known = self.rec.run.user_feature_names
        for name, value in given.items():
            if name not in known:
                raise ApiError(
                    422,
                    f"user.{name}: this model does not use it "
                    f"(it uses: {', '.join(known) or 'none'})",
                    f"user.{name}",
                )
            vocab = self.rec.ds.user_vocab[name][1:]
            if value not in vocab:
                raise ApiError(
                    422,
                    f"user.{name}: unknown value {value!r}; one of {', '.join(vocab)}",
                    f"user.{name}",
                )
        return given

    def _unrated_note(self, ids: list) -> str:
        unrated = self.rec.ds.unrated_items or {}
        if any(str(m) in unrated or m in unrated for m in ids):
            return " (listed in the movie file but never rated, so not in the catalogue)"
        return ""


# ------------------------------------------------------------------ app
def create_app(
    source: str | Path | Recommender,
    settings: WorkerSettings = WorkerSettings(),
    say: Callable[[str], None] | None = None,
) -> FastAPI:
    """The API and web page for a run folder (loaded here, once) or a loaded Recommender.

    Its model threads start here (with the precompute, if ``settings`` asks for it) and
    stop when the app shuts down; ``say`` gets the precompute's progress lines.
    """
    if isinstance(source, Recommender):
        rec = source
    else:
        from bstrec.run_dir import load_run

        rec = Recommender(load_run(source))
    own_process = settings.process and model_process.available()
    if settings.process and not own_process:
        log.warning("the model process is Linux-only: the model runs in the server's process")
    kind = ModelProcess if own_process else ModelWorkers
    workers: ModelWorkers | ModelProcess = kind(rec, settings, say).start()
    svc = Service(rec, workers)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        workers.start()  # already running, unless an earlier shutdown stopped them
        workers.attach(asyncio.get_running_loop())  # a model process's answers: read here
        yield
        workers.detach()
        workers.stop()

    app = FastAPI(
        title="bstrec",
        version="1",
        description="Movie recommendations from a Behavior Sequence Transformer. "
        "Ids are the data set's raw ids.",
        lifespan=lifespan,
    )
    app.state.service = svc
    _install_error_handlers(app)

    @app.get(
        "/health",
        response_model=Health,
        responses={503: {"model": ErrorOut, "description": "the model process has exited"}},
        tags=["service"],
    )
    def health() -> dict:
        """Which model and data set this server answers for; a 503 once the model process
        has exited (every recommendation would fail: restart the server)."""
        if workers.failure is not None:
            raise ApiError(503, f"the model process {workers.failure}; restart the server")
        return svc.health()

    @app.get("/movies", response_model=MovieSearch, responses=ERRORS, tags=["movies"])
    def search_movies(
        q: str = Query(
            "",
            max_length=200,
            description="title words, any case, accents optional; empty: most rated",
        ),
        limit: int = Query(20, ge=1, le=100),
    ) -> dict:
        """Title search, most rated first among equally good matches."""
        return svc.search(q, limit)

    @app.get("/movies/{movie_id}", response_model=MovieStats, responses=NOT_FOUND, tags=["movies"])
    def get_movie(movie_id: str = PathParam(max_length=64)) -> MovieStats:
        return svc.movie(svc.movie_index(movie_id))

    @app.get("/users/{user_id}", response_model=UserOut, responses=NOT_FOUND, tags=["users"])
    def get_user(
        user_id: str = PathParam(max_length=64), limit: int = Query(20, ge=1, le=MAX_HISTORY)
    ) -> dict:
        """A known user's demographics and recent watches, newest first."""
        return svc.user(user_id, limit)

    @app.get(
        "/users/{user_id}/recommendations",
        response_model=RecommendationsOut,
        responses=NOT_FOUND,
        tags=["recommendations"],
    )
    async def recommend_for_user(
        response: Response,
        user_id: str = PathParam(max_length=64),
        k: int = Query(10, ge=1, le=MAX_K),
        now: datetime | None = Query(
            None,
            description="the time of the request (ISO 8601, UTC unless it says otherwise, "
            "or Unix seconds), not before the user's last watch. Default: the time of "
            "their last watch, whose answer is computed once and kept.",
        ),
    ) -> dict:
        """Top-k movies a known user has not watched, each with what drove it.

        The Server-Timing header says how long the request waited for the model and
        how long the model took (ms); both 0 for an answer already kept."""
        return await svc.for_user(user_id, k, _timing_header(response), now)

    @app.post(
        "/recommendations",
        response_model=RecommendationsOut,
        responses=ERRORS,
        tags=["recommendations"],
    )
    async def recommend_for_history(req: HistoryRequest, response: Response) -> dict:
        """Top-k for anyone, from a list of watched movies (newest last).

        Server-Timing as for a known user."""
        return await svc.for_history(req, _timing_header(response))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        body = {"detail": exc.detail, "field": exc.field}
        if exc.ids is not None:
            # numbers where the ids are numbers, however they were given (path, JSON)
            body["ids"] = list(dict.fromkeys(plain_id(i) for i in exc.ids))
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # pydantic's own error objects may hold the offending input or exceptions;
        # keep only what names the field and says what is wrong
        errors = [_error(e) for e in exc.errors()]
        first = errors[0] if errors else {"field": None, "msg": "invalid request"}
        where = f"{first['field']}: " if first["field"] else ""
        return JSONResponse(
            {"detail": f"{where}{first['msg']}", "field": first["field"], "errors": errors},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot even decode (not UTF-8, say): for the
            # client that is malformed input like any other, so the same 422
            return JSONResponse(
                {"detail": "body: malformed request body (expected UTF-8 JSON)", "field": "body"},
                status_code=422,
            )
        return JSONResponse(
            {"detail": str(exc.detail), "field": None},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error", "field": None}, status_code=500)


def _error(e: dict) -> dict:
    if e.get("type") == "json_invalid":  # its loc is ('body', character offset)
        pos = e.get("loc", ("body", "?"))[-1]
        return {
            "field": "body",
            "msg": f"malformed JSON at character {pos}",
            "type": "json_invalid",
        }
    return {
        "field": _field(e.get("loc", ())),
        # a validator's own ValueError reads as its message, without pydantic's prefix
        "msg": str(e.get("msg", "invalid")).removeprefix("Value error, "),
        "type": str(e.get("type", "")),
    }


def _field(loc: tuple | list) -> str | None:
    """('body', 'user', 'age') -> 'user.age'; ('query', 'k') -> 'k'; ('body',) -> 'body'."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    # pydantic names the member of an `int | str` union that failed: not a field
    while len(parts) > 1 and parts[-1] in _UNION_TAGS:
        parts.pop()
    return ".".join(parts) or None


_UNION_TAGS = {"int", "str", "constrained-str", "float", "bool", "list", "dict", "none"}


def _timing_header(response: Response) -> Callable[[str], None]:
    def set_header(value: str) -> None:
        response.headers["Server-Timing"] = value

    return set_header


async def _answer(job) -> Ranked:
    """Wait for a model thread's answer without holding a thread of our own."""
    return await asyncio.wait_for(asyncio.wrap_future(job.future), ANSWER_TIMEOUT_S)


def _seconds(when: datetime | None) -> int | None:
    """A request time as Unix seconds; a time without a zone is read as UTC."""
    if when is None:
        return None
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
