"""The region API: FastAPI under uvicorn, one app per region, documented in OpenAPI.

``geoshard up`` runs ``uvicorn geoshard.cluster.api.app:create_app --factory --workers N``
with ``GEOSHARD_DIR`` (the state dir) and ``GEOSHARD_REGION`` in the environment. Every
``/v1`` and ``/internal`` route needs ``Authorization: Bearer <DIR/token>`` (401
otherwise); ``/healthz``, ``/metrics`` and the OpenAPI pages are open on loopback.

Public routes (see ``/docs``): ``GET/PUT /v1/users/{user_id}/features``,
``GET /v1/users/{user_id}/interactions``, ``GET /v1/items/{item_id}``,
``POST /v1/interactions``, ``GET /v1/recommend/{user_id}?k=&context=``, ``GET /healthz``,
``GET /metrics``. Optional on every user route: ``region=`` to ask that the request be
processed in that region (refused with 403 when residency forbids it). Requests are
planned and served by :class:`~geoshard.cluster.service.RegionService`; a request whose
entry is another region is forwarded there through the fault proxy.

Errors are JSON ``{"error", "code", "field"}``: 400/413/415/422 for malformed requests
(naming the field and the fix; nothing is written), 401 without the token, 403 for a
residency refusal, 404 for an absent user or item, 429 with ``Retry-After`` when the
ingestion buffer is full, 503 with ``Retry-After`` when no allowed region can serve now
or when the process already serves ``deploy.admission.max_inflight`` requests
(``overloaded``: see :class:`Admission`).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hmac
import json
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geoshard import __version__
from geoshard.cluster import metrics as m
from geoshard.cluster.admission import CURRENT, AdaptiveLimit, Slots
from geoshard.cluster.api.models import (
    ErrorOut,
    FeaturesIn,
    FeaturesOut,
    InteractionsIn,
    InteractionsOut,
    ItemOut,
    RecommendOut,
    WriteOut,
)
from geoshard.cluster.ingest import Interaction
from geoshard.cluster.service import RegionService, RequestRefused, parse_user, refusal_of
from geoshard.cluster.state import StateDir
from geoshard.errors import GeoshardError, InputError, did_you_mean
from geoshard.keys import DataKey, UserKey, validate_item_id
from geoshard.spec import load_spec
from geoshard.storage.keylayout import parse_key_text
from geoshard.storage.tiering import encode_embedding

__all__ = ["Admission", "build_app", "create_app"]

_JSON = "application/json"
_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorOut} for s in (400, 401, 403, 404, 413, 415, 422, 429, 503)
}
#: How far in the future an interaction's ts may be (clock skew allowance).
_MAX_FUTURE_S = 300.0


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")), status, headers=headers, media_type=_JSON
    )


def _error(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {"error": message, "code": code, "field": field}
    if extra:
        body.update(extra)
    return _json(body, status, headers)


def _refused(exc: RequestRefused) -> Response:
    extra = dict(exc.extra)
    field = extra.pop("field", None)
    return _error(exc.status, exc.code, str(exc), field=field, headers=exc.headers, extra=extra)


# --------------------------------------------------------------------------- the gate
class Gate:
    """Authentication and body limits, before any parsing (a pure ASGI middleware).

    * ``/v1/...`` and ``/internal/...`` need ``Authorization: Bearer <token>`` (401);
    * a body must be JSON (415) and at most ``max_bytes`` (413): requests with a
      ``Content-Length`` are judged on it, chunked bodies are counted as they arrive.
    """

    def __init__(self, app: ASGIApp, token: str, max_bytes: int) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        protected = path.startswith(("/v1/", "/internal/"))
        if not protected and scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if protected and not hmac.compare_digest(
            headers.get(b"authorization", b""), self._expected
        ):
            await _error(
                401,
                "unauthorized",
                "missing or wrong bearer token; send Authorization: Bearer <token> "
                "with the token from the deployment's state dir (file 'token')",
                field="Authorization",
                headers={"WWW-Authenticate": "Bearer"},
            )(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        length = headers.get(b"content-length")
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            shown = ctype.decode(errors="replace") or "none"
            await _error(
                415,
                "unsupported_media_type",
                f"Content-Type: {shown} is not accepted; send the body as JSON with "
                "Content-Type: application/json",
                field="Content-Type",
            )(scope, receive, send)
            return
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _error(
                413,
                "body_too_large",
                f"the body is {int(length):,} bytes, over the {self.max_bytes:,}-byte "
                "limit (deploy.max_body_bytes); split it into smaller requests",
                field="body",
            )(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return msg

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _error(
                413,
                "body_too_large",
                f"the body is over the {self.max_bytes:,}-byte limit; split it",
                field="body",
            )(scope, receive, send)


class _TooLarge(Exception):
    pass


#: Weight of a new event-loop lag sample in the smoothed lag of :class:`Admission`.
_LAG_ALPHA = 0.2


class Admission:
    """Admission control of one API process (a pure ASGI middleware).

    A ``/v1`` request is answered 503 ``overloaded`` with ``Retry-After`` straight from
    the event loop, before its body is read or parsed, when

    * the process's in-flight bound is reached. The bound adapts
      (:class:`~geoshard.cluster.admission.AdaptiveLimit`): ``limit`` for the bursts of
      a lightly used process, ``sustained_limit`` while the time-averaged in-flight count
      says it is saturated (``deploy.admission.max_inflight`` and
      ``sustained_inflight``); or
    * the event loop runs more than ``max_loop_lag_s`` late (sampled every ``sample_s``,
      smoothed over about five samples) and at least half of the bound is in flight:
      the process is saturated, so every request admitted now would wait behind the
      others.

    A request waiting on another region (a forwarded request, a read of another
    replica) gives its slot back while it waits (:func:`geoshard.cluster.admission.
    waiting_on_peer`): it uses no CPU here, and ~100 ms cross-region calls would
    otherwise fill a bound sized for CPU work at light load.

    A refusal costs a fraction of a millisecond of CPU, so the admitted requests keep
    their latency and the process's memory stays bounded (a queue in front of the
    thread pool would grow without limit instead). The second rule is the event-loop
    delay test of Fastify's under-pressure and Node's toobusy: the in-flight bound alone
    lets a CPU-bound process saturate, and then the refusals themselves wait in the
    accept queue. ``/healthz``, ``/metrics`` and the region-to-region ``/internal``
    routes are never refused for load (replication and failover reads must go on). The
    counters live on the event loop, so no lock is needed.
    """

    def __init__(
        self,
        app: ASGIApp,
        region: str,
        limit: int,
        retry_after_s: float,
        max_loop_lag_s: float = 0.005,
        sample_s: float = 0.005,
        sustained_limit: int | None = None,
    ) -> None:
        self.app = app
        self.region = region
        #: requests this process works on (a request waiting on another region gives its
        #: slot back meanwhile: :mod:`geoshard.cluster.admission`)
        self.slots = Slots()
        self.limiter = AdaptiveLimit(limit, min(limit, sustained_limit or limit))
        self.max_loop_lag_s = max_loop_lag_s
        self.sample_s = sample_s
        self.loop_lag_s = 0.0
        self._sampler: asyncio.Task[None] | None = None
        self._retry_after = str(max(1, math.ceil(retry_after_s)))
        self._refusal_headers = [
            (b"content-type", _JSON.encode()),
            (b"retry-after", self._retry_after.encode()),
        ]
        self._refused = m.ADMISSION_REFUSED.labels(region)

    @property
    def limit(self) -> int:
        """The in-flight bound now."""
        return self.limiter.bound

    async def _sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.sample_s)
            lag = max(0.0, loop.time() - t0 - self.sample_s)
            # smoothed (time constant ~5 samples): a burst that holds the loop once, such
            # as a few large bodies parsed back to back, is not saturation
            self.loop_lag_s += _LAG_ALPHA * (lag - self.loop_lag_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self._sampler is None and self.max_loop_lag_s > 0:
            self._sampler = asyncio.get_running_loop().create_task(self._sample_lag())
        now = time.monotonic()
        self.limiter.observe(self.slots.inflight, now)  # the average up to now
        limit = self.limiter.bound
        # the loop-lag rule applies from half the bound in flight: a late loop with little
        # in flight is the machine's CPU contention, not this process's load
        busy = self.inflight >= max(1, limit // 2) and self.loop_lag_s > self.max_loop_lag_s
        if busy or not self.slots.take(limit):
            await self._refuse(limit, send)
            return
        self.limiter.observe(self.slots.inflight, now)
        token = CURRENT.set(self.slots)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT.reset(token)
            self.slots.give_back()
            self.limiter.observe(self.slots.inflight, time.monotonic())

    @property
    def inflight(self) -> int:
        """Requests this process works on now."""
        return self.slots.inflight

    async def _refuse(self, limit: int, send: Send) -> None:
        """The 503 ``overloaded`` answer, sent as two raw ASGI messages: the same body
        as every other error (``error``, ``code``, ``field``), without building a
        Response (refusals are the cheap path under overload: every microsecond spent
        here is taken from the admitted requests)."""
        self._refused.inc()
        body = json.dumps(
            {
                "error": f"this API process is full ({self.inflight} requests in flight, "
                f"bound {limit} of at most {self.limiter.max_limit}; event loop "
                f"{self.loop_lag_s * 1000:.1f} ms late): retry after the Retry-After "
                "seconds, or add API servers (deploy.admission sets the bounds)",
                "code": "overloaded",
                "field": None,
            },
            separators=(",", ":"),
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [*self._refusal_headers, (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- validation errors
def _field(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    where = loc[0] if loc and loc[0] in ("query", "path", "header") else ""
    return f"{out} ({where})" if where and out else (out or "body")


_UNION_TAGS = {
    "bool",
    "int",
    "float",
    "str",
    "list[float]",
    "constrained-str",
    "function-after",
    "json-or-python[json=list[float],python=chain[is-instance[list],function-after]]",
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_message(errors: list[dict[str, Any]]) -> tuple[int, str, str]:
    """``(status, field, message)`` for pydantic's errors of one request: the first
    problem, said with the field, the value and the fix."""
    e = errors[0]
    typ = str(e.get("type"))
    loc = tuple(e.get("loc", ()))
    if typ == "json_invalid":
        ctx = e.get("ctx") or {}
        return (
            400,
            "body",
            (
                f"the body is not valid JSON ({ctx.get('error', 'syntax error')} at "
                f"position {loc[-1] if loc else '?'}); send a JSON object"
            ),
        )
    loc = tuple(p for p in loc if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p)))
    field = _field(loc)
    got = f" (got {_shown(e.get('input'))})" if "input" in e and typ != "missing" else ""
    msg = str(e.get("msg", "is invalid"))
    if typ == "missing":
        text = f"required field '{field}' is missing; add it"
    elif typ == "extra_forbidden":
        text = f"unknown field '{field}'; remove it (see the OpenAPI schema at /docs)"
    elif typ == "finite_number":
        text = f"{field} must be a finite number{got}; NaN and Infinity are refused"
    elif typ == "literal_error":
        text = f"{field}: {msg.replace('Input should be', 'must be')}{got}"
    elif len(loc) >= 3 and loc[-2] != "features" and "features" in loc and loc[-1] != "features":
        text = (
            f"{field} must be a finite number, a string of at most 256 characters, a "
            f"boolean or a list of at most 256 numbers{got}"
        )
    elif typ == "string_pattern_mismatch" and "features" in loc:
        text = f"feature name '{loc[-1]}' is invalid; use letters, digits and '_', starting with a letter or '_'"
    elif typ == "string_pattern_mismatch":
        text = f"{field} has characters or a length that are not allowed{got}; use 1-64 of letters, digits, '_', '.', ':', '-'"
    else:
        text = f"{field}: {msg.replace('Input should be', 'must be')}{got}"
    return 422, field, text


# --------------------------------------------------------------------------- the app
def create_app() -> FastAPI:
    """The app of ``$GEOSHARD_REGION`` in the deployment of ``$GEOSHARD_DIR`` (uvicorn's
    ``--factory`` entry point).

    Raises:
        ConfigError: the variables are missing or name no deployment.
    """
    from geoshard.errors import ConfigError

    root, region = os.environ.get("GEOSHARD_DIR"), os.environ.get("GEOSHARD_REGION")
    if not root or not region:
        raise ConfigError("set GEOSHARD_DIR (the state dir) and GEOSHARD_REGION; geoshard up does")
    return build_app(Path(root), region)


def build_app(root: Path, region: str) -> FastAPI:
    """The API of ``region`` for the deployment in state dir ``root``."""
    state_dir = StateDir(root)
    spec = load_spec(state_dir.spec_file)
    token = state_dir.read_token()
    holder: dict[str, RegionService] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        svc = RegionService(spec, state_dir.read_state(), region, token)
        svc.start()
        holder["svc"] = svc
        # everything loaded at start (item index, spec, clients) moves to the permanent
        # generation: a full collection no longer walks it, which held the event loop
        # (and so every refusal) for ~100 ms at a time under load
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            svc.close()

    app = FastAPI(
        title=f"geoshard region API ({region})",
        version=__version__,
        description=(
            "One region of a geoshard deployment. Every request is planned by the shared "
            "Router (entry region allowed to process the data, replica, failover) and reads "
            "through the shared cache walk (L1 in process, L2 and regional in the region's "
            "cache servers). Personal data is never processed outside the regions its "
            "jurisdiction allows: such requests are refused (403) with the reason. "
            "Authenticate with `Authorization: Bearer <token>` (the file `token` in the "
            "deployment's state dir)."
        ),
        lifespan=lifespan,
        responses=_ERRORS,
    )
    # the last added runs first: the Gate (401, 413, 415) then admission (503)
    adm = spec.deploy.admission
    app.add_middleware(
        Admission,
        region=region,
        limit=adm.max_inflight,
        retry_after_s=adm.retry_after_s,
        max_loop_lag_s=adm.max_loop_lag_ms / 1000.0,
        sustained_limit=adm.sustained_inflight,
    )
    app.add_middleware(Gate, token=token, max_bytes=spec.deploy.max_body_bytes)
    _document_auth(app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        status, field, text = validation_message(list(exc.errors()))
        return _error(status, "invalid_request", f"{text}; nothing was written", field=field)

    @app.exception_handler(RequestRefused)
    async def _refusal(_: Request, exc: RequestRefused) -> Response:
        return _refused(exc)

    def svc() -> RegionService:
        return holder["svc"]

    def serve(route: str, fn: Callable[[], Response]) -> Response:
        t0 = time.perf_counter()
        try:
            resp = fn()
        except GeoshardError as exc:
            resp = _refused(refusal_of(exc))
        m.REQUEST_SECONDS.labels(region, route, f"{resp.status_code // 100}xx").observe(
            time.perf_counter() - t0
        )
        return resp

    def client_of(request: Request) -> tuple[str, bool]:
        forwarded = "x-geoshard-forwarded-by" in request.headers
        client = request.headers.get("x-geoshard-client-region") or region
        svc().check_region(client, "X-Geoshard-Client-Region")
        return client, forwarded

    def forward(entry: str, request: Request, client: str, body: bytes | None = None) -> Response:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        status, data, headers = svc().peers.call(
            entry,
            request.method,
            path,
            body=body,
            timeout_s=15.0,
            headers={"X-Geoshard-Client-Region": client, "Content-Type": _JSON},
        )
        out = {"X-Geoshard-Entry": entry}
        if "retry-after" in headers:
            out["Retry-After"] = headers["retry-after"]
        return Response(data, status, headers=out, media_type=headers.get("content-type", _JSON))

    def pin_of(value: str | None) -> str | None:
        return None if value is None else svc().check_region(value, "region")

    def plan_dict(plan: Any) -> dict[str, Any]:
        return {
            "entry": plan.entry,
            "replica": plan.node,
            "replica_region": plan.node_region,
            "fallbacks": list(plan.fallbacks),
            "reason": plan.reason,
        }

    region_q = Query(
        None, description="process the request in this region (refused when residency forbids it)"
    )

    # ------------------------------------------------------------------ health, metrics
    @app.get("/healthz", tags=["ops"], summary="Is this region healthy (its hot tier answers)?")
    def healthz() -> Response:
        h = svc().healthz()
        return _json(h, 200 if h["ok"] else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics of the region's processes")
    def metrics() -> Response:
        data, ctype = m.render()
        return Response(data, 200, media_type=ctype)

    # ------------------------------------------------------------------ features
    @app.get(
        "/v1/users/{user_id}/features",
        tags=["users"],
        response_model=FeaturesOut,
        summary="A user's features, from the nearest allowed replica through the caches",
    )
    def get_features(request: Request, user_id: str, region: str | None = region_q) -> Response:
        def run() -> Response:
            user = parse_user(user_id)
            client, fwd = client_of(request)
            s = svc()
            plan = s.plan(
                "feature_read",
                user,
                "read",
                client_region=client,
                pin=pin_of(region),
                forwarded=fwd,
            )
            if plan.entry != s.region:
                assert plan.entry is not None
                return forward(plan.entry, request, client)
            doc = s.features(user)
            if doc is None:
                return _error(
                    404,
                    "not_found",
                    f"user {user} has no features; PUT them first",
                    field="user_id",
                )
            return _json(
                {
                    "user_id": str(user),
                    "features": doc.get("features", {}),
                    "updated_at": doc.get("updated_at"),
                    "served_by": s.region,
                    "plan": plan_dict(plan),
                }
            )

        return serve("features_get", run)

    @app.put(
        "/v1/users/{user_id}/features",
        tags=["users"],
        response_model=WriteOut,
        summary="Write a user's features (and embedding) at the ring primary; durable on answer",
    )
    def put_features(
        request: Request, user_id: str, body: FeaturesIn, region: str | None = region_q
    ) -> Response:
        def run() -> Response:
            user = parse_user(user_id)
            s = svc()
            dim = spec.storage.vector.dim
            if body.embedding is not None and len(body.embedding) != dim:
                raise RequestRefused(
                    422,
                    "invalid_request",
                    f"embedding has {len(body.embedding)} numbers; this deployment "
                    f"stores {dim} (storage.vector.dim); nothing was written",
                    extra={"field": "embedding"},
                )
            client, fwd = client_of(request)
            classes = (
                ("user_features", "user_embeddings")
                if body.embedding is not None
                else ("user_features",)
            )
            plan = s.plan(
                "feature_write",
                user,
                "write",
                client_region=client,
                pin=pin_of(region),
                forwarded=fwd,
                classes=classes,
            )
            if plan.entry != s.region:
                assert plan.entry is not None
                return forward(plan.entry, request, client, body.model_dump_json().encode())
            doc = {"features": body.features, "updated_at": time.time()}
            res = s.write(
                DataKey("user_features", user), json.dumps(doc, separators=(",", ":")).encode()
            )
            if body.embedding is not None:
                s.write(DataKey("user_embeddings", user), encode_embedding(body.embedding))
            return _json(
                {
                    "user_id": str(user),
                    "version": res.version,
                    "written_to": res.region,
                    "failed_over": res.failed_over,
                    "reason": res.reason,
                    "durable": True,
                }
            )

        return serve("features_put", run)

    # ------------------------------------------------------------------ items
    @app.get(
        "/v1/items/{item_id}",
        tags=["items"],
        response_model=ItemOut,
        summary="An item (not personal data: served in the region asked)",
    )
    def get_item(item_id: str) -> Response:
        def run() -> Response:
            try:
                validate_item_id(item_id)
            except InputError as exc:
                raise RequestRefused(
                    400, "invalid_item_id", f"item_id: {exc}", extra={"field": "item_id"}
                ) from None
            s = svc()
            item = s.item(item_id)
            if item is None:
                return _error(404, "not_found", f"item '{item_id}' does not exist", field="item_id")
            return _json(
                {
                    "item_id": item_id,
                    "item": item,
                    "shard": s.router.item_shard(item),
                    "served_by": s.region,
                }
            )

        return serve("item_get", run)

    # ------------------------------------------------------------------ interactions
    @app.post(
        "/v1/interactions",
        tags=["interactions"],
        response_model=InteractionsOut,
        summary="Ingest a batch; acknowledged only when durable (429 when the buffer is full)",
    )
    def post_interactions(request: Request, body: InteractionsIn) -> Response:
        def run() -> Response:
            s = svc()
            items = _interactions(s, body)
            client, fwd = client_of(request)
            entries: dict[str, list[Interaction]] = {}
            for it in items:
                plan = s.plan(
                    "interaction_write", it.user, "write", client_region=client, forwarded=fwd
                )
                assert plan.entry is not None
                entries.setdefault(plan.entry, []).append(it)
            out: dict[str, Any] = {"accepted": 0, "event_ids": [], "by_region": {}, "durable": True}
            for entry, group in entries.items():
                if entry == s.region:
                    res = s.ingest(group, client)
                else:
                    payload = {"interactions": [it.to_json() for it in group]}
                    resp = forward(entry, request, client, json.dumps(payload).encode())
                    if resp.status_code != 200:
                        return resp
                    res = json.loads(bytes(resp.body))
                out["accepted"] += res["accepted"]
                out["event_ids"] += res["event_ids"]
                for r, n in res["by_region"].items():
                    out["by_region"][r] = out["by_region"].get(r, 0) + n
            return _json(out)

        return serve("interactions_post", run)

    @app.get(
        "/v1/users/{user_id}/interactions",
        tags=["users"],
        summary="A user's acknowledged interactions (drained and not yet drained)",
    )
    def get_interactions(request: Request, user_id: str, region: str | None = region_q) -> Response:
        def run() -> Response:
            user = parse_user(user_id)
            client, fwd = client_of(request)
            s = svc()
            plan = s.plan(
                "interaction_read",
                user,
                "read",
                client_region=client,
                pin=pin_of(region),
                forwarded=fwd,
            )
            if plan.entry != s.region:
                assert plan.entry is not None
                return forward(plan.entry, request, client)
            events = s.interactions(user)
            return _json(
                {
                    "user_id": str(user),
                    "interactions": events,
                    "count": len(events),
                    "served_by": s.region,
                    "plan": plan_dict(plan),
                }
            )

        return serve("interactions_get", run)

    # ------------------------------------------------------------------ recommend
    @app.get(
        "/v1/recommend/{user_id}",
        tags=["recommend"],
        response_model=RecommendOut,
        summary="Recommend items: sourcing -> recall -> integrity -> precision, within budgets",
    )
    def recommend(
        request: Request,
        user_id: str,
        k: int = Query(10, ge=1, le=100, description="how many items"),
        context: str | None = Query(
            None,
            max_length=64,
            pattern=r"^[A-Za-z0-9_.\-]+$",
            description="a category to recommend from",
        ),
        region: str | None = region_q,
    ) -> Response:
        def run() -> Response:
            user = parse_user(user_id)
            s = svc()
            cats = s.index.categories
            if context is not None and cats and context not in cats:
                raise RequestRefused(
                    422,
                    "invalid_request",
                    f"context: category '{context}' is unknown"
                    f"{did_you_mean(context, cats)} (known: {', '.join(cats)})",
                    extra={"field": "context"},
                )
            client, fwd = client_of(request)
            try:
                plan = s.plan(
                    "recommend",
                    user,
                    "read",
                    client_region=client,
                    pin=pin_of(region),
                    forwarded=fwd,
                )
            except RequestRefused as exc:
                if exc.code not in ("no_region",) or region is not None:
                    raise
                # no region may process this user's data now: popular items, which are not
                # personal, labelled as the fallback they are
                res = s.pipeline.fallback(
                    k=k, context=context, trending=s.trending(), reason=str(exc)
                )
                return _json(_rec_json(user, res, s.region))
            if plan.entry != s.region:
                assert plan.entry is not None
                return forward(plan.entry, request, client)
            return _json(_rec_json(user, s.recommend(user, k, context), s.region))

        return serve("recommend", run)

    # ------------------------------------------------------------------ internal (region to region)
    @app.get("/internal/v1/kv/{key}", include_in_schema=False)
    def internal_kv(key: str) -> Response:
        def run() -> Response:
            value = svc().read_local_tier(parse_key_text(key))
            if value is None:
                return _error(404, "not_found", f"{key} is absent here")
            return Response(value, 200, media_type="application/octet-stream")

        return serve("internal_kv", run)

    @app.post("/internal/v1/write", include_in_schema=False)
    def internal_write(payload: dict[str, Any]) -> Response:
        def run() -> Response:
            try:
                key = parse_key_text(payload["key"])
                value = base64.b64decode(payload["value"], validate=True)
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"internal write is malformed: {exc}") from None
            return _json({"version": svc().apply_primary(key, value)})

        return serve("internal_write", run)

    @app.post("/internal/v1/replicate", include_in_schema=False)
    def internal_replicate(payload: dict[str, Any]) -> Response:
        def run() -> Response:
            entries = payload.get("entries")
            if not isinstance(entries, list):
                raise InputError('replicate takes {"entries": [...]}')
            return _json({"applied": svc().apply_replicated(entries)})

        return serve("internal_replicate", run)

    @app.post("/internal/v1/ingest", include_in_schema=False)
    def internal_ingest(body: InteractionsIn) -> Response:
        def run() -> Response:
            s = svc()
            ids = s.ingest_local(_interactions(s, body, check_batch=False))
            return _json({"stream_ids": ids})

        return serve("internal_ingest", run)

    @app.get("/internal/v1/interactions/{user_id}", include_in_schema=False)
    def internal_interactions(user_id: str) -> Response:
        def run() -> Response:
            return _json({"interactions": svc().interactions_local(parse_user(user_id))})

        return serve("internal_interactions", run)

    @app.get("/internal/v1/status", include_in_schema=False)
    def internal_status() -> Response:
        return _json(svc().status())

    return app


def _document_auth(app: FastAPI) -> None:
    """Declare the bearer scheme in the OpenAPI schema for the /v1 routes (the check
    itself is the :class:`Gate`)."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            doc.setdefault("components", {})["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the token in the state dir's `token` file",
                }
            }
            for path, ops in doc.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for op in ops.values():
                        op["security"] = [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


def _rec_json(user: UserKey, res: Any, served_by: str) -> dict[str, Any]:
    return {
        "user_id": str(user),
        "items": res.items,
        "strategy": res.strategy,
        "degraded": res.degraded,
        "degraded_stage": res.degraded_stage,
        "reason": res.reason,
        "stage_ms": {k: round(v, 3) for k, v in res.stage_ms.items()},
        "budgets_ms": res.budgets_ms,
        "served_by": served_by,
    }


def _interactions(
    s: RegionService, body: InteractionsIn, *, check_batch: bool = True
) -> list[Interaction]:
    """Validate a batch completely (nothing is written when one item is bad)."""
    limit = s.spec.deploy.ingest.max_batch
    if check_batch and len(body.interactions) > limit:
        raise RequestRefused(
            413,
            "batch_too_large",
            f"interactions: {len(body.interactions)} in one batch, over the limit "
            f"of {limit} (deploy.ingest.max_batch); split the batch; nothing was written",
            extra={"field": "interactions"},
        )
    now = time.time()
    out: list[Interaction] = []
    seen: set[str] = set()
    for i, it in enumerate(body.interactions):
        f = f"interactions[{i}]"
        user = parse_user(it.user_id, f"{f}.user_id")
        s.check_jurisdiction(user, f"{f}.user_id")
        try:
            validate_item_id(it.item_id)
        except InputError as exc:
            raise RequestRefused(
                422,
                "invalid_request",
                f"{f}.item_id: {exc}; nothing was written",
                extra={"field": f"{f}.item_id"},
            ) from None
        ts = now if it.ts is None else it.ts
        if not math.isfinite(ts) or ts > now + _MAX_FUTURE_S:
            raise RequestRefused(
                422,
                "invalid_request",
                f"{f}.ts={ts!r} is more than {_MAX_FUTURE_S:g} s in the future; "
                "send unix seconds of when it happened; nothing was written",
                extra={"field": f"{f}.ts"},
            )
        event_id = it.event_id or uuid.uuid4().hex
        if event_id in seen:
            raise RequestRefused(
                422,
                "invalid_request",
                f"{f}.event_id '{event_id}' appears twice in the batch; give each "
                "interaction its own event id; nothing was written",
                extra={"field": f"{f}.event_id"},
            )
        seen.add(event_id)
        out.append(Interaction(user, it.item_id, it.type, ts, event_id))
    return out
