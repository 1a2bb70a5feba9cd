"""One chaos scenario against a running deployment, from load to verdict.

:func:`run_chaos`:

1. checks the deployment answers (every API healthy, every region's Redis Cluster
   settled: ``cluster_state:ok`` and replicas in sync; reliability-anchors §1.4 lesson 1)
   or raises :class:`~geoshard.errors.BackendError` (exit 3);
2. starts the load generator (bounded in time and operations) with unique users whose
   ring primary is the scenario's region;
3. injects the fault at a seeded time in the first third of the run, heals it after
   ``fault_share`` of the run, and keeps the load on until the end;
4. waits until the deployment settled again (bounded), then reads every write back
   (:mod:`~geoshard.cluster.chaos.audit`), checks the ledger
   (:func:`~geoshard.cluster.chaos.ledger.check_set`) and audits residency;
5. returns the result (and writes the run directory).

The verdict fails when an acknowledged write is lost, a value appears that was never
written (or was refused), the residency audit finds a violation, or the audit could not
be completed. Availability, P99 and failover time are measured, not gated.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoshard.cluster.chaos.audit import read_back, residency_audit
from geoshard.cluster.chaos.faults import (
    ApiCrash,
    DrainCrash,
    Fault,
    KillPrimary,
    LatencySpike,
    MinorityPartition,
    RegionOutage,
    RegionPartition,
    Surge,
    hot_tier_settled,
    wait_until,
)
from geoshard.cluster.chaos.ledger import Ledger, check_set
from geoshard.cluster.chaos.loadgen import LoadConfig, LoadGenerator, UserPool
from geoshard.cluster.chaos.report import write_run
from geoshard.cluster.chaos.timeline import buckets, failover_s, phase_stats
from geoshard.cluster.launcher import Launcher
from geoshard.cluster.routing import ALL_UP, Router
from geoshard.cluster.state import DeploymentState
from geoshard.errors import BackendError, ConfigError, did_you_mean
from geoshard.spec import Spec, load_spec

__all__ = ["SCENARIOS", "ChaosOptions", "run_chaos"]

RESULT_SCHEMA_VERSION = 1

#: The scenarios, by name: the fault and what it does (explicit registry).
SCENARIOS: dict[str, tuple[type[Fault], str]] = {
    "kill-primary": (KillPrimary, "kill -9 a Redis primary of the region's cluster"),
    "region-outage": (RegionOutage, "stop every process of the region"),
    "minority-partition": (
        MinorityPartition,
        "a Redis primary cut off from its peers (nft), still reachable by its clients",
    ),
    "api-crash": (ApiCrash, "kill -9 the region's API (uvicorn and its workers)"),
    "region-partition": (RegionPartition, "the fault proxy cuts the region from a peer"),
    "latency-spike": (LatencySpike, "+250 ms on every proxy link of the region"),
    "surge": (Surge, "3x the load, entering at the region"),
    "drain-crash": (DrainCrash, "kill -9 the region worker (log drain, replication) under load"),
}

#: The operation mix of the load generator.
DEFAULT_MIX = {"feature_write": 0.45, "interaction_write": 0.25, "feature_read": 0.30}
MIN_DURATION_S, MAX_DURATION_S = 8.0, 3600.0


@dataclass
class ChaosOptions:
    """How to run a scenario.

    Attributes:
        scenario: a name of :data:`SCENARIOS`.
        seed: seeds the fault time, the target node or link and the load.
        duration_s: the load's length (the fault and heal happen inside it).
        region: the region to hit (default: a seeded choice among regions whose
            jurisdiction has another region to fail over to).
        rate_per_s: operations per second of the load generator.
        threads: its concurrent clients.
        fault_share: the fault lasts this share of ``duration_s``.
        settle_timeout_s: bound on waiting for the deployment to settle after the run.
    """

    scenario: str
    seed: int = 0
    duration_s: float = 30.0
    region: str | None = None
    rate_per_s: float = 60.0
    threads: int = 6
    fault_share: float = 0.35
    settle_timeout_s: float = 90.0

    def check(self, state: DeploymentState | None = None) -> None:
        """Raise :class:`ConfigError` naming the bad option (the region only with a
        ``state``: options are checked before the deployment is looked at, and again
        with it)."""
        if self.scenario not in SCENARIOS:
            raise ConfigError(
                f"--scenario '{self.scenario}' is not a scenario"
                f"{did_you_mean(self.scenario, list(SCENARIOS))} (known: {', '.join(SCENARIOS)})"
            )
        if not MIN_DURATION_S <= self.duration_s <= MAX_DURATION_S:
            raise ConfigError(
                f"--duration(={self.duration_s:g}) must be in {MIN_DURATION_S:g}..{MAX_DURATION_S:g} s"
            )
        if state is not None and self.region is not None and self.region not in state.regions:
            raise ConfigError(
                f"--region '{self.region}' is not in the deployment"
                f"{did_you_mean(self.region, list(state.regions))}"
            )
        if not 0 < self.fault_share < 0.7:
            raise ConfigError(f"fault_share(={self.fault_share}) must be in (0, 0.7)")


def _machine() -> dict[str, Any]:
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    return {
        "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "commit": commit,
    }


def _apis_healthy(state: DeploymentState) -> list[str]:
    """Regions whose API does not answer ``/healthz`` ok."""
    bad = []
    for r, st in state.regions.items():
        try:
            assert st.api is not None
            conn = http.client.HTTPConnection("127.0.0.1", st.api.port, timeout=2.0)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status != 200:
                    bad.append(r)
            finally:
                conn.close()
        except (OSError, AssertionError, http.client.HTTPException):
            bad.append(r)
    return bad


def _settled(spec: Spec, state: DeploymentState) -> bool:
    reps = spec.storage.hot.replicas_per_primary
    return not _apis_healthy(state) and all(hot_tier_settled(state, r, reps) for r in state.regions)


def _pick_region(spec: Spec, rng: random.Random) -> str:
    multi = [
        r
        for r, reg in sorted(spec.regions.items())
        if len(spec.jurisdiction_regions(reg.jurisdiction)) > 1
    ]
    return rng.choice(multi or sorted(spec.regions))


def run_chaos(
    root: Path,
    spec_path: Path,
    opts: ChaosOptions,
    *,
    out: Path | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Run one scenario; see the module docstring.

    Raises:
        ConfigError: a bad option, or ``spec_path`` names another deployment (exit 2).
        BackendError: the deployment is not running or not healthy (exit 3).
    """
    opts.check()
    launcher = Launcher(root, log=log)
    if not launcher.dir.exists():
        raise BackendError(
            f"no deployment runs in {launcher.dir.root} (no state.json); start one with "
            f"geoshard up SPEC --dir {launcher.dir.root}"
        )
    spec, state = launcher.load()
    given = load_spec(spec_path)
    if given.name != spec.name:
        raise ConfigError(
            f"{spec_path} is the spec '{given.name}', but {launcher.dir.root} runs "
            f"'{spec.name}'; give the spec the deployment was started with"
        )
    opts.check(state)
    if not wait_until(lambda: _settled(spec, state), 60.0, poll_s=0.5):
        raise BackendError(
            f"the deployment in {launcher.dir.root} is not healthy (APIs down: "
            f"{', '.join(_apis_healthy(state)) or 'none'}; or a Redis Cluster not settled); "
            f"see geoshard status --dir {launcher.dir.root}"
        )
    rng = random.Random(opts.seed)
    region = opts.region or _pick_region(spec, rng)
    fault_cls = SCENARIOS[opts.scenario][0]
    fault = fault_cls(launcher, region, rng)
    run_id = f"c{int(time.time() * 1000) % 10**11:x}{rng.getrandbits(16):04x}"
    router = Router.from_spec(spec)
    j = spec.regions[region].jurisdiction
    base = 10**15 + (int(time.time() * 1000) % 10**9) * 10**5

    def primary_is(data_class: str) -> Callable[[str], bool]:
        return lambda u: router.route(u, "write", ALL_UP, data_class).regions[0] == region

    writes = UserPool(j, base, primary_is("user_features"))
    inters = UserPool(j, base + 5 * 10**4, primary_is("interactions"))
    peers = sorted(r for r in spec.regions if r != region and spec.regions[r].jurisdiction == j)
    order = [region, *peers]
    order += sorted(r for r in spec.regions if r not in order)
    ports = {r: st.api.port for r, st in state.regions.items() if st.api is not None}
    token = launcher.dir.read_token()
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    ledger = Ledger()
    cfg = LoadConfig(
        ports=ports,
        entry_order=order,
        token=token,
        run_id=run_id,
        mix=DEFAULT_MIX,
        rate_per_s=opts.rate_per_s,
        threads=opts.threads,
        duration_s=opts.duration_s,
        max_ops=int(min(1_000_000, opts.rate_per_s * opts.duration_s * 3 + 100)),
        read_users=[f"{j}:{i}" for i in range(200)],
        seed=opts.seed,
    )
    gen = LoadGenerator(cfg, ledger, writes, inters, clock)
    fault.load = gen
    fault_at = round(rng.uniform(0.2, 0.33) * opts.duration_s, 3)
    heal_at = fault_at + opts.fault_share * opts.duration_s
    stop = threading.Event()
    hit: dict[str, Any] = {}
    injected_at = healed_at = heal_done = 0.0
    log(f"chaos {opts.scenario} on {region} (seed {opts.seed}): fault at {fault_at:.1f} s")
    try:
        gen.start()
        stop.wait(max(0.0, fault_at - clock()))
        injected_at = clock()
        hit = fault.inject()
        log(f"injected {opts.scenario} at {injected_at:.1f} s: {hit}")
        stop.wait(max(0.0, heal_at - clock()))
        healed_at = clock()
        fault.heal()
        heal_done = clock()
        log(f"healed at {healed_at:.1f} s (repair took {heal_done - healed_at:.1f} s)")
        stop.wait(max(0.0, opts.duration_s - clock()))
    finally:
        gen.stop()
        fault.cleanup()
    end = clock()
    log("load stopped; waiting for the deployment to settle")
    state = launcher.dir.read_state()
    settled = wait_until(lambda: _settled(spec, state), opts.settle_timeout_s, poll_s=0.5)
    settle_s = clock() - end
    ws = ledger.writes()
    rb = read_back(spec, state, ws, run_id)
    fws = [w for w in ws if w.kind == "feature"]
    iws = [w for w in ws if w.kind == "interaction"]
    feats = check_set(fws, rb.found_for(fws))
    evs = check_set(iws, rb.found_for(iws))
    audit = residency_audit(spec, state)
    samples = gen.samples()
    phases = phase_stats(samples, fault_at_s=injected_at, heal_at_s=healed_at, end_s=end)
    fo, recovered = failover_s(samples, fault_at_s=injected_at, heal_at_s=healed_at)
    lost = feats.lost + evs.lost
    unexpected = feats.unexpected + evs.unexpected + feats.resurrected + evs.resurrected
    failures = []
    if lost:
        failures.append(
            f"{len(lost)} acknowledged writes lost, e.g. "
            + ", ".join(f"{k} (token {t}, acknowledged by {r})" for k, t, r in lost[:5])
        )
    if unexpected:
        failures.append(
            f"{len(unexpected)} values found that were never written or were refused, e.g. "
            + ", ".join(f"{k}={t}" for k, t in unexpected[:5])
        )
    if audit.violation_count:
        failures.append(
            f"{audit.violation_count} residency violations, e.g. {'; '.join(audit.violations[:3])}"
        )
    if not audit.complete or rb.problems:
        failures.append(
            "the audit could not read everything: " + "; ".join((audit.problems + rb.problems)[:5])
        )
    metrics: dict[str, Any] = {
        "acknowledged_writes_lost": len(lost),
        "residency_violations": audit.violation_count,
        "failover_s": fo,
        "recovered_before_heal": recovered,
        "availability_during_fault": phases["during"]["availability"],
        "p99_ms_before": phases["before"]["p99_ms"],
        "p99_ms_during": phases["during"]["p99_ms"],
        "p99_ms_after": phases["after"]["p99_ms"],
        "writes_attempted": feats.attempted + evs.attempted,
        "writes_acknowledged": feats.ok + evs.ok,
        "writes_refused": feats.failed + evs.failed,
        "writes_indeterminate": feats.indeterminate + evs.indeterminate,
        "indeterminate_found": feats.recovered + evs.recovered,
        "unexpected_values": len(unexpected),
        "parquet_duplicates": rb.parquet_duplicates,
        "not_yet_replicated": rb.not_replicated(
            [w for w in ws if w.kind == "feature"],
            {
                w.key: list(router.route(w.key.split(":", 1)[1], "write", ALL_UP).regions)
                for w in ws
                if w.kind == "feature" and w.outcome == "ok"
            },
        ),
        "feature_writes": {"ok": feats.ok, "lost": len(feats.lost)},
        "interaction_writes": {"ok": evs.ok, "lost": len(evs.lost)},
        "residency_checked": audit.checked,
        "residency_examples": audit.violations,
        "lost_writes": [list(x) for x in lost[:1000]],
        "unexpected": [list(x) for x in unexpected[:1000]],
        "requests": len(samples),
        "phases": phases,
        "settled": settled,
        "settle_s": round(settle_s, 3),
        "repair_s": round(heal_done - healed_at, 3),
    }
    result: dict[str, Any] = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "kind": "chaos",
        "scenario": opts.scenario,
        "description": SCENARIOS[opts.scenario][1],
        "seed": opts.seed,
        "region": region,
        "run_id": run_id,
        "deployment": str(launcher.dir.root),
        "spec": spec.model_dump(mode="json"),
        "options": {
            "duration_s": opts.duration_s,
            "rate_per_s": opts.rate_per_s,
            "threads": opts.threads,
            "fault_share": opts.fault_share,
            "durable_writes": spec.storage.hot.durable_writes,
        },
        "fault": {
            "at_s": round(injected_at, 3),
            "healed_at_s": round(healed_at, 3),
            "target": hit,
        },
        "metrics": metrics,
        "verdict": {"passed": not failures, "failures": failures},
        "machine": _machine(),
    }
    run_dir = out or Path("runs") / f"chaos-{opts.scenario}-{opts.seed}"
    write_run(run_dir, result, buckets(samples), ws)
    result["run_dir"] = str(run_dir)
    return result
