"""``geoshard seed``: a synthetic data set written into a running deployment.

* **items** (not personal data, so every region holds them all): a catalog entry in each
  region's hot tier (``item_catalog``) and a 64-d embedding in each region's Milvus
  (``item_embeddings``, partitioned by the item attribute of ``shards.items``), plus each
  region's initial trending list; then the region workers export the item snapshot
  the recall stage reads.
* **users**, spread over jurisdictions by ``workload.users_by_jurisdiction``: features
  (``user_features``) and, for nine users in ten, an embedding (``user_embeddings``; the
  tenth is a cold-start user), each written to the regions the ring places its replicas
  in for that data class. The stores' residency guard checks every write, so a datum
  can only land where its jurisdiction allows.

Items live near one centre per category and a user's embedding near the centre of
their favourite category, so recommendations have structure to find. Everything is
drawn from one seeded generator: the same ``--seed`` gives the same data.

Examples:
    >>> result = seed_deployment(StateDir(Path("/tmp/gs")), users=1000, items=5000)  # doctest: +SKIP
    >>> result.users, result.items                                                   # doctest: +SKIP
    (1000, 5000)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from geoshard.cluster.envelope import new_version, wrap
from geoshard.cluster.regionlog import RegionLog
from geoshard.cluster.routing import ALL_UP, Router
from geoshard.cluster.state import StateDir
from geoshard.cluster.stores import RegionStores, open_region
from geoshard.cluster.worker import ITEMS_VERSION_FIELD
from geoshard.errors import BackendError, ConfigError
from geoshard.keys import DataKey, UserKey
from geoshard.spec import Spec, load_spec
from geoshard.storage.tiering import encode_embedding

__all__ = ["EXTRA_CATEGORIES", "SeedResult", "item_categories", "seed_deployment"]

#: Categories beyond those the item shard map names (they go to its default shard).
EXTRA_CATEGORIES: tuple[str, ...] = ("home", "sports", "toys")
Progress = Callable[[str, int, int], None]


@dataclass
class SeedResult:
    """What was written."""

    users: int
    items: int
    cold_start_users: int
    writes_by_region: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    items_version: str = ""


def item_categories(spec: Spec) -> list[str]:
    """The categories seed gives items: those of the shard map, then a few more."""
    named = sorted(spec.shards.items.shards)
    return named + [c for c in EXTRA_CATEGORIES if c not in named]


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(n == 0, 1.0, n)).astype(np.float32)


def seed_deployment(
    sd: StateDir,
    *,
    users: int,
    items: int,
    spec_path: str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    wait_s: float = 300.0,
) -> SeedResult:
    """Write ``users`` users and ``items`` items into the deployment in ``sd``.

    Args:
        sd: the state directory of a running deployment.
        users: how many users (>= 0).
        items: how many items (>= 1).
        spec_path: when given, must be the spec the deployment runs.
        seed: the random seed.
        progress: ``progress(stage, done, total)``.
        wait_s: how long to wait for every region to serve the new items.

    Raises:
        ConfigError: bad counts, or a spec other than the deployment's.
        BackendError: a store failed, or the regions did not load the items in time.
    """
    if users < 0 or users > 10_000_000:
        raise ConfigError(f"--users(={users}) must be in 0..10000000")
    if items < 1 or items > 10_000_000:
        raise ConfigError(f"--items(={items}) must be in 1..10000000")
    state = sd.read_state()
    spec = load_spec(sd.spec_file)
    if spec_path is not None and load_spec(spec_path).model_dump() != spec.model_dump():
        raise ConfigError(
            f"{spec_path} is not the spec the deployment in {sd.root} runs "
            f"({sd.spec_file}); seed the deployment with the spec it was started with"
        )
    say: Progress = progress or (lambda _s, _d, _t: None)
    t0 = time.monotonic()
    router = Router.from_spec(spec)
    rng = np.random.default_rng(seed)
    dim = spec.storage.vector.dim
    cats = item_categories(spec)
    centres = _unit(rng.normal(size=(len(cats), dim)))
    regions = list(spec.regions)
    stores: dict[str, RegionStores] = {}
    result = SeedResult(users=users, items=items, cold_start_users=0)
    try:
        for r in regions:
            stores[r] = open_region(
                spec, state, r, residency=router.residency, vector=True, caches=False
            )
        _seed_items(spec, stores, rng, cats, centres, items, result, say)
        _seed_users(spec, router, stores, rng, cats, centres, users, result, say)
        version = f"seed-{seed}-{items}-{int(time.time())}"
        for r in regions:
            RegionLog(stores[r].hot, r).put_stats({ITEMS_VERSION_FIELD: version})
        result.items_version = version
    finally:
        for s in stores.values():
            s.close()
    _wait_items(sd, version, wait_s, say)
    result.seconds = time.monotonic() - t0
    return result


def _seed_items(
    spec: Spec,
    stores: dict[str, RegionStores],
    rng: np.random.Generator,
    cats: list[str],
    centres: np.ndarray,
    n: int,
    result: SeedResult,
    say: Progress,
) -> None:
    regions = list(stores)
    weights = rng.dirichlet(np.full(len(cats), 4.0))
    cat_of = rng.choice(len(cats), size=n, p=weights)
    vecs = _unit(
        centres[cat_of]
        + 0.6 * rng.normal(size=(n, centres.shape[1])) / np.sqrt(centres.shape[1]) * 4
    )
    ranks = rng.permutation(n)
    popularity = (1000.0 / (1.0 + ranks) ** spec.workload.zipf.items).astype(np.float64)
    now = time.time()
    created = now - rng.uniform(0, 365 * 86_400, size=n)
    price = np.round(rng.uniform(1, 500, size=n), 2)
    excluded = np.where(rng.random(n) < 0.1, rng.integers(0, len(regions), size=n), -1)
    attr = spec.shards.items.attribute
    ids = [f"sku-{i:07d}" for i in range(n)]
    batch = 5000
    total = n * len(regions)
    done = 0
    for start in range(0, n, batch):
        sl = slice(start, min(n, start + batch))
        rows = range(sl.start, sl.stop)
        avail = [
            ",".join(r for j, r in enumerate(regions) if j != excluded[i])
            if excluded[i] >= 0
            else ""
            for i in rows
        ]
        catalog = [
            (
                DataKey("item_catalog", ids[i]),
                json.dumps(
                    {
                        "item_id": ids[i],
                        attr: cats[cat_of[i]],
                        "price": float(price[i]),
                        "created_s": float(created[i]),
                        "popularity": float(popularity[i]),
                        "available_in": avail[k].split(",") if avail[k] else [],
                        "title": f"{cats[cat_of[i]]} item {i}",
                    },
                    separators=(",", ":"),
                ).encode(),
            )
            for k, i in enumerate(rows)
        ]
        attrs = [
            {
                attr: cats[cat_of[i]],
                "popularity": float(popularity[i]),
                "created_s": float(created[i]),
                "price": float(price[i]),
                "available_in": avail[k],
            }
            for k, i in enumerate(rows)
        ]
        keys = [DataKey("item_embeddings", ids[i]) for i in rows]
        for r, st in stores.items():
            st.hot.put_many(catalog)
            assert st.vector is not None
            st.vector.upsert(keys, vecs[sl], attrs)
            result.writes_by_region[r] = result.writes_by_region.get(r, 0) + 2 * len(keys)
            done += len(keys)
            say("items", done, total)
    order = np.argsort(-popularity, kind="stable")
    for j, (r, st) in enumerate(stores.items()):
        top = [ids[i] for i in order if excluded[i] != j][:500]
        doc = json.dumps({"items": top, "updated_at": now}, separators=(",", ":")).encode()
        st.hot.put(DataKey("aggregates", f"trending-{r}"), wrap(new_version(), doc))


def _seed_users(
    spec: Spec,
    router: Router,
    stores: dict[str, RegionStores],
    rng: np.random.Generator,
    cats: list[str],
    centres: np.ndarray,
    n: int,
    result: SeedResult,
    say: Progress,
) -> None:
    shares = spec.workload.users_by_jurisdiction
    counts = {j: round(n * s) for j, s in shares.items()}
    if counts:
        first = next(iter(counts))
        counts[first] += n - sum(counts.values())
    pending: dict[str, list[tuple[DataKey, bytes]]] = {r: [] for r in stores}
    logs = {r: RegionLog(st.hot, r) for r, st in stores.items()}
    done = 0
    now = time.time()

    def flush() -> None:
        for r, batch in pending.items():
            if batch:
                stores[r].hot.put_many(batch)
                logs[r].touch({str(k): now for k, _ in batch})
                result.writes_by_region[r] = result.writes_by_region.get(r, 0) + len(batch)
                batch.clear()

    for j, count in counts.items():
        for uid in range(count):
            user = UserKey(j, uid)
            fav = int(rng.integers(len(cats)))
            feats = {
                "favorite_category": cats[fav],
                "age_band": int(rng.integers(1, 8)),
                "activity": round(float(rng.gamma(2.0, 1.5)), 3),
                "premium": bool(rng.random() < 0.2),
            }
            doc = json.dumps({"features": feats, "updated_at": now}, separators=(",", ":")).encode()
            values: list[tuple[str, bytes]] = [("user_features", doc)]
            if uid % 10 != 9:
                emb = _unit(
                    centres[fav]
                    + 0.5 * rng.normal(size=centres.shape[1]) / np.sqrt(centres.shape[1]) * 4
                )
                values.append(("user_embeddings", encode_embedding(emb)))
            else:
                result.cold_start_users += 1
            for dc, payload in values:
                key = DataKey(dc, user)
                value = wrap(new_version(), payload)
                for r in dict.fromkeys(router.route(user, "write", ALL_UP, dc).regions):
                    pending[r].append((key, value))
            done += 1
            if done % 2000 == 0:
                flush()
                say("users", done, n)
    flush()
    say("users", done, n)


def _healthz_version(port: int) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        conn.request("GET", "/healthz")
        body = json.loads(conn.getresponse().read() or b"{}")
        v = body.get("items_version")
        return str(v) if v else None
    except (OSError, ValueError):
        return None
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _wait_items(sd: StateDir, version: str, wait_s: float, say: Progress) -> None:
    """Wait until every region's API serves the items snapshot of ``version``."""
    state = sd.read_state()
    deadline = time.monotonic() + wait_s
    pending = {r: st.api.port for r, st in state.regions.items() if st.api is not None}
    total = len(pending)
    while pending:
        for r, port in list(pending.items()):
            if _healthz_version(port) == version:
                del pending[r]
        say("regions loading the items", total - len(pending), total)
        if not pending:
            # one API process answered; its siblings check the snapshot every second
            time.sleep(1.5)
            return
        if time.monotonic() > deadline:
            raise BackendError(
                f"region(s) {', '.join(sorted(pending))} did not load the new items within "
                f"{wait_s:.0f} s; see their worker logs in {sd.root}/regions/<region>/logs"
            )
        time.sleep(0.25)
