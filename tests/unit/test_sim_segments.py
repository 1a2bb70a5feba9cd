"""Time segments, the slice's lead-in and the event loop's arrival streams.

* A large fault-free warm-started part is cut in time; the cut run agrees with the
  whole one per pool and per request type, and covers every second once.
* A slice starts before time 0 by the dilated gap of a recommend's second API visit,
  so the API pools' load in the measured window is the steady-state load (without the
  lead-in the slice's first seconds miss those visits and understate it).
* ``shifted`` moves the diurnal clock, campaigns and faults with a new time 0.
* ``EventLoop.add_stream`` interleaves a stream with heap events in time order.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import simpy

from geoshard.sim import parallel
from geoshard.sim.parallel import LEAD_S, plan_tasks, slice_lead_s
from geoshard.sim.run import simulate_spec
from geoshard.sim.simpy_adapter import NORMAL, EventLoop
from geoshard.sim.workload import expected_requests, shifted, start_of_day
from geoshard.spec import load_spec, parse_spec


def _with(spec: Any, **workload: Any) -> Any:
    data = spec.model_dump(mode="json")
    data["workload"].update(workload)
    return parse_spec(json.dumps(data))


# ---------------------------------------------------------------------------- shifted


def test_shifted_moves_the_clock_campaigns_and_faults(repo_root) -> None:
    spec = load_spec(repo_root / "examples/global-outage.yaml")
    spec = _with(
        spec, campaigns=[{"name": "c", "start_s": 20, "duration_s": 10, "multiplier": 2.0}]
    )
    fault = spec.faults.events[0]
    later = shifted(spec, 25.0)
    (c,) = later.workload.campaigns
    assert (c.start_s, c.duration_s) == (0.0, 5.0)  # cut to what is left
    assert later.workload.start_of_day_s == pytest.approx(
        (start_of_day(spec) + 25.0) % spec.workload.day_s
    )
    ends = [f.at_s + f.duration_s for f in later.faults.events]
    assert all(e == pytest.approx(fault.at_s + fault.duration_s - 25.0) for e in ends)
    earlier = shifted(spec, -7.0)  # a lead-in before the run
    assert earlier.workload.campaigns[0].start_s == 27.0
    assert earlier.faults.events[0].at_s == fault.at_s + 7.0
    gone = shifted(spec, fault.at_s + fault.duration_s + 100)
    assert gone.faults.events == [] and gone.workload.campaigns == []


# ---------------------------------------------------------------------------- tasks


def test_plan_tasks_cuts_large_fault_free_warm_parts_only(repo_root, monkeypatch) -> None:
    spec = load_spec(repo_root / "examples/global.yaml")
    whole = plan_tasks(spec, 30.0, 0.0, 1.0)
    assert [t.segment for t in whole] == [0, 1, 0, 1, 0, 1]  # 9-11 M requests per part
    first, second = whole[0], whole[1]
    assert (first.start_s, first.end_s, first.lead_s) == (0.0, 15.0, 0.0)
    assert (second.start_s, second.end_s, second.lead_s) == (15.0, 30.0, LEAD_S)
    part = list(whole[0].part)
    assert sum(t.expected for t in whole[:2]) == pytest.approx(
        expected_requests(spec, 30.0, 1.0, part) * (1 + LEAD_S / 30.0)
    )
    # not cut: short, a cold start, faults
    assert all(t.segment == 0 for t in plan_tasks(spec, 15.0, 0.0, 1.0))
    from geoshard.sim.engine import EngineOptions

    assert all(
        t.segment == 0 for t in plan_tasks(spec, 30.0, 3.0, 1.0, EngineOptions(warm_start=False))
    )
    outage = load_spec(repo_root / "examples/global-outage.yaml")
    assert all(t.segment == 0 for t in plan_tasks(outage, 30.0, 0.0, 1.0))


def test_a_slice_leads_in_by_the_dilated_second_visit_gap(repo_root) -> None:
    spec = load_spec(repo_root / "examples/global.yaml")
    assert slice_lead_s(spec, 1.0, 60.0) == 0
    # recommend p99 100 ms x (0.2 + 0.4 + 0.1) before precision = 70 ms, dilated by 1/R
    assert slice_lead_s(spec, 0.01, 60.0) == 7
    assert slice_lead_s(spec, 0.001, 10.0) == 70
    assert plan_tasks(spec, 10.0, 0.0, 0.01)[0].lead_s == 7
    # a lag under 1 % of the run is left out (a slice stays a dilated copy of the run)
    assert slice_lead_s(spec, 0.25, 30.0) == 0 and slice_lead_s(spec, 0.25, 20.0) == 1


# ---------------------------------------------------------------------------- fidelity


def _api_load(spec: Any, region: str) -> float:
    """The steady-state offered load of a region's API pool: a request visits once, a
    recommend twice, for the mean service time, on servers x workers."""
    reg = spec.regions[region]
    visits = 1.0 + spec.workload.mix.get("recommend", 0.0)
    rate = spec.workload.peak_qps[region] / 1000.0  # per ms, at the busiest hour
    return rate * visits * reg.api.service_time.mean_ms / (reg.api.servers * reg.api.workers)


def test_the_slice_sees_the_steady_api_load_from_its_first_second(repo_root) -> None:
    # a 5 s run at 1/1000: without the lead-in the recommends' second visits (30 % of the
    # requests, dilated 1000x) would be missing and the API load about 23 % short
    spec = load_spec(repo_root / "examples/global.yaml")
    result, _ = simulate_spec(spec, seed=3, duration_s=5.0, scale=0.001, workers=1)
    ratios = []
    for region in spec.regions:
        node = result["metrics"]["nodes"][f"{region}/api"]
        want = _api_load(spec, region)
        ratios += [node["peak_offered_load"] / want, node["utilisation"] / want]
    # about 1,200 joins per pool: 4 % sampling error each, 2 % over the six pools
    assert sum(ratios) / len(ratios) == pytest.approx(1.0, abs=0.05), ratios
    assert all(0.8 < x < 1.2 for x in ratios), ratios


def test_a_cut_run_agrees_with_the_whole_run(repo_root, monkeypatch) -> None:
    spec = load_spec(repo_root / "examples/validation/slice.yaml")
    whole, ts_whole = simulate_spec(spec, seed=3, duration_s=20.0, workers=1)
    monkeypatch.setattr(parallel, "SEGMENT_REQUESTS", 40_000)
    monkeypatch.setattr(parallel, "MIN_SEGMENT_S", 5)
    cut, ts_cut = simulate_spec(spec, seed=3, duration_s=20.0, workers=1)
    assert cut["machine"]["executor"]["segments"] == [4, 1]
    assert len(ts_cut) == len(ts_whole) == 20
    # every second is covered once: per-second arrivals as many as in the whole run
    for a, b in zip(ts_whole, ts_cut, strict=True):
        assert b["requests"] == pytest.approx(a["requests"], rel=0.1, abs=40)
    bad = []
    for name, a in whole["metrics"]["nodes"].items():
        b = cut["metrics"]["nodes"][name]
        for k in ("utilisation", "peak_offered_load"):
            if a[k] >= 0.2 and abs(b[k] / a[k] - 1) > 0.05:
                bad.append(f"{name} {k} {a[k]} vs {b[k]}")
        if a["utilisation"] >= 0.5 and abs(b["wait_ms"] / a["wait_ms"] - 1) > 0.15:
            bad.append(f"{name} wait {a['wait_ms']} vs {b['wait_ms']}")
    for t, per in whole["metrics"]["requests"].items():
        a, b = per["all"], cut["metrics"]["requests"][t]["all"]
        assert b["count"] == pytest.approx(a["count"], rel=0.03)
        if abs(b["p99_ms"] / a["p99_ms"] - 1) > 0.10:
            bad.append(f"{t} p99 {a['p99_ms']} vs {b['p99_ms']}")
    for lvl, a in whole["metrics"]["caches"].items():
        assert cut["metrics"]["caches"][lvl]["hit_ratio"] == pytest.approx(a["hit_ratio"], abs=0.01)
    assert bad == []


def test_a_cut_run_is_the_same_serially_and_on_ray(repo_root, monkeypatch) -> None:
    pytest.importorskip("ray")
    spec = load_spec(repo_root / "examples/validation/slice.yaml")
    monkeypatch.setattr(parallel, "SEGMENT_REQUESTS", 10_000)
    monkeypatch.setattr(parallel, "MIN_SEGMENT_S", 2)
    serial, _ = simulate_spec(spec, seed=4, duration_s=4.0, workers=1)
    on_ray, _ = simulate_spec(spec, seed=4, duration_s=4.0, workers=2)
    assert serial["machine"]["executor"]["segments"] == [2, 1]
    assert on_ray["machine"]["executor"]["executor"] == "ray"
    for r in (serial, on_ray):
        r.pop("machine")
    assert json.dumps(serial, sort_keys=True) == json.dumps(on_ray, sort_keys=True)


# ---------------------------------------------------------------------------- streams


class _Ev:
    _ok = True
    callbacks: list[Any] | None = None

    def __init__(self, name: str) -> None:
        self.name = name


def test_streams_and_heap_events_run_in_time_order() -> None:
    env = simpy.Environment()
    loop = EventLoop(env)
    seen: list[tuple[float, str]] = []

    def note(x: Any) -> None:
        seen.append((env.now, x if isinstance(x, str) else x.name))

    def spawn(x: str) -> None:  # a stream item that schedules an event before its next
        note(x)
        if x == "a2":
            loop.schedule(_Ev("from-a2"), env.now + 0.5, [note])

    loop.add_stream([1.0, 2.0, 3.0, 4.0], ["a1", "a2", "a3", "a4"], spawn)
    loop.add_stream([1.5, 3.0, 9.0], ["b1", "b2", "b3"], note)
    loop.schedule(_Ev("h3"), 3.0, [note], NORMAL)  # ties: the heap event first
    loop.run_until(5.0)
    assert seen == [
        (1.0, "a1"),
        (1.5, "b1"),
        (2.0, "a2"),
        (2.5, "from-a2"),
        (3.0, "h3"),
        (3.0, "a3"),
        (3.0, "b2"),
        (4.0, "a4"),
    ]
    assert env.now == 5.0
    loop.run_until(10.0)
    assert seen[-1] == (9.0, "b3")
