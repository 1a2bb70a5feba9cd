"""One request path: the simulator and the deployment make the same decisions.

A seeded trace of reads and writes is replayed through the simulator's request path
(:meth:`Simulation.serve`: its plan, target and cache walk) and through the deployment's
(``Router.plan`` and a ``ReadThroughCache`` per API server over in-memory levels). Both
must choose the same entry region and replica, hit the same level and refuse the same
fills. The spec is ``examples/local.yaml`` with us-east lost: US clients then enter
eu-west, where (by a rule added here) US features may be processed but not stored: their
copy in eu-central answers, and the fills in eu-west are refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Literal

import numpy as np
import pytest

from geoshard import native
from geoshard.cluster.routing import REQUEST_DATA_CLASSES, Health, Router
from geoshard.keys import DataKey, UserKey
from geoshard.regions.residency import ResidencyPolicy
from geoshard.sim.engine import EngineOptions, Simulation
from geoshard.spec import REQUEST_TYPES, Spec, load_spec, parse_spec
from geoshard.storage.cache import make_policy
from geoshard.storage.caches import LocalCache, ReadThroughCache


def _spec(repo_root: Any) -> Spec:
    data = load_spec(repo_root / "examples/local.yaml").model_dump(mode="json")
    data["residency"]["rules"].append(
        {
            "jurisdiction": "us",
            "data_classes": ["user_features"],
            "store_in": ["us-east", "eu-central"],
            "process_in": ["us-east", "eu-west"],
        }
    )
    data["shards"]["users"]["allow_colocated_replicas"] = True
    # small caches, so that a short trace hits every level
    data["caches"]["l1"]["capacity_items"] = 300
    data["caches"]["l2"]["capacity_items"] = 1500
    data["caches"]["regional"]["capacity_items"] = 6000
    data["faults"] = {
        "detection_delay_s": 0,
        "events": [{"kind": "region_outage", "target": "us-east", "at_s": 0, "duration_s": 1000}],
    }
    return parse_spec(json.dumps(data))


def _trace(spec: Spec, n: int, seed: int) -> list[tuple[str, str, int, int, float]]:
    rng = np.random.default_rng(seed)
    regions = list(spec.regions)
    out = []
    for i in range(n):
        client = regions[int(rng.integers(len(regions)))]
        j = spec.regions[client].jurisdiction
        offset = 0 if j == "eu" else 60_000  # local.yaml: 60k EU users, then 40k US users
        uid = offset + int(rng.zipf(1.05) % 20_000)
        typ = REQUEST_TYPES[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
        out.append((client, typ, uid, int(rng.integers(4)), i * 0.01))
    return out


def _simulator(spec: Spec, trace: list[Any]) -> list[tuple[Any, ...]]:
    sim = Simulation(spec, 1, 10.0, options=EngineOptions(warm_start=False))
    return [sim.serve(c, t, u, s, now) for c, t, u, s, now in trace]


def _deployment(spec: Spec, trace: list[Any]) -> list[tuple[Any, ...]]:
    router = Router.from_spec(spec)
    policy = ResidencyPolicy.from_spec(spec)
    health = Health.of(["us-east"])
    clock = {"now": 0.0}
    c = spec.caches
    shared = {
        r: [
            LocalCache(
                n,
                make_policy(lvl.policy, capacity_items=lvl.capacity_items, ttl_s=lvl.ttl_s),
                region=r,
                residency=policy,
                clock=lambda: clock["now"],
            )
            for n, lvl in (("l2", c.l2), ("regional", c.regional))
            if lvl
        ]
        for r in spec.regions
    }
    l1c = c.l1
    assert l1c is not None
    l1s = {
        (r, i): LocalCache(
            "l1",
            make_policy(l1c.policy, capacity_items=l1c.capacity_items, ttl_s=l1c.ttl_s),
            region=r,
            residency=policy,
            clock=lambda: clock["now"],
        )
        for r in spec.regions
        for i in range(spec.regions[r].api.servers)
    }
    out: list[tuple[Any, ...]] = []
    for client, typ, uid, server, now in trace:
        clock["now"] = now
        j = spec.regions[client].jurisdiction
        op: Literal["read", "write"] = "write" if typ == "interaction_write" else "read"
        plan = router.plan(client, UserKey(j, uid), op, health, REQUEST_DATA_CLASSES[typ])
        if plan.entry is None:
            out.append((None, None, None, 0))
            continue
        e = plan.entry
        l1 = l1s[(e, server % spec.regions[e].api.servers)]
        key = DataKey("user_features", UserKey(j, uid))
        if op == "write":
            for r in policy.allowed_regions(j, "user_features", "store"):
                for level in shared[r]:
                    level.invalidate(key)
            l1.invalidate(key)
            out.append((e, plan.node, None, 0))
            continue
        # the tier answers from the planned replica; with none reachable the read fails
        # after the cache walk, and nothing is filled
        value = b"v" if plan.node is not None else None

        def load(k: object, v: bytes | None = value) -> bytes | None:
            return v

        reader = ReadThroughCache([l1, *shared[e]], loader=load)
        before = list(reader.refusals)
        reader.get(key)
        stats = reader.stats
        hit = next((i for i, h in enumerate(stats.hits) if h), -1)
        refused = sum(
            1 << i for i, (a, b) in enumerate(zip(reader.refusals, before, strict=False)) if a > b
        )
        out.append((e, plan.node, hit, refused))
    return out


def test_simulator_and_deployment_decide_the_same_on_one_trace(repo_root) -> None:
    spec = _spec(repo_root)
    trace = _trace(spec, 6000, seed=4)
    sim, dep = _simulator(spec, trace), _deployment(spec, trace)
    assert sim == dep
    # the trace exercises what it must: hits at every level, misses, refused fills
    hits = [h for _, _, h, _ in sim if h is not None]
    assert {-1, 0, 1, 2} <= set(hits)
    assert sum(1 for *_, r in sim if r) > 20
    assert {e for e, *_ in sim} == {"eu-west", "eu-central"}


def test_the_comparison_fails_when_a_path_changes_a_fill_or_a_replica(
    repo_root, monkeypatch
) -> None:
    if native.status()["compiled"]:
        # the compiled engine calls the cache walk directly, past any patch of the
        # module: the patched run needs the Python modules (geoshard.native)
        test = f"{__file__}::test_the_comparison_fails_when_a_path_changes_a_fill_or_a_replica"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
            capture_output=True,
            text=True,
            env={**os.environ, native.PURE_ENV: "1"},
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-3000:]
        return
    spec = _spec(repo_root)
    trace = _trace(spec, 800, seed=5)
    dep = _deployment(spec, trace)
    # a fill that skips the regional level
    from geoshard.storage.cache import walk

    real_fill = walk.fill

    def skip_regional(levels, key, size, now, hit, store_ok):
        return real_fill(levels[:2], key, size, now, min(hit, 2) if hit >= 0 else -1, store_ok[:2])

    monkeypatch.setattr("geoshard.sim.engine.cache_walk.fill", skip_regional)
    assert _simulator(spec, trace) != dep
    monkeypatch.undo()
    # a replica choice that ignores "nearest the entry"
    real = Router.pick_replica
    monkeypatch.setattr(
        Router,
        "pick_replica",
        lambda self, nodes, regions, entry, health=None: (len(nodes) - 1) if nodes else None,
    )
    changed = _simulator(spec, trace)
    monkeypatch.setattr(Router, "pick_replica", real)
    assert [n for _, n, *_ in changed] != [n for _, n, *_ in dep]


@pytest.mark.parametrize("seed", range(3))
def test_a_request_that_cannot_enter_its_jurisdiction_fails_with_the_reason(
    repo_root, seed: int
) -> None:
    spec = load_spec(repo_root / "examples/local.yaml")
    router = Router.from_spec(spec)
    plan = router.plan("us-east", UserKey("us", seed), "read", Health.of(["us-east", "eu-west"]))
    assert not plan.ok and plan.entry is None
    assert "us-east down" in plan.reason and "eu-west down" in plan.reason
