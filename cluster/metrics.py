"""Prometheus metrics of a region: its API processes and its worker write them, ``/metrics``
serves them all.

A region runs several processes (uvicorn workers and the region worker), so the
metrics use prometheus-client's multiprocess mode: ``geoshard up`` sets
``PROMETHEUS_MULTIPROC_DIR`` to ``regions/<r>/metrics`` for every process of the region,
each process writes its samples there, and ``/metrics`` aggregates the directory
(:func:`render`). Outside a deployment (tests) the default registry is used.

Every metric carries the ``region`` label. No label ever holds a user id.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "ADMISSION_REFUSED",
    "CACHE_HITS",
    "CACHE_LOOKUPS",
    "CONTENT_TYPE_LATEST",
    "DEGRADED",
    "INGEST_DEPTH",
    "INGEST_REJECTED",
    "REPLICATION_LAG_ENTRIES",
    "REPLICATION_LAG_S",
    "REQUEST_SECONDS",
    "RESIDENCY_REFUSALS",
    "STAGE_SECONDS",
    "TIER_OPS",
    "render",
]

_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

REQUEST_SECONDS = Histogram(
    "geoshard_request_seconds",
    "API request latency, per route and status class",
    ["region", "route", "status"],
    buckets=_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "geoshard_stage_seconds",
    "Recommend pipeline latency per stage",
    ["region", "stage"],
    buckets=_BUCKETS,
)
ADMISSION_REFUSED = Counter(
    "geoshard_admission_refused_total",
    "/v1 requests answered 503 at once because the API process was full",
    ["region"],
)
DEGRADED = Counter(
    "geoshard_degraded_total",
    "Recommend answers degraded to popular items, per stage that missed",
    ["region", "stage"],
)
CACHE_LOOKUPS = Counter(
    "geoshard_cache_lookups_total", "Cache lookups per level", ["region", "level"]
)
CACHE_HITS = Counter("geoshard_cache_hits_total", "Cache hits per level", ["region", "level"])
TIER_OPS = Counter("geoshard_tier_ops_total", "Storage tier operations", ["region", "tier", "op"])
INGEST_DEPTH = Gauge(
    "geoshard_ingest_queue_depth",
    "Interactions waiting in the ingestion buffers",
    ["region"],
    multiprocess_mode="livesum",
)
INGEST_REJECTED = Counter(
    "geoshard_ingest_rejected_total",
    "Interaction batches refused with 429 (buffer full)",
    ["region"],
)
RESIDENCY_REFUSALS = Counter(
    "geoshard_residency_refusals_total",
    "Requests, replications and cache fills refused by the residency policy",
    ["region", "where"],
)
REPLICATION_LAG_ENTRIES = Gauge(
    "geoshard_replication_lag_entries",
    "Writes not yet applied by a replica region",
    ["region", "target"],
    multiprocess_mode="livemax",
)
REPLICATION_LAG_S = Gauge(
    "geoshard_replication_lag_seconds",
    "Age of the oldest write not yet applied by a replica region",
    ["region", "target"],
    multiprocess_mode="livemax",
)


def render() -> tuple[bytes, str]:
    """The metrics page and its content type (aggregated over the region's processes)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
