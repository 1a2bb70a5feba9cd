"""The failure and load scenarios a plan must survive, for the model and the simulator.

Every scenario runs at the workload's peak (the busiest diurnal step) with no scheduled
fault except its own:

* ``normal``: everything up.
* ``region-loss``: a region is down from the start and the router knows it (health
  checks have long noticed): its clients enter the nearest region their residency allows
  (:meth:`~geoshard.cluster.routing.Router.entry_candidates` with that region down), its
  replicas are skipped. Regions of different independent parts of the topology
  (:func:`geoshard.sim.parallel.components`) never exchange a request, so one scenario
  loses one region of every part at once: ``examples/global.yaml``'s six losses are two
  scenarios. A region whose loss leaves some jurisdiction with no region allowed to
  serve it is not planned for (no size fixes residency); the plan says so.
* ``n-1``: every pool has one node fewer (an API server, a warm node) and the hottest hot
  node of every region is down (its keys fail over on the ring).
* ``campaign``: each campaign of the spec, its multiplier applied to its regions for the
  whole run.

:func:`scenario_spec` turns a scenario into a spec the simulator runs as it is (faults at
time 0 with no detection delay, the campaign over the whole run).

Examples:
    >>> from geoshard.spec import load_spec
    >>> spec = load_spec("examples/global.yaml")                 # doctest: +SKIP
    >>> [s.name for s in plan_scenarios(spec, ["region-loss"])[0]]  # doctest: +SKIP
    ['region-loss eu-west+us-east+ap-southeast', 'region-loss eu-central+us-west+ap-northeast']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from geoshard.cluster.routing import REQUEST_DATA_CLASSES, Health, Router
from geoshard.spec import REQUEST_TYPES, Spec

__all__ = ["SCENARIO_KINDS", "Scenario", "plan_scenarios", "scenario_spec"]

#: The scenario kinds ``--scenarios`` accepts.
SCENARIO_KINDS = ("normal", "region-loss", "n-1", "campaign")


@dataclass(frozen=True)
class Scenario:
    """One scenario.

    Attributes:
        name: what the output calls it (``region-loss eu-west+us-east``).
        kind: one of :data:`SCENARIO_KINDS`.
        down_regions: regions down for the whole run.
        multipliers: ``(region, rate multiplier)`` pairs (campaigns).
        minus_one: every pool one node fewer, the hottest hot node down.
    """

    name: str
    kind: str
    down_regions: frozenset[str] = frozenset()
    multipliers: tuple[tuple[str, float], ...] = ()
    minus_one: bool = False

    def multiplier(self, region: str) -> float:
        """The rate multiplier of ``region`` (1 outside campaigns)."""
        return dict(self.multipliers).get(region, 1.0)

    def health(self, down_nodes: frozenset[str] = frozenset()) -> Health:
        """The router's health in this scenario (``down_nodes``: the n-1 crashes)."""
        return Health(down_nodes, self.down_regions)


def _parts(spec: Spec) -> list[list[str]]:
    from .parallel import components

    return components(spec)


def _unservable(spec: Spec, router: Router, down: frozenset[str]) -> list[str]:
    """Why some clients would have no region to serve them with ``down`` lost."""
    health = Health(frozenset(), down)
    users = spec.workload.users_by_jurisdiction
    out = []
    for c, reg in spec.regions.items():
        j = reg.jurisdiction
        if users.get(j, 0.0) <= 0 or spec.workload.peak_qps.get(c, 0.0) <= 0:
            continue
        for t in REQUEST_TYPES:
            if spec.workload.mix.get(t, 0.0) <= 0:
                continue
            if not router.entry_candidates(c, j, REQUEST_DATA_CLASSES[t], health):
                out.append(f"{c}'s {t} ({j})")
    return out


def plan_scenarios(
    spec: Spec, kinds: Sequence[str], router: Router | None = None
) -> tuple[list[Scenario], list[str]]:
    """The scenarios of ``kinds`` for ``spec``, and notes on what was left out and why.

    Raises:
        ValueError: an unknown kind (the CLI checks kinds first).
    """
    router = router or Router.from_spec(spec)
    out: list[Scenario] = []
    notes: list[str] = []
    for kind in kinds:
        if kind not in SCENARIO_KINDS:
            raise ValueError(f"unknown scenario kind '{kind}'")
        if kind == "normal":
            out.append(Scenario("normal", "normal"))
        elif kind == "n-1":
            out.append(Scenario("n-1", "n-1", minus_one=True))
        elif kind == "campaign":
            if not spec.workload.campaigns:
                notes.append(
                    "campaign: the spec has no workload.campaigns, so there is no "
                    "campaign to plan for"
                )
            for c in spec.workload.campaigns:
                regs = c.regions if c.regions is not None else list(spec.regions)
                out.append(
                    Scenario(
                        f"campaign {c.name}",
                        "campaign",
                        multipliers=tuple((r, c.multiplier) for r in regs),
                    )
                )
        else:
            parts = _parts(spec)
            plannable: list[list[str]] = []
            for part in parts:
                keep = []
                for r in part:
                    why = _unservable(spec, router, frozenset({r}))
                    if why:
                        notes.append(
                            f"region-loss {r}: not planned for, because "
                            f"{', '.join(why[:3])} would have no region allowed to "
                            "serve it (residency); no size fixes that"
                        )
                    else:
                        keep.append(r)
                plannable.append(keep)
            for i in range(max((len(p) for p in plannable), default=0)):
                group = [p[i] for p in plannable if len(p) > i]
                out.append(
                    Scenario(
                        "region-loss " + "+".join(group),
                        "region-loss",
                        down_regions=frozenset(group),
                    )
                )
    return out, notes


def scenario_spec(
    spec: Spec, scenario: Scenario, duration_s: float, crashed: Mapping[str, str] | None = None
) -> Spec:
    """The spec the simulator runs for ``scenario``: faults at 0, known at once.

    Args:
        spec: the candidate spec.
        scenario: the scenario.
        duration_s: the run's length (a campaign covers all of it).
        crashed: for ``n-1``, region -> the hot node to crash (the model's hottest).

    The spec's own faults and campaigns are dropped (each scenario has only its own),
    and the run starts at the busiest diurnal step.
    """
    data: dict[str, Any] = spec.model_dump(mode="json")
    w = data["workload"]
    w["campaigns"] = []
    w["start_of_day_s"] = None
    faults: list[dict[str, Any]] = []
    if scenario.kind == "region-loss":
        faults = [
            {"kind": "region_outage", "target": r, "at_s": 0.0, "duration_s": duration_s}
            for r in sorted(scenario.down_regions)
        ]
    elif scenario.kind == "campaign":
        w["campaigns"] = [
            {
                "name": scenario.name.removeprefix("campaign ")[:100],
                "start_s": 0.0,
                "duration_s": duration_s,
                "multiplier": m,
                "regions": [r],
            }
            for r, m in scenario.multipliers
        ]
    elif scenario.minus_one:
        for reg in data["regions"].values():
            reg["api"]["servers"] = max(1, reg["api"]["servers"] - 1)
            reg["warm"]["nodes"] = max(1, reg["warm"]["nodes"] - 1)
        faults = [
            {"kind": "node_crash", "target": node, "at_s": 0.0, "duration_s": duration_s}
            for node in sorted((crashed or {}).values())
        ]
    data["faults"] = {"detection_delay_s": 0.0, "events": faults}
    return Spec.model_validate(data)
