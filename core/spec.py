"""The topology spec: one YAML file that drives the simulator, the local deployment and Terraform.

The models are pydantic v2 with ``extra="forbid"``. :func:`load_spec` reads YAML, keeps the
line of every key, and turns every validation problem into one line that names the file,
the line, the key path and the fix, with a did-you-mean suggestion for typos::

    examples/bad.yaml:12: regions.eu-west.hot.nodes: must be > 0 (got -1)
    examples/bad.yaml:30: residency.rules[0].store_in[1]: region 'eu-wset' is not in the spec; did you mean 'eu-west'?

Examples:
    >>> from geoshard.spec import load_spec
    >>> spec = load_spec("examples/local.yaml")          # doctest: +SKIP
    >>> sorted(spec.regions)                              # doctest: +SKIP
    ['eu-central', 'eu-west', 'us-east']
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from geoshard.errors import SpecError, did_you_mean
from geoshard.keys import DATA_CLASSES, MAX_ID, NON_PERSONAL_CLASSES, PERSONAL_CLASSES

__all__ = [
    "DATA_CLASSES",
    "DEFAULT_RING_VNODES",
    "MAX_HOT_NODES",
    "MAX_REGIONS",
    "MAX_SPEC_BYTES",
    "MAX_YAML_NODES",
    "NON_PERSONAL_CLASSES",
    "PERSONAL_CLASSES",
    "REQUEST_TYPES",
    "RING_POINTS_MAX",
    "STAGES",
    "STORAGE_TYPES",
    "Spec",
    "load_spec",
    "parse_spec",
    "ring_points",
    "spec_json_schema",
]

#: Request types of the workload and the SLOs.
REQUEST_TYPES: tuple[str, ...] = ("feature_read", "recommend", "interaction_write")
#: Stages of the recommend pipeline, in order.
STAGES: tuple[str, ...] = ("sourcing", "recall", "integrity", "precision")

_NAME = r"^[a-z][a-z0-9-]{0,39}$"
_NAME_HELP = "lower-case letters, digits and '-', starting with a letter, at most 40 characters"


# --------------------------------------------------------------------------- bounds
# Every number in a spec has a bound that the code can honour, checked when the spec
# loads, so that a value which validates can also run (docs: the README's "Bounds").

#: Largest spec file read, in bytes: a hand-written spec is a few KiB (global.yaml: 6 KiB);
#: PyYAML parses about 1 MiB/s, so this keeps loading within seconds.
MAX_SPEC_BYTES = 1 << 20
#: Largest number of YAML values after aliases expand (``*ref`` counts as a copy): keeps
#: "billion laughs" documents from expanding in validation (global.yaml: ~900 values).
MAX_YAML_NODES = 200_000
#: Deepest nesting of mappings and lists (a spec nests 7 levels).
MAX_YAML_DEPTH = 32
#: Regions and jurisdictions: the RTT table and the residency map are quadratic in them.
MAX_REGIONS = 256
#: Hot nodes in all regions: each is a ring node, a simulator queue and a Redis primary.
MAX_HOT_NODES = 100_000
#: Servers or nodes of one tier in one region, and workers of one server or node.
MAX_NODES_PER_REGION = 10_000
MAX_WORKERS = 10_000
#: Points on the user ring (hot nodes x vnodes x weight): a point costs about 140 bytes
#: and 0.6 us to build, so the ring stays under ~600 MB and ~3 s.
RING_POINTS_MAX = 1 << 22
#: The ring's points per unit of weight when ``shards.users.vnodes`` is not given; equals
#: ``geoshard.shards.DEFAULT_VNODES`` (a test keeps them equal; this layer cannot import it).
DEFAULT_RING_VNODES = 3072
#: Longest time in milliseconds (service times, SLOs, RTTs): a day, the longest run.
MAX_MS = 86_400_000.0
#: Longest time in seconds that a spec schedules (campaigns, faults, TTLs, a day): a year.
MAX_S = 31_536_000.0
#: Largest peak rate of one region, requests per second (the planet peaks near 1e7).
MAX_QPS = 1e9
#: Largest rate multiplier (campaigns, diurnal steps).
MAX_MULTIPLIER = 1000.0
#: Largest value size: Redis refuses strings above 512 MiB.
MAX_VALUE_BYTES = 512 << 20
#: Largest unit cost, USD.
MAX_UNIT_COST = 1e6
#: Replicas per key or per primary.
MAX_REPLICATION = 16
#: Entries of one list or mapping in a spec (campaigns, faults, rules, item shards).
MAX_ENTRIES = 1000
MAX_ITEM_SHARDS = 100_000


def _number(value: Any) -> Any:
    """Refuse ``true``/``false`` and text where a number belongs.

    YAML 1.1 (PyYAML) reads ``1e6`` and ``1.5e6`` as text, so text holding a plain
    decimal number is accepted as that number; anything else textual is refused.
    """
    if isinstance(value, bool):
        word = "true" if value else "false"
        # pydantic turns only ValueError into a validation problem, not TypeError
        raise ValueError(
            f"{word} is not a number; write a number (YAML reads true/false, "
            "yes/no and on/off as booleans)"
        )
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
            raise ValueError(f"'{value}' is not a number; write a number such as 1 or 0.5")
        try:
            dec = Decimal(text)
        except InvalidOperation:
            raise ValueError(
                f"'{value}' is not a number; write a number such as 1 or 0.5"
            ) from None
        if abs(dec.adjusted()) > 400:
            raise ValueError(f"'{value}' is out of range for any number here")
        return int(dec) if dec == dec.to_integral_value() else float(dec)
    return value


#: an integer from YAML: booleans and non-numeric text are refused
Int = Annotated[int, BeforeValidator(_number)]
#: a finite float from YAML (models refuse inf and nan): booleans and text are refused
Float = Annotated[float, BeforeValidator(_number)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- distributions


class ExponentialDist(_Model):
    """Exponential service time (the M in M/M/c)."""

    dist: Literal["exponential"] = "exponential"
    mean_ms: Float = Field(gt=0, le=MAX_MS, description="mean service time in milliseconds")


class ConstantDist(_Model):
    """Deterministic service time."""

    dist: Literal["constant"] = "constant"
    ms: Float = Field(ge=0, le=MAX_MS, description="service time in milliseconds")


class LognormalDist(_Model):
    """Log-normal service time given by its mean and the sigma of the underlying normal."""

    dist: Literal["lognormal"] = "lognormal"
    mean_ms: Float = Field(gt=0, le=MAX_MS, description="mean service time in milliseconds")
    sigma: Float = Field(default=0.5, gt=0, le=3, description="sigma of log(service time)")


class GammaDist(_Model):
    """Gamma service time given by its mean and coefficient of variation."""

    dist: Literal["gamma"] = "gamma"
    mean_ms: Float = Field(gt=0, le=MAX_MS, description="mean service time in milliseconds")
    cv: Float = Field(default=1.0, gt=0, le=10, description="coefficient of variation")


ServiceTime = Annotated[
    ExponentialDist | ConstantDist | LognormalDist | GammaDist, Field(discriminator="dist")
]


# --------------------------------------------------------------------------- regions


class Location(_Model):
    """A point on the globe, in degrees."""

    lat: Float = Field(ge=-90, le=90)
    lon: Float = Field(ge=-180, le=180)


class ApiTier(_Model):
    """The per-region API: servers, each with a number of request workers."""

    servers: Int = Field(gt=0, le=MAX_NODES_PER_REGION, description="API server instances")
    workers: Int = Field(
        default=8, gt=0, le=MAX_WORKERS, description="concurrent request workers per server"
    )
    service_time: ServiceTime = Field(default_factory=lambda: ExponentialDist(mean_ms=1.0))


class HotTier(_Model):
    """The hot tier: Redis Cluster primaries (ring nodes) and their replicas."""

    nodes: Int = Field(
        gt=0,
        le=MAX_NODES_PER_REGION,
        description="Redis primaries in this region; each is a ring node",
    )
    replicas: Int = Field(
        default=1, ge=0, le=MAX_REPLICATION, description="Redis replicas per primary"
    )
    memory_gb: Float = Field(gt=0, le=65_536, description="usable memory per primary, GiB")
    workers: Int = Field(
        default=1, gt=0, le=MAX_WORKERS, description="requests one node serves at once"
    )
    service_time: ServiceTime = Field(default_factory=lambda: ExponentialDist(mean_ms=0.2))


class WarmTier(_Model):
    """The warm tier: Milvus (vector) nodes."""

    nodes: Int = Field(gt=0, le=MAX_NODES_PER_REGION, description="Milvus query nodes")
    workers: Int = Field(
        default=4, gt=0, le=MAX_WORKERS, description="concurrent searches per node"
    )
    external_endpoint: str = Field(
        default="",
        max_length=2048,
        description="URI of a Milvus Distributed / managed Milvus in this region; empty = "
        "the deployment runs Milvus standalone (one task)",
    )
    service_time: ServiceTime = Field(default_factory=lambda: LognormalDist(mean_ms=5.0))


class ColdTier(_Model):
    """The cold tier: Parquet on an object store."""

    store: Literal["s3", "local", "gcs"] = "s3"
    workers: Int = Field(
        default=32, gt=0, le=MAX_WORKERS, description="concurrent object-store reads"
    )
    service_time: ServiceTime = Field(
        default_factory=lambda: LognormalDist(mean_ms=40.0, sigma=0.6)
    )


class UnitCosts(_Model):
    """Unit costs in USD, used for cost per hour."""

    api_server_hour: Float = Field(default=0.0, ge=0, le=MAX_UNIT_COST)
    hot_node_hour: Float = Field(
        default=0.0, ge=0, le=MAX_UNIT_COST, description="per primary or replica node"
    )
    warm_node_hour: Float = Field(default=0.0, ge=0, le=MAX_UNIT_COST)
    cold_gb_month: Float = Field(default=0.0, ge=0, le=MAX_UNIT_COST)
    egress_gb: Float = Field(
        default=0.0, ge=0, le=MAX_UNIT_COST, description="cross-region transfer"
    )


class Region(_Model):
    """One cloud region: where it is, whose law applies, and what runs there."""

    cloud_region: str = Field(
        min_length=1, max_length=64, description="the provider's code, e.g. eu-west-1"
    )
    jurisdiction: str
    location: Location
    api: ApiTier
    hot: HotTier
    warm: WarmTier
    cold: ColdTier = Field(default_factory=ColdTier)
    costs: UnitCosts = Field(default_factory=UnitCosts)

    def hot_node_names(self, region: str) -> list[str]:
        """Names of this region's hot-tier ring nodes: ``<region>/hot-<i>``."""
        return [f"{region}/hot-{i}" for i in range(self.hot.nodes)]


# --------------------------------------------------------------------------- residency


class Jurisdiction(_Model):
    """A legal area whose users' personal data must stay in allowed regions."""

    description: str = Field(default="", max_length=1000)


class ResidencyRule(_Model):
    """Where a jurisdiction's personal data of some classes may be stored and processed.

    A rule replaces the default (home regions only) for the data classes it names.
    ``process_in`` defaults to ``store_in``.
    """

    jurisdiction: str
    data_classes: list[str] = Field(
        default_factory=lambda: list(PERSONAL_CLASSES), min_length=1, max_length=len(DATA_CLASSES)
    )
    store_in: list[str] = Field(min_length=1, max_length=MAX_REGIONS)
    process_in: list[str] | None = Field(default=None, max_length=MAX_REGIONS)


class Residency(_Model):
    """Residency policy input: the default plus per-jurisdiction rules."""

    default: Literal["home_only"] = Field(
        default="home_only",
        description="personal data stays in its jurisdiction's regions unless a rule says otherwise",
    )
    rules: list[ResidencyRule] = Field(default_factory=list, max_length=MAX_ENTRIES)


# --------------------------------------------------------------------------- network


class RttMatrix(_Model):
    """A measured RTT matrix in milliseconds; it overrides the distance model."""

    regions: list[str] = Field(min_length=1, max_length=MAX_REGIONS)
    ms: list[Annotated[list[Float], Field(max_length=MAX_REGIONS)]] = Field(max_length=MAX_REGIONS)


class Network(_Model):
    """Network model: RTT from great-circle distance, overridable by a matrix.

    ``rtt_ms = base_ms + 2 * distance_km * route_stretch / fiber_km_per_ms`` (see
    :mod:`geoshard.regions.network`).
    """

    base_ms: Float = Field(
        default=5.0, ge=0, le=MAX_MS, description="fixed per-round-trip overhead"
    )
    fiber_km_per_ms: Float = Field(
        default=200.0,
        ge=1.0,
        le=299.792458,
        description="light in fibre, ~2/3 c (at most c in vacuum)",
    )
    route_stretch: Float = Field(
        default=1.3, ge=1.0, le=10.0, description="path length / great-circle"
    )
    intra_region_ms: Float = Field(default=0.5, ge=0, le=MAX_MS, description="RTT inside a region")
    client_ms: Float = Field(
        default=10.0, ge=0, le=MAX_MS, description="client to its nearest region RTT"
    )
    matrix: RttMatrix | None = None


# --------------------------------------------------------------------------- shards


class UserShards(_Model):
    """User-hash shards: a consistent-hash ring over every region's hot-tier nodes."""

    vnodes: Int | None = Field(
        default=None,
        gt=0,
        le=RING_POINTS_MAX,
        description="points per node; None = ring default (3072)",
    )
    weights: dict[str, Float] = Field(
        default_factory=dict, max_length=MAX_HOT_NODES, description="node name -> weight"
    )
    replication: Int = Field(
        default=2, gt=0, le=MAX_REPLICATION, description="replicas per key, primary included"
    )
    allow_colocated_replicas: bool = Field(
        default=False, description="allow replication above the allowed-region count"
    )
    bounded_load_eps: Float | None = Field(default=None, ge=0, le=10)


class ItemShards(_Model):
    """Item-attribute shards: items placed by the value of one attribute."""

    attribute: str = Field(min_length=1, max_length=100)
    shards: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_ITEM_SHARDS, description="attribute value -> shard"
    )
    default_shard: str = Field(min_length=1, max_length=100)
    replication: Int = Field(
        default=1, gt=0, le=MAX_REPLICATION, description="copies of each item shard per region"
    )


class Shards(_Model):
    """User and item shard maps."""

    users: UserShards = Field(default_factory=UserShards)
    items: ItemShards


# --------------------------------------------------------------------------- caches


class CacheLevel(_Model):
    """One cache level: policy, capacity (items or bytes, exactly one) and TTL."""

    policy: Literal["lru", "fifo", "sieve"] = "lru"
    capacity_items: Int | None = Field(default=None, gt=0, le=MAX_ID)
    capacity_bytes: Int | None = Field(default=None, gt=0, le=MAX_ID)
    ttl_s: Float | None = Field(default=None, gt=0, le=MAX_S)
    service_time: ServiceTime = Field(default_factory=lambda: ConstantDist(ms=0.0))

    @model_validator(mode="after")
    def _one_capacity(self) -> CacheLevel:
        if (self.capacity_items is None) == (self.capacity_bytes is None):
            raise ValueError("give exactly one of capacity_items or capacity_bytes")
        return self


class Caches(_Model):
    """L1 (in-process), L2 (distributed, per region) and regional caches."""

    l1: CacheLevel | None = None
    l2: CacheLevel | None = None
    regional: CacheLevel | None = None


# --------------------------------------------------------------------------- workload


class Campaign(_Model):
    """A traffic spike: the rate is multiplied while it lasts."""

    name: str = Field(max_length=100)
    start_s: Float = Field(ge=0, le=MAX_S)
    duration_s: Float = Field(gt=0, le=MAX_S)
    multiplier: Float = Field(gt=0, le=MAX_MULTIPLIER)
    regions: list[str] | None = Field(
        default=None, max_length=MAX_REGIONS, description="None = every region"
    )


class Zipf(_Model):
    """Zipf popularity exponents of user and item keys."""

    users: Float = Field(default=0.8, ge=0, le=3)
    items: Float = Field(default=1.0, ge=0, le=3)


class Workload(_Model):
    """Who sends what, how often."""

    users: Int = Field(gt=0, le=MAX_ID, description="user ids are 0..users-1, int64")
    items: Int = Field(gt=0, le=MAX_ID, description="item ids are 0..items-1, int64")
    users_by_jurisdiction: dict[str, Float] = Field(
        max_length=MAX_REGIONS,
        description="share of users whose home is each jurisdiction; shares sum to 1",
    )
    peak_qps: dict[str, Annotated[Float, Field(le=MAX_QPS)]] = Field(
        max_length=MAX_REGIONS, description="region -> peak requests per second"
    )
    mix: dict[str, Float] = Field(
        max_length=len(REQUEST_TYPES) + 8, description="request type -> share; shares sum to 1"
    )
    zipf: Zipf = Field(default_factory=Zipf)
    items_per_recommend: Int = Field(default=20, gt=0, le=10_000)
    diurnal: list[Annotated[Float, Field(le=MAX_MULTIPLIER)]] = Field(
        max_length=86_400,
        default_factory=lambda: [1.0],
        description="rate multipliers over one simulated day, equal steps; [1.0] = flat",
    )
    day_s: Float = Field(
        default=86400.0, ge=1, le=MAX_S, description="simulated seconds per diurnal cycle"
    )
    campaigns: list[Campaign] = Field(default_factory=list, max_length=MAX_ENTRIES)
    value_bytes: Int = Field(
        default=1024,
        gt=0,
        le=MAX_VALUE_BYTES,
        description="mean size of a feature value (Redis: at most 512 MiB)",
    )
    start_of_day_s: Float | None = Field(
        default=None,
        ge=0,
        le=MAX_S,
        description="seconds into the diurnal cycle at which a simulation starts; None = the "
        "start of the busiest diurnal step (the peak)",
    )


# --------------------------------------------------------------------------- SLOs


class LatencySlo(_Model):
    """Latency objectives for one request type, in milliseconds.

    A request meets the objective when it answered within ``p99_ms`` and, unless
    ``accept_degraded`` is set, with its real answer: a degraded (fallback) answer counts
    as a miss by default.
    """

    p50_ms: Float = Field(gt=0, le=MAX_MS)
    p99_ms: Float = Field(gt=0, le=MAX_MS)
    accept_degraded: bool = Field(
        default=False,
        description="count a degraded (fallback) answer within p99_ms as meeting the SLO; "
        "only recommend answers can be degraded",
    )


class Slo(_Model):
    """Latency objectives and the recommend pipeline's per-stage budgets."""

    latency: dict[str, LatencySlo] = Field(max_length=len(REQUEST_TYPES) + 8)
    retrieval_p99_ms: Float = Field(default=50.0, gt=0, le=MAX_MS)
    stage_budgets: dict[str, Float] = Field(
        max_length=len(STAGES) + 8,
        default_factory=lambda: {
            "sourcing": 0.2,
            "recall": 0.4,
            "integrity": 0.1,
            "precision": 0.3,
        },
        description="stage -> fraction of the recommend p99 budget",
    )
    attainment: Float = Field(default=0.99, gt=0, le=1, description="share of requests within SLO")
    load_ceiling: Float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="the highest offered load (busy share of a pool's servers) allowed in "
        "any phase of a run; a pool above it fails the verdict",
    )


# --------------------------------------------------------------------------- faults


class Fault(_Model):
    """A scheduled fault.

    ``target`` names a region (``region_outage``, ``latency_spike``) or a hot node
    (``node_crash``, e.g. ``eu-west/hot-1``); a ``partition`` names two regions in ``between``.
    """

    kind: Literal["node_crash", "region_outage", "partition", "latency_spike"]
    at_s: Float = Field(ge=0, le=MAX_S)
    duration_s: Float = Field(gt=0, le=MAX_S)
    target: str | None = Field(default=None, max_length=200)
    between: list[str] | None = Field(default=None, max_length=2)
    extra_ms: Float = Field(
        default=0.0, ge=0, le=MAX_MS, description="added latency for latency_spike"
    )

    @model_validator(mode="after")
    def _targets(self) -> Fault:
        if self.kind == "partition":
            if not self.between or len(self.between) != 2:
                raise ValueError("a partition needs 'between: [region_a, region_b]'")
        elif not self.target:
            raise ValueError(f"a {self.kind} needs 'target'")
        if self.kind == "latency_spike" and self.extra_ms <= 0:
            raise ValueError("a latency_spike needs extra_ms > 0")
        return self


class Faults(_Model):
    """The fault schedule and how fast failures are noticed."""

    detection_delay_s: Float = Field(default=5.0, ge=0, le=MAX_S)
    events: list[Fault] = Field(default_factory=list, max_length=MAX_ENTRIES)


# --------------------------------------------------------------------------- storage (deployment)

#: Backend types a deployment can run, per tier: the names of ``geoshard.storage.BACKENDS``
#: (a unit test keeps the two in step; ``memory`` is in-process only, so no deployment).
STORAGE_TYPES: dict[str, tuple[str, ...]] = {
    "hot": ("redis_cluster", "redis"),
    "vector": ("milvus",),
    "cold": ("parquet",),
    "catalog": ("sql",),
}


#: Servers of one Redis Cluster: the cluster's documented ceiling (``cluster-node-timeout``
#: gossip grows with the node count; redis.io gives 1000 nodes as the design limit).
MAX_CLUSTER_NODES = 1000
#: Processes ``geoshard up`` starts of one kind per region on one machine (API workers).
MAX_LOCAL_PROCESSES = 256
#: Entries of a backend's free-form parameters (index and search parameters).
MAX_BACKEND_PARAMS = 32
#: Shortest period of a deployment's background loops, seconds: a shorter one only spins.
MIN_PERIOD_S = 0.01

#: a backend parameter: a YAML number or a short word (an index parameter such as ``ef``)
BackendParam = Annotated[int | float | str, Field(union_mode="left_to_right")]


def _params(**kw: int | float | str) -> dict[str, int | float | str]:
    return dict(kw)


class HotStorage(_Model):
    """The hot tier of a deployment: one Redis Cluster per region (or one standalone Redis
    with replicas), append-only file on, writes acknowledged after ``WAIT``."""

    type: Literal["redis_cluster", "redis"] = Field(
        default="redis_cluster", description="backend type (geoshard.storage.BACKENDS, tier hot)"
    )
    primaries: Int = Field(
        default=3,
        gt=0,
        le=MAX_CLUSTER_NODES,
        description="primaries per region (a cluster needs >= 3)",
    )
    replicas_per_primary: Int = Field(
        default=1, ge=0, le=MAX_REPLICATION, description="replicas of each primary"
    )
    node_timeout_ms: Int = Field(default=2000, gt=0, le=MAX_MS, description="cluster-node-timeout")
    appendonly: bool = Field(default=True, description="append-only file (AOF) on every node")
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    durable_writes: bool = Field(default=True, description="acknowledge a write after WAIT")
    wait_replicas: Int = Field(
        default=1, ge=0, le=MAX_REPLICATION, description="replicas WAIT must hear from"
    )
    wait_timeout_ms: Int = Field(default=500, gt=0, le=MAX_MS, description="WAIT timeout")
    socket_timeout_s: Float = Field(
        default=1.0, gt=0, le=MAX_S, description="per-command socket timeout"
    )
    retry_budget_s: Float = Field(
        default=5.0, gt=0, le=MAX_S, description="seconds per operation, retries included"
    )


class VectorStorage(_Model):
    """The warm tier: Milvus, one collection per region."""

    type: Literal["milvus"] = Field(default="milvus", description="backend type (tier vector)")
    uri: str = Field(
        default="",
        max_length=2048,
        description="'' = a Milvus Lite server per region, started by `geoshard up` in the "
        "state dir; 'http://host:port' = an existing Milvus server",
    )
    dim: Int = Field(
        default=64, gt=0, le=32_768, description="embedding dimension (Milvus allows at most 32768)"
    )
    metric: Literal["COSINE", "L2", "IP"] = "COSINE"
    index_type: str = Field(
        default="HNSW",
        min_length=1,
        max_length=64,
        description="vector index (FLAT, HNSW, IVF_FLAT, ...)",
    )
    index_params: dict[str, BackendParam] = Field(
        default_factory=lambda: _params(M=16, efConstruction=200), max_length=MAX_BACKEND_PARAMS
    )
    search_params: dict[str, BackendParam] = Field(
        default_factory=lambda: _params(ef=128), max_length=MAX_BACKEND_PARAMS
    )

    @field_validator("index_params", "search_params", mode="before")
    @classmethod
    def _no_booleans(cls, v: Any) -> Any:
        # before validation: the int branch of the union would read true as 1
        for name, value in v.items() if isinstance(v, dict) else ():
            if isinstance(value, bool):
                raise ValueError(
                    f"{name}: {str(value).lower()} is not a parameter value; write "
                    "a number or a word"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name}: must be a finite number (got {value})")
            if isinstance(value, str) and len(value) > 256:
                raise ValueError(f"{name}: a text value of {len(value)} characters; at most 256")
        return v


class ColdStorage(_Model):
    """The cold tier: Parquet files."""

    type: Literal["parquet"] = Field(default="parquet", description="backend type (tier cold)")
    root: str = Field(
        default="",
        max_length=4096,
        description="'' = <state dir>/regions/<region>/cold; else a path or URI (s3://...), "
        "where '{region}' is replaced by the region's name",
    )
    shards: Int = Field(default=16, gt=0, le=4096, description="hash buckets per data class")
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    fsync: bool = True


class CatalogStorage(_Model):
    """The catalog: one SQL database for the whole deployment."""

    type: Literal["sql"] = Field(default="sql", description="backend type (tier catalog)")
    url: str = Field(
        default="",
        max_length=2048,
        description="'' = sqlite:///<state dir>/catalog.db; or postgresql+psycopg2://user@host:port/db",
    )


class CacheServers(_Model):
    """The Redis servers behind the shared cache levels (``caches.l2``, ``caches.regional``):
    one per level and region, LRU-evicting at ``maxmemory``."""

    bytes_per_item: Int = Field(
        default=2048,
        gt=0,
        le=MAX_VALUE_BYTES,
        description="memory budget per cached item (value + key + Redis overhead); "
        "maxmemory = capacity_items x this",
    )


class CrossRegionReplication(_Model):
    """How writes reach a key's other replica regions (through the fault proxy)."""

    sync_classes: list[str] = Field(
        default_factory=list,
        max_length=len(DATA_CLASSES),
        description="personal data classes whose writes are acknowledged only after every "
        "reachable replica region applied them; the others replicate asynchronously",
    )


class Storage(_Model):
    """Which backend serves each tier in a deployment (``geoshard up``), and its settings.

    Every tier names a backend ``type`` of the registry; the defaults run everything on
    loopback, so a spec needs no ``storage:`` section to be deployed locally.
    """

    hot: HotStorage = Field(default_factory=HotStorage)
    vector: VectorStorage = Field(default_factory=VectorStorage)
    cold: ColdStorage = Field(default_factory=ColdStorage)
    catalog: CatalogStorage = Field(default_factory=CatalogStorage)
    cache_servers: CacheServers = Field(default_factory=CacheServers)
    replication: CrossRegionReplication = Field(default_factory=CrossRegionReplication)


class IngestSettings(_Model):
    """The ingestion buffer of each API process."""

    buffer_items: Int = Field(
        default=1024,
        gt=0,
        le=1_000_000,
        description="interactions one process holds before answering 429 "
        "(at most 1,000,000: a few hundred MB per process)",
    )
    max_batch: Int = Field(
        default=256, gt=0, le=100_000, description="interactions per POST /v1/interactions"
    )
    flush_batch: Int = Field(
        default=256, gt=0, le=100_000, description="interactions per stream write"
    )
    retry_after_s: Float = Field(default=1.0, gt=0, le=MAX_S, description="Retry-After of a 429")
    drain_interval_s: Float = Field(
        default=0.5,
        ge=MIN_PERIOD_S,
        le=MAX_S,
        description="how often the worker drains the stream to Parquet",
    )


class AdmissionSettings(_Model):
    """Admission control of each API process: a bound on the requests it serves at once.

    A request over the bound, or arriving while the process's event loop runs more than
    ``max_loop_lag_ms`` late, is answered 503 with ``Retry-After`` at once, before it is
    parsed, so an overloaded API keeps the latency of what it admits and its memory
    bounded instead of queueing without limit. The bound is ``max_inflight`` for bursts
    and ``sustained_inflight`` while the process stays saturated. Only
    ``/v1`` routes are counted; health, metrics and the region-to-region routes are
    always admitted.
    """

    max_inflight: Int = Field(
        default=16,
        gt=0,
        le=10_000,
        description="/v1 requests one API process works on at once while lightly used (a "
        "request waiting on another region does not count meanwhile); the next gets 503",
    )
    max_loop_lag_ms: Float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="also refuse while the event loop runs this late (the process is "
        "saturated) and half of the bound is in flight; 0 = off",
    )
    retry_after_s: Float = Field(default=1.0, gt=0, le=MAX_S, description="Retry-After of a 503")
    sustained_inflight: Int = Field(
        default=8,
        gt=0,
        le=10_000,
        description="the bound while the process is saturated (its time-averaged in-flight "
        "count over ~100 ms at half of this or more); max_inflight is for the bursts of a "
        "lightly used process",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AdmissionSettings:
        if self.sustained_inflight > self.max_inflight:
            raise ValueError(
                f"deploy.admission.sustained_inflight ({self.sustained_inflight}) is above "
                f"max_inflight ({self.max_inflight}); lower it or raise max_inflight"
            )
        return self


class TieringSettings(_Model):
    """Background hot -> cold demotion (the storage tiering policy)."""

    max_idle_s: Float = Field(
        default=3600.0, gt=0, le=MAX_S, description="a hot key idle this long is demoted"
    )
    sweep_interval_s: Float = Field(
        default=30.0, ge=MIN_PERIOD_S, le=MAX_S, description="seconds between sweeps"
    )
    hot_ttl_s: Float | None = Field(
        default=86_400.0, gt=0, le=MAX_S, description="TTL of a promoted copy"
    )
    batch_size: Int = Field(default=500, gt=0, le=100_000)


class Deploy(_Model):
    """How `geoshard up` runs the topology on one machine."""

    api_workers: Int | None = Field(
        default=None,
        gt=0,
        le=MAX_LOCAL_PROCESSES,
        description="uvicorn --workers per region; None = regions.<r>.api.workers",
    )
    startup_timeout_s: Float = Field(default=180.0, gt=0, le=MAX_S, description="bound on `up`")
    health_interval_s: Float = Field(
        default=0.5, ge=MIN_PERIOD_S, le=MAX_S, description="health probe period"
    )
    max_body_bytes: Int = Field(
        default=1 << 20, gt=0, le=MAX_VALUE_BYTES, description="largest request body"
    )
    scorer: Literal["dot_recency"] = Field(
        default="dot_recency", description="the precision stage's scorer"
    )
    recall: Literal["index", "milvus"] = Field(
        default="index",
        description="'index': nearest neighbours over an in-process snapshot of each item "
        "shard exported from Milvus; 'milvus': a Milvus search per shard and request",
    )
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    tiering: TieringSettings = Field(default_factory=TieringSettings)


# --------------------------------------------------------------------------- the spec


class Spec(_Model):
    """The whole topology. Load it with :func:`load_spec`.

    Examples:
        >>> spec = load_spec("examples/local.yaml")  # doctest: +SKIP
        >>> spec.jurisdiction_regions("eu")          # doctest: +SKIP
        ['eu-central', 'eu-west']
    """

    version: Literal[1] = 1
    name: str = Field(pattern=_NAME)
    jurisdictions: dict[str, Jurisdiction] = Field(min_length=1, max_length=MAX_REGIONS)
    regions: dict[str, Region] = Field(min_length=1, max_length=MAX_REGIONS)
    residency: Residency = Field(default_factory=Residency)
    network: Network = Field(default_factory=Network)
    shards: Shards
    caches: Caches = Field(default_factory=Caches)
    workload: Workload
    slo: Slo
    faults: Faults = Field(default_factory=Faults)
    storage: Storage = Field(default_factory=Storage)
    deploy: Deploy = Field(default_factory=Deploy)

    @field_validator("jurisdictions", "regions")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.match(_NAME, name):
                raise ValueError(f"name '{name}' is not valid: use {_NAME_HELP}")
        return v

    # -- derived views -------------------------------------------------------------
    def jurisdiction_regions(self, jurisdiction: str) -> list[str]:
        """The regions whose home jurisdiction is ``jurisdiction``, sorted."""
        return sorted(r for r, reg in self.regions.items() if reg.jurisdiction == jurisdiction)

    def hot_nodes(self) -> dict[str, str]:
        """Every hot-tier ring node, mapped to its region (``{'eu-west/hot-0': 'eu-west'}``)."""
        return {n: r for r, reg in self.regions.items() for n in reg.hot_node_names(r)}

    def total_peak_qps(self) -> float:
        """Sum of the per-region peak request rates."""
        return float(sum(self.workload.peak_qps.values()))

    # -- cross-field checks --------------------------------------------------------
    @model_validator(mode="after")
    def _cross_checks(self) -> Spec:
        problems = list(_cross_problems(self))
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _unknown(kind: str, value: str, known: Mapping[str, Any] | list[str]) -> str:
    names = list(known)
    return f"{kind} '{value}' is not in the spec{did_you_mean(value, names)}" + (
        "" if did_you_mean(value, names) else f" (known: {', '.join(sorted(names))})"
    )


def ring_points(s: Spec) -> int:
    """Points the user ring of ``s`` holds: per hot node ``max(1, round(vnodes x weight))``.

    Computed from the counts, without naming every node, so it is cheap for any spec.
    """
    vnodes = s.shards.users.vnodes or DEFAULT_RING_VNODES
    nodes = sum(reg.hot.nodes for reg in s.regions.values())
    points = nodes * vnodes
    names = s.hot_nodes() if len(s.shards.users.weights) else {}
    for node, w in s.shards.users.weights.items():
        if node in names and math.isfinite(w) and w > 0:
            points += max(1, round(vnodes * w)) - vnodes
    return points


def _size_problems(s: Spec) -> Iterator[str]:
    """Problems of size: checked first, since the other checks enumerate hot nodes."""
    nodes = sum(reg.hot.nodes for reg in s.regions.values())
    if nodes > MAX_HOT_NODES:
        yield (
            f"@regions: {nodes} hot nodes in all regions; at most {MAX_HOT_NODES} (each is a "
            "ring node, a simulator queue and a Redis primary): lower regions.*.hot.nodes"
        )
        return
    points = ring_points(s)
    if points > RING_POINTS_MAX:
        vnodes = s.shards.users.vnodes or DEFAULT_RING_VNODES
        weight = points / vnodes  # the ring's total weight, in nodes of weight 1
        fit = max(1, math.floor(RING_POINTS_MAX / max(weight, 1.0)))
        yield (
            f"@shards.users: the user ring would hold {points} points (hot nodes x vnodes x "
            f"weight = {weight:g} x {vnodes}); at most {RING_POINTS_MAX} (about 140 bytes "
            f"each): set shards.users.vnodes to {fit} or less, or use fewer hot nodes"
        )


def _cross_problems(s: Spec) -> Iterator[str]:
    """Yield ``path: message`` lines for every cross-field problem."""
    size = list(_size_problems(s))
    if size:
        yield from size
        return
    regions, jur = s.regions, s.jurisdictions
    for name, reg in regions.items():
        if reg.jurisdiction not in jur:
            yield f"@regions.{name}.jurisdiction: " + _unknown(
                "jurisdiction", reg.jurisdiction, jur
            )
    for j in jur:
        if not s.jurisdiction_regions(j):
            yield f"@jurisdictions.{j}: jurisdiction '{j}' has no region; add a region with jurisdiction: {j} or remove it"
    codes: dict[str, str] = {}
    for name, reg in regions.items():
        if reg.cloud_region in codes:
            yield (
                f"@regions.{name}.cloud_region: '{reg.cloud_region}' is used by region "
                f"'{codes[reg.cloud_region]}' too; give each region its own cloud region"
            )
        codes[reg.cloud_region] = name

    # residency rules
    for i, rule in enumerate(s.residency.rules):
        p = f"residency.rules[{i}]"
        if rule.jurisdiction not in jur:
            yield f"@{p}.jurisdiction: " + _unknown("jurisdiction", rule.jurisdiction, jur)
        for k, dc in enumerate(rule.data_classes):
            if dc not in DATA_CLASSES:
                yield f"@{p}.data_classes[{k}]: " + _unknown("data class", dc, list(DATA_CLASSES))
            elif dc in NON_PERSONAL_CLASSES:
                yield (
                    f"@{p}.data_classes[{k}]: '{dc}' is not personal data, so residency rules do "
                    f"not apply to it; remove it (personal classes: {', '.join(PERSONAL_CLASSES)})"
                )
        for field in ("store_in", "process_in"):
            for k, r in enumerate(getattr(rule, field) or []):
                if r not in regions:
                    yield f"@{p}.{field}[{k}]: " + _unknown("region", r, regions)

    # network matrix
    m = s.network.matrix
    if m is not None:
        n = len(m.regions)
        for k, r in enumerate(m.regions):
            if r not in regions:
                yield f"@network.matrix.regions[{k}]: " + _unknown("region", r, regions)
        missing = sorted(set(regions) - set(m.regions))
        if missing:
            yield f"@network.matrix.regions: the matrix lacks region(s) {', '.join(missing)}; list every region"
        if len(m.ms) != n or any(len(row) != n for row in m.ms):
            shape = f"{len(m.ms)}x{'/'.join(str(len(r)) for r in m.ms) or 0}"
            yield f"@network.matrix.ms: the matrix must be square, {n}x{n} for {n} regions (got {shape})"
        else:
            for a in range(n):
                for b in range(n):
                    v = m.ms[a][b]
                    if not math.isfinite(v) or v < 0:
                        yield f"@network.matrix.ms[{a}][{b}]: RTT must be a finite number >= 0 (got {v})"
                    elif a < b and abs(v - m.ms[b][a]) > 1e-9:
                        yield (
                            f"@network.matrix.ms[{a}][{b}]: the matrix must be symmetric "
                            f"({v} vs ms[{b}][{a}]={m.ms[b][a]})"
                        )

    # shards
    nodes = s.hot_nodes()
    for node, weight in s.shards.users.weights.items():
        if node not in nodes:
            yield f"@shards.users.weights.{node}: " + _unknown("hot node", node, nodes)
        elif not (weight > 0 and math.isfinite(weight)):
            yield (
                f"@shards.users.weights.{node}: weight must be a finite number > 0 (got {weight})"
            )
    rf = s.shards.users.replication
    for j in jur:
        for dc in PERSONAL_CLASSES:
            allowed = _personal_store_regions(s, j, dc)
            if not allowed:
                continue
            if not s.shards.users.allow_colocated_replicas and rf > len(allowed):
                yield (
                    f"@shards.users.replication: replication {rf} is above the {len(allowed)} "
                    f"region(s) where '{j}' {dc} may live ({', '.join(allowed)}); lower it "
                    f"or set allow_colocated_replicas: true"
                )
                break
            n_nodes = sum(regions[r].hot.nodes for r in allowed)
            if rf > n_nodes:
                yield (
                    f"@shards.users.replication: replication {rf} is above the {n_nodes} hot "
                    f"node(s) allowed for '{j}' {dc}; lower it or add nodes"
                )
                break

    # workload
    w = s.workload
    for j in w.users_by_jurisdiction:
        if j not in jur:
            yield f"@workload.users_by_jurisdiction.{j}: " + _unknown("jurisdiction", j, jur)
    for j, share in w.users_by_jurisdiction.items():
        if not (0 <= share <= 1):
            yield f"@workload.users_by_jurisdiction.{j}: share must be in [0, 1] (got {share})"
    tot = sum(w.users_by_jurisdiction.values())
    if abs(tot - 1) > 1e-6:
        yield f"@workload.users_by_jurisdiction: shares must sum to 1 (got {tot:g})"
    for r, q in w.peak_qps.items():
        if r not in regions:
            yield f"@workload.peak_qps.{r}: " + _unknown("region", r, regions)
        elif not (q >= 0 and math.isfinite(q)):
            yield f"@workload.peak_qps.{r}: rate must be a finite number >= 0 (got {q})"
    for t, share in w.mix.items():
        if t not in REQUEST_TYPES:
            yield f"@workload.mix.{t}: " + _unknown("request type", t, list(REQUEST_TYPES))
        elif not (0 <= share <= 1):
            yield f"@workload.mix.{t}: share must be in [0, 1] (got {share})"
    tot = sum(w.mix.values())
    if abs(tot - 1) > 1e-6:
        yield f"@workload.mix: shares must sum to 1 (got {tot:g})"
    if not w.diurnal or any(not (x >= 0 and math.isfinite(x)) for x in w.diurnal):
        yield "@workload.diurnal: give at least one finite multiplier >= 0, e.g. [1.0]"
    for i, c in enumerate(w.campaigns):
        for k, r in enumerate(c.regions or []):
            if r not in regions:
                yield f"@workload.campaigns[{i}].regions[{k}]: " + _unknown("region", r, regions)

    # slo
    for t in s.slo.latency:
        if t not in REQUEST_TYPES:
            yield f"@slo.latency.{t}: " + _unknown("request type", t, list(REQUEST_TYPES))
    for t, lat in s.slo.latency.items():
        if lat.p50_ms > lat.p99_ms:
            yield f"@slo.latency.{t}: p50_ms ({lat.p50_ms}) must not exceed p99_ms ({lat.p99_ms})"
        if lat.accept_degraded and t != "recommend":
            yield (
                f"@slo.latency.{t}.accept_degraded: only recommend answers can be degraded "
                f"({t} never is); remove it"
            )
    if w.start_of_day_s is not None and w.start_of_day_s >= w.day_s:
        yield (
            f"@workload.start_of_day_s: must be below day_s ({w.day_s:g}) (got "
            f"{w.start_of_day_s:g}); give the time of day in seconds"
        )
    for st, frac in s.slo.stage_budgets.items():
        if st not in STAGES:
            yield f"@slo.stage_budgets.{st}: " + _unknown("stage", st, list(STAGES))
        elif not (0 < frac <= 1):
            yield f"@slo.stage_budgets.{st}: fraction must be in (0, 1] (got {frac})"
    tot = sum(s.slo.stage_budgets.values())
    if tot > 1 + 1e-9:
        yield f"@slo.stage_budgets: fractions must sum to at most 1 (got {tot:g})"

    # faults
    for i, f in enumerate(s.faults.events):
        p = f"faults.events[{i}]"
        if f.kind in ("region_outage", "latency_spike") and f.target not in regions:
            yield f"@{p}.target: " + _unknown("region", str(f.target), regions)
        if f.kind == "node_crash" and f.target not in nodes:
            yield f"@{p}.target: " + _unknown("hot node", str(f.target), nodes)
        for k, r in enumerate(f.between or []):
            if r not in regions:
                yield f"@{p}.between[{k}]: " + _unknown("region", r, regions)

    # storage (deployment)
    hot = s.storage.hot
    if hot.type == "redis_cluster" and hot.primaries < 3:
        yield (
            f"@storage.hot.primaries: a Redis Cluster needs at least 3 primaries (got "
            f"{hot.primaries}); raise it or use type: redis"
        )
    servers = hot.primaries * (1 + hot.replicas_per_primary)
    if servers > MAX_CLUSTER_NODES:
        yield (
            f"@storage.hot.primaries: {hot.primaries} primaries x (1 + "
            f"{hot.replicas_per_primary} replicas) = {servers} Redis servers per region; at "
            f"most {MAX_CLUSTER_NODES} (Redis Cluster's design limit): lower primaries or "
            "replicas_per_primary"
        )
    if hot.type == "redis" and hot.primaries != 1:
        yield (
            f"@storage.hot.primaries: a standalone Redis has one primary (got "
            f"{hot.primaries}); set primaries: 1 or use type: redis_cluster"
        )
    if hot.durable_writes and hot.wait_replicas > hot.replicas_per_primary:
        yield (
            f"@storage.hot.wait_replicas: WAIT for {hot.wait_replicas} replica(s) with "
            f"{hot.replicas_per_primary} per primary would fail every write; lower it "
            f"or add replicas"
        )
    uri = s.storage.vector.uri
    if uri and not uri.startswith(("http://", "https://", "tcp://", "grpc://")):
        yield (
            f"@storage.vector.uri: '{uri}' is not a Milvus server URI; leave it empty "
            f"(Milvus Lite started by geoshard up) or give http://host:port"
        )
    url = s.storage.catalog.url
    if url and not url.startswith(("sqlite:///", "postgresql")):
        yield (
            f"@storage.catalog.url: '{url}' is not a SQL catalog URL; use "
            f"sqlite:///path.db or postgresql+psycopg2://user@host:port/db"
        )
    for k, dc in enumerate(s.storage.replication.sync_classes):
        if dc not in PERSONAL_CLASSES:
            yield (
                f"@storage.replication.sync_classes[{k}]: "
                + _unknown("personal data class", dc, list(PERSONAL_CLASSES))
            )
    ing = s.deploy.ingest
    if ing.max_batch > ing.buffer_items:
        yield (
            f"@deploy.ingest.max_batch: a batch of {ing.max_batch} can never fit a buffer "
            f"of {ing.buffer_items}; lower max_batch or raise buffer_items"
        )


def _personal_store_regions(s: Spec, jurisdiction: str, data_class: str) -> list[str]:
    """Regions where ``jurisdiction``'s ``data_class`` may be stored (last matching rule wins)."""
    regs = set(s.jurisdiction_regions(jurisdiction))
    for rule in s.residency.rules:
        if rule.jurisdiction == jurisdiction and data_class in rule.data_classes:
            regs = set(rule.store_in)
    return sorted(r for r in regs if r in s.regions)


# --------------------------------------------------------------------------- loading


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, used in two steps: compose the node graph, check it, construct."""


#: libyaml's composer when PyYAML was built with it: about 10x faster than the Python one
_FastLoader: Any = getattr(yaml, "CSafeLoader", _SpecLoader)

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _compose(text: str) -> yaml.Node | None:
    """The node graph of ``text``; a syntax error is re-read by the Python parser, whose
    messages (and marks) are the ones we document."""
    try:
        fast = _FastLoader(text)
        try:
            return fast.get_single_node()
        finally:
            fast.dispose()
    except yaml.YAMLError:
        if _FastLoader is _SpecLoader:
            raise
    loader = _SpecLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _check_graph(root: yaml.Node, source: str) -> None:
    """Refuse alias cycles and documents that expand beyond :data:`MAX_YAML_NODES` values.

    Sizes are computed per distinct node (an alias is the same node object), so the check
    costs as much as the text, not as much as the expansion it guards against.
    """
    size: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if done:
            active.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            if size[key] > MAX_YAML_NODES:
                raise SpecError(
                    f"{source}:{node.start_mark.line + 1}: the document expands to more than "
                    f"{MAX_YAML_NODES} values through YAML aliases (*name repeats &name); "
                    "write the values out or use fewer aliases"
                )
            continue
        if key in size:
            continue
        if key in active:
            raise SpecError(
                f"{source}:{node.start_mark.line + 1}: a YAML alias refers to a "
                "value that contains it (a cycle); remove the alias"
            )
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _compose_lines(root: yaml.Node | None, source: str) -> dict[tuple[str | int, ...], int]:
    """Map every key path to its 1-based line; refuse duplicate keys and deep nesting."""
    lines: dict[tuple[str | int, ...], int] = {}
    if root is None:
        return lines
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > MAX_YAML_DEPTH:
            raise SpecError(
                f"{source}:{node.start_mark.line + 1}: {_fmt_path(path)}: nested "
                f"more than {MAX_YAML_DEPTH} levels deep; a spec nests about 7"
            )
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, v in node.value:
                if k.tag == _MERGE_TAG:
                    stack.append((v, path))
                    continue
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
                line = k.start_mark.line + 1
                if key in first:
                    raise SpecError(
                        f"{source}:{line}: {_fmt_path((*path, key))}: duplicate key '{key}' "
                        f"(first at line {first[key]}); keep one of them"
                    )
                first[key] = line
                lines[(*path, key)] = line
                stack.append((v, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, (*path, i)) for i, v in enumerate(node.value))
    return lines


def _line_for(
    lines: Mapping[tuple[str | int, ...], int], path: tuple[str | int, ...]
) -> int | None:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def _fmt_path(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _parse_dotted(path: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for tok in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        parts.append(int(tok[1:-1]) if tok.startswith("[") else tok)
    return tuple(parts)


def _inner_model(ann: Any) -> Any:
    import typing

    origin = typing.get_origin(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        m = _inner_model(arg)
        if m is not None:
            if origin is dict:
                return _DictOf(m)
            return m
    return None


class _DictOf:
    def __init__(self, model: type[BaseModel]) -> None:
        self.model_fields = None
        self.value = model


def _suggest_key(path: tuple[str | int, ...]) -> str:
    """For an unknown key, suggest the closest valid field name of its owning model."""
    owner: Any = Spec
    for p in path[:-1]:
        if isinstance(owner, _DictOf):
            owner = owner.value
            continue
        if isinstance(p, int):
            continue
        fields = getattr(owner, "model_fields", None)
        if not fields or p not in fields:
            return ""
        owner = _inner_model(fields[p].annotation)
        if owner is None:
            return ""
    if isinstance(owner, _DictOf):
        return ""
    fields = getattr(owner, "model_fields", None)
    if not fields:
        return ""
    hint = did_you_mean(str(path[-1]), list(fields))
    return hint or f"; valid keys here: {', '.join(fields)}"


def _problems_from(
    err: ValidationError, lines: Mapping[tuple[str | int, ...], int], source: str
) -> list[str]:
    out: list[str] = []
    for e in err.errors(include_url=False):
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x in _DISCRIMINATOR_TAGS))
        msg = str(e["msg"])
        if e["type"] == "value_error" and "@" in msg:
            # our cross-field problems: "@path: message" lines
            for line in msg.removeprefix("Value error, ").split("\n"):
                if not line.startswith("@"):
                    continue
                p, _, m = line[1:].partition(": ")
                tup = _parse_dotted(p)
                where = _line_for(lines, tup)
                out.append(f"{source}:{where or '?'}: {_fmt_path(tup)}: {m}")
            continue
        msg = msg.removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key '{loc[-1]}'{_suggest_key(loc)}"
        elif e["type"] == "missing":
            msg = f"required key '{loc[-1]}' is missing; add it"
        elif e["type"] == "union_tag_invalid":
            tag = str((e.get("ctx") or {}).get("tag", ""))
            tags = list(_DISCRIMINATOR_TAGS)
            msg = f"unknown dist '{tag}'{did_you_mean(tag, tags) or '; use one of ' + ', '.join(tags)}"
        elif e["type"] == "literal_error":
            choices = re.findall(r"'([^']*)'", str((e.get("ctx") or {}).get("expected", "")))
            msg = f"{_plain(msg)} (got {e.get('input')!r}){did_you_mean(str(e.get('input')), choices)}"
        elif "input" in e and not isinstance(e["input"], (dict, list)):
            msg = f"{_plain(msg)} (got {e['input']!r})"
        where = _line_for(lines, loc)
        out.append(f"{source}:{where or '?'}: {_fmt_path(loc)}: {msg}")
    return _drop_explained_missing(out)


_PLAIN = [
    (r"^Input should be greater than or equal to ", "must be >= "),
    (r"^Input should be greater than ", "must be > "),
    (r"^Input should be less than or equal to ", "must be <= "),
    (r"^Input should be less than ", "must be < "),
    (r"^Input should be ", "must be "),
]


def _plain(msg: str) -> str:
    """Pydantic's wording, said the way our messages say it (``must be > 0``)."""
    for pat, rep in _PLAIN:
        msg = re.sub(pat, rep, msg)
    return msg


def _drop_explained_missing(problems: list[str]) -> list[str]:
    """Drop "required key 'x' is missing" when a typo of 'x' beside it already says so."""
    suggested = {
        m.group(1) + "." + m.group(2)
        for p in problems
        if (m := re.search(r": (\S*)\.[^.\s]+: unknown key .*did you mean '([^']+)'", p))
    }
    keep = []
    for p in problems:
        m = re.search(r": (\S*)\.([^.\s]+): required key", p)
        if m and f"{m.group(1)}.{m.group(2)}" in suggested:
            continue
        keep.append(p)
    return keep


_DISCRIMINATOR_TAGS = {"exponential", "constant", "lognormal", "gamma"}


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Parse and validate a spec from YAML text.

    The YAML is composed, checked (no alias cycle, at most :data:`MAX_YAML_NODES` values
    once aliases expand, no duplicate key, at most :data:`MAX_YAML_DEPTH` levels), then
    constructed and validated.

    Args:
        text: the YAML document.
        source: a name for messages (the file path).

    Raises:
        SpecError: with one problem line per error, each naming source, line and key path.
    """
    try:
        root = _compose(text)
        if root is not None:
            _check_graph(root, source)
        lines = _compose_lines(root, source)
        data = _SpecLoader("").construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{where}: the file is not valid YAML: {problem}; fix the syntax") from None
    except RecursionError:
        raise SpecError(
            f"{source}: the YAML nests too deeply to read; a spec nests about 7 levels"
        ) from None
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}:1: the spec must be a YAML mapping with keys such as "
            f"'name', 'regions', 'jurisdictions' (got {type(data).__name__})"
        )
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        problems = _problems_from(exc, lines, source)
        head = f"{source}: {len(problems)} problem(s) in the spec"
        raise SpecError(head + "\n" + "\n".join(f"  {p}" for p in problems), problems) from None


def load_spec(path: str | Path) -> Spec:
    """Load and validate a spec file (UTF-8 YAML, at most :data:`MAX_SPEC_BYTES`).

    Raises:
        SpecError: when the file is missing, unreadable, a directory, too large, not
            UTF-8, not YAML, or does not validate.

    Examples:
        >>> load_spec("examples/global.yaml").name  # doctest: +SKIP
        'global'
    """
    p = Path(path)
    try:
        if p.is_dir():
            raise SpecError(
                f"{p}: is a directory, not a spec file; give a YAML file such as "
                "examples/local.yaml"
            )
        with p.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(
            f"{p}: no such spec file; check the path (examples/ has local.yaml and global.yaml)"
        ) from None
    except PermissionError:
        raise SpecError(
            f"{p}: cannot read the spec: permission denied; make it readable "
            "(chmod u+r) or run as its owner"
        ) from None
    except OSError as exc:
        raise SpecError(
            f"{p}: cannot read the spec: {exc.strerror or exc}; check the path"
        ) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{p}: the spec is larger than {MAX_SPEC_BYTES} bytes (1 MiB); a spec "
            "is a few KiB: check that this is the right file"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(
            f"{p}:{line}: the spec is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
            f"line {line}, column {col}); save the file as UTF-8"
        ) from None
    return parse_spec(text, str(p))


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of the spec (what ``geoshard schema`` prints)."""
    return Spec.model_json_schema()
