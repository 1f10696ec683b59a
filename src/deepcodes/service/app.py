"""The HTTP service: JSON endpoints over a durable (or sharded) index, Prometheus metrics, a web page.

``create_app(store, token=..., limits=...)`` builds the FastAPI application; ``deepcodes serve``
runs it on uvicorn. ``store`` is a :class:`~deepcodes.service.durable.DurableIndex` or a
:class:`~deepcodes.cluster.ShardedIndex`: both offer ``add / remove / search / search_by_id / item /
image / stats / sample_ids`` and ``d``.

Bodies (an interface clients rely on)::

    POST /items   {"ids": [...], "vectors": [[...], ...]}
    POST /search  {"vectors": [[...]]} or {"ids": [...]}, "k", optional "params" and "include"
              ->  {"results": [{"ids": [...], "distances": [...]}, ...]}   one entry per query
    GET /items/{id}, DELETE /items/{id}, GET /stats (has "ntotal"), GET /healthz, GET /metrics

A missing result (an inverted index that reached fewer than k items) is id -1 with distance null.
"""
from __future__ import annotations

import hmac
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field, StrictInt

from ..errors import DeepcodesError, InputError, UnavailableError

STATIC = Path(__file__).parent / "static"
# Reachable without a token: the liveness probe, and the static page and API docs, which hold no
# data (a browser cannot attach a bearer token to a page load; the page then sends it with every
# request it makes).
PUBLIC_PATHS = {"/healthz", "/", "/page.js", "/docs", "/docs/oauth2-redirect", "/openapi.json"}


ItemId = PathParam(..., ge=0, le=np.iinfo(np.int64).max, description="A stored id (int64, >= 0).")


@dataclass(frozen=True)
class Limits:
    """Bounds on one request: body bytes, vectors or ids per batch, and k."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_batch: int = 10_000
    max_k: int = 1000


class ItemsBody(BaseModel):
    ids: list[StrictInt] = Field(description="Caller-chosen int64 ids, >= 0, one per vector, not yet stored.")
    vectors: list[list[float]] = Field(description="Raw vectors (n, d); the service encodes them.")


class SearchBody(BaseModel):
    vectors: list[list[float]] | None = Field(None, description="Query vectors (nq, d).")
    ids: list[StrictInt] | None = Field(None, description="Or stored ids to use as queries.")
    k: StrictInt = Field(10, description="Neighbours per query.")
    params: dict[str, Any] = Field(default_factory=dict, description="Search parameters, e.g. {\"nprobe\": 16}.")
    include: list[str] = Field(default_factory=list,
                               description="Extra per-neighbour fields: \"labels\", \"keys\" (from the gallery).")


class Neighbours(BaseModel):
    ids: list[int]
    distances: list[float | None]
    labels: list[int | None] | None = None
    keys: list[str | None] | None = None


class SearchReply(BaseModel):
    results: list[Neighbours]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _bearer_ok(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].encode(), token.encode())


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, declared or streamed.

    A body without Content-Length (chunked) is read here, up to the limit, and handed on whole.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = _error(413, f"request body over the limit of {self.max_bytes} bytes")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    return await too_big(scope, receive, send)
            except ValueError:
                return await _error(400, "bad Content-Length header")(scope, receive, send)
            return await self.app(scope, receive, send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await too_big(scope, receive, send)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class Guard:
    """ASGI middleware (outermost): bearer-token check, then request counts and latencies by route."""

    def __init__(self, app, token: str | None, requests: Counter, latency: Histogram):
        self.app, self.token, self.requests, self.latency = app, token, requests, latency

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        if self.token is not None and scope["path"] not in PUBLIC_PATHS and not _bearer_ok(
                dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1"), self.token):
            reply = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                 headers={"WWW-Authenticate": "Bearer"})
            await reply(scope, receive, send_status)
        else:
            await self.app(scope, receive, send_status)
        endpoint = getattr(scope.get("route"), "path", "unmatched")
        self.requests.labels(scope["method"], endpoint, str(status[0])).inc()
        self.latency.labels(scope["method"], endpoint).observe(time.perf_counter() - start)


def _check_batch(n: int, what: str, limits: Limits) -> None:
    if n > limits.max_batch:
        raise InputError(f"{n} {what} in one request; the limit is {limits.max_batch}")


def _check_k(k: int, limits: Limits) -> None:
    if k < 1 or k > limits.max_k:
        raise InputError(f"k={k} is out of range: 1..{limits.max_k}")


def _as_ids(ids: list[int], what: str = "ids") -> np.ndarray:
    """JSON ids as int64; a value outside int64 is an InputError (numpy would raise OverflowError)."""
    try:
        return np.asarray(ids, dtype=np.int64)
    except OverflowError:
        raise InputError(f"{what} must fit in int64") from None


def _as_vectors(vectors: list[list[float]], what: str = "vectors") -> np.ndarray:
    """JSON rows as a float64 matrix (range and finiteness are checked by the store)."""
    lengths = {len(v) for v in vectors}
    if len(lengths) > 1:
        raise InputError(f"{what} rows have different lengths: {sorted(lengths)[:5]}")
    return np.asarray(vectors, dtype=np.float64).reshape(len(vectors), lengths.pop() if lengths else 0)


def _neighbours(dist_row, id_row) -> dict:
    ids = [int(i) for i in id_row]
    if np.issubdtype(dist_row.dtype, np.floating):
        distances = [None if not np.isfinite(d) else float(d) for d in dist_row.tolist()]
    else:
        distances = [int(d) for d in dist_row.tolist()]
    return {"ids": ids, "distances": distances}


def create_app(store, *, token: str | None = None, limits: Limits = Limits(),
               title: str = "deepcodes") -> FastAPI:
    """The FastAPI application serving ``store``; ``token`` turns on bearer authentication."""
    app = FastAPI(title=f"{title} search service", version="1",
                  description="Similarity search over learned compact codes. Every change is "
                              "written to a fsynced log before it is acknowledged.")
    registry = CollectorRegistry()
    requests = Counter("deepcodes_requests", "HTTP requests served", ["method", "endpoint", "status"],
                       registry=registry)
    latency = Histogram("deepcodes_request_seconds", "Time to answer a request", ["method", "endpoint"],
                        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                        registry=registry)
    Gauge("deepcodes_index_items", "Items stored in the index", registry=registry).set_function(
        lambda: store.ntotal)
    app.state.store = store

    @app.exception_handler(UnavailableError)
    async def unavailable(request: Request, exc: UnavailableError):
        return _error(503, str(exc))

    @app.exception_handler(DeepcodesError)
    async def other_error(request: Request, exc: DeepcodesError):
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        return _error(422, "malformed request: " + "; ".join(problems))

    @app.get("/healthz", summary="Liveness: 200 while the service runs (no token needed)")
    def healthz():
        return {"status": "ok"}

    @app.post("/items", summary="Add vectors under caller-chosen ids (durable when answered)")
    def add_items(body: ItemsBody):
        _check_batch(len(body.vectors), "vectors", limits)
        if len(body.ids) != len(body.vectors):
            raise InputError(f"{len(body.ids)} ids for {len(body.vectors)} vectors")
        seq = store.add(_as_ids(body.ids), _as_vectors(body.vectors))
        return {"added": len(body.ids), "seq": seq, "ntotal": store.ntotal}

    def answer(body: SearchBody):
        _check_k(body.k, limits)
        if (body.vectors is None) == (body.ids is None):
            raise InputError('give exactly one of "vectors" and "ids"')
        if "return_scanned" in body.params:   # it changes what a search returns; not part of the reply
            raise InputError("return_scanned is not available over HTTP: the reply holds ids and distances")
        unknown = set(body.include) - {"labels", "keys"}
        if unknown:
            raise InputError(f"unknown include field(s) {sorted(unknown)}; valid: labels, keys")
        if body.vectors is not None:
            _check_batch(len(body.vectors), "query vectors", limits)
            dist, ids = store.search(_as_vectors(body.vectors, "query vectors"), body.k, **body.params)
        else:
            _check_batch(len(body.ids), "query ids", limits)
            dist, ids = store.search_by_id(_as_ids(body.ids, "query ids"), body.k, **body.params)
        results = [_neighbours(d, i) for d, i in zip(dist, ids)]
        for r in results if body.include else []:
            info = store.labels_and_keys(r["ids"])
            for field in body.include:
                r[field] = info[field]
        return results

    @app.post("/search", response_model=SearchReply, response_model_exclude_none=True,
              summary="k nearest stored items of each query vector or stored id")
    async def search(body: SearchBody):
        # A local search is a short numba call (under a millisecond on 60,000 codes), cheaper to run
        # on the event loop than the hop to a worker thread; a sharded search waits on Ray, so it
        # goes to a thread. Adds, which fsync, always go to threads (plain ``def`` endpoints).
        if getattr(store, "searches_inline", False):
            results = answer(body)
        else:
            results = await run_in_threadpool(answer, body)
        return JSONResponse({"results": results})

    @app.get("/items", summary="A sample of stored ids (for the page's random query)")
    def sample(sample: int = Query(12, ge=1, le=1000), seed: int = Query(0, ge=0)):
        return {"ids": [int(i) for i in store.sample_ids(sample, seed)]}

    def stored(item_id: int) -> JSONResponse | None:
        """The 404 reply when ``item_id`` is not stored, else None."""
        if not store.contains(np.array([item_id], dtype=np.int64))[0]:
            return _error(404, f"id {item_id} is not stored")
        return None

    @app.get("/items/{item_id}", summary="A stored item: its code, and its raw vector, label, key when kept")
    def get_item(item_id: int = ItemId):
        return stored(item_id) or store.item(item_id)

    @app.get("/items/{item_id}/image.png", summary="A stored item drawn as an image (image data only)",
             response_class=Response)
    def get_image(item_id: int = ItemId, scale: int = Query(4, ge=1, le=16)):
        from PIL import Image

        missing = stored(item_id)
        if missing is not None:
            return missing
        img = store.image(item_id)
        if img is None:
            raise InputError(f"id {item_id} is not stored with an image")
        h, w, c = img.shape
        picture = Image.fromarray(img[:, :, 0] if c == 1 else img).resize((w * scale, h * scale),
                                                                           Image.NEAREST)
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    @app.delete("/items/{item_id}", summary="Remove a stored item (durable when answered)")
    def delete_item(item_id: int = ItemId):
        missing = stored(item_id)
        if missing is not None:
            return missing
        seq = store.remove(np.array([item_id], dtype=np.int64))
        return {"removed": 1, "seq": seq, "ntotal": store.ntotal}

    @app.get("/stats", summary="The index (spec, ntotal, d, ...), measured recall, durability state")
    def stats():
        return store.stats()

    @app.get("/metrics", summary="Prometheus metrics: requests, latencies, index size",
             response_class=Response)
    def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/page.js", include_in_schema=False)
    def page_js():
        return FileResponse(STATIC / "page.js", media_type="text/javascript")

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(Guard, token=token, requests=requests, latency=latency)
    return app
