"""Residency holds in the simulator under any rules and any outages (a property test).

Each example is ``examples/local.yaml`` (eu-west, eu-central, us-east; 3 hot nodes each)
with random residency rules (per jurisdiction and personal data class, a ``store_in``
and maybe a ``process_in`` over the spec's regions) and random faults (region outages,
node crashes, partitions, at random times and detection delays), checked by the spec
loader like any user's spec. A short run must then:

* report 0 residency violations in its audit (and have audited something);
* fail, with the reason ``no_allowed_region``, every request that no region may serve:
  a request of a client region and type for which, in every state the router goes
  through, no live and reachable region may process all the data classes it touches is
  never answered, and each of its failures is counted with that reason;
* never give that reason to a request that some region could serve: the count of
  ``no_allowed_region`` is at most the failures of the (client, type) pairs that the
  oracle below finds unservable in some state, and 0 when there are none.

The oracle is written here from the rules themselves (the last rule naming a class
wins; ``process_in`` defaults to ``store_in``; home regions otherwise) and from the
fault list (the router learns a fault ``detection_delay_s`` after it starts and after it
ends), not from the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoshard.sim.engine import EngineOptions
from geoshard.sim.run import simulate_spec
from geoshard.spec import PERSONAL_CLASSES, REQUEST_TYPES, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = load_spec(REPO / "examples" / "local.yaml").model_dump(mode="json")
REGIONS = sorted(BASE["regions"])
JURISDICTION = {r: BASE["regions"][r]["jurisdiction"] for r in REGIONS}
NODES = [f"{r}/hot-{i}" for r in REGIONS for i in range(BASE["regions"][r]["hot"]["nodes"])]
#: the personal data classes each request type touches (reads and processes)
TOUCHES = {
    "feature_read": ("user_features",),
    "recommend": ("user_features", "user_embeddings"),
    "interaction_write": ("interactions",),
}
#: the class whose copies a request of each type reads or writes on the user ring
RING_CLASS = {"feature_read": "user_features", "interaction_write": "interactions"}
DURATION_S = 4.0

region_sets = st.lists(st.sampled_from(REGIONS), min_size=1, max_size=3, unique=True)


@st.composite
def rules(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to four rules, each naming some personal classes of one jurisdiction."""
    out = []
    for _ in range(draw(st.integers(0, 4))):
        rule: dict[str, Any] = {
            "jurisdiction": draw(st.sampled_from(sorted(BASE["jurisdictions"]))),
            "data_classes": draw(
                st.lists(st.sampled_from(PERSONAL_CLASSES), min_size=1, max_size=4, unique=True)
            ),
            "store_in": draw(region_sets),
        }
        if draw(st.booleans()):
            rule["process_in"] = draw(region_sets)
        out.append(rule)
    return out


@st.composite
def faults(draw: st.DrawFn) -> dict[str, Any]:
    """Up to three outages; some start at 0 and outlast the run, so they hold throughout."""
    events = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["region_outage", "node_crash", "partition"]))
        event: dict[str, Any] = {
            "kind": kind,
            "at_s": draw(st.sampled_from([0.0, 0.0, 1.0, 2.5])),
            "duration_s": draw(st.sampled_from([1.0, 2.0, 100.0])),
        }
        if kind == "region_outage":
            event["target"] = draw(st.sampled_from(REGIONS))
        elif kind == "node_crash":
            event["target"] = draw(st.sampled_from(NODES))
        else:
            event["between"] = draw(
                st.lists(st.sampled_from(REGIONS), min_size=2, max_size=2, unique=True)
            )
        events.append(event)
    return {"detection_delay_s": draw(st.sampled_from([0.0, 0.5])), "events": events}


def _allowed(rules: list[dict[str, Any]], j: str, dc: str, purpose: str) -> set[str]:
    regions = {r for r in REGIONS if JURISDICTION[r] == j}
    for rule in rules:
        if rule["jurisdiction"] == j and dc in rule["data_classes"]:
            regions = set(rule["store_in"])
            if purpose == "process":
                regions = set(rule.get("process_in") or rule["store_in"])
    return regions


def _known_states(fault: dict[str, Any]) -> list[tuple[set[str], set[str], set[frozenset[str]]]]:
    """(down regions, down nodes, partitions) the router believes in, in each interval."""
    det = fault["detection_delay_s"]
    events = fault["events"]
    cuts = {0.0} | {e["at_s"] + det for e in events}
    cuts |= {e["at_s"] + e["duration_s"] + det for e in events}
    states = []
    for t in sorted(c for c in cuts if c < DURATION_S):
        seen = [e for e in events if e["at_s"] + det <= t < e["at_s"] + e["duration_s"] + det]
        states.append(
            (
                {e["target"] for e in seen if e["kind"] == "region_outage"},
                {e["target"] for e in seen if e["kind"] == "node_crash"},
                {frozenset(e["between"]) for e in seen if e["kind"] == "partition"},
            )
        )
    return states


def _unservable(
    rules: list[dict[str, Any]],
    state: tuple[set[str], set[str], set[frozenset[str]]],
    client: str,
    rtype: str,
) -> tuple[bool, bool, bool]:
    """``(no entry, surely, maybe)``: whether a client region's requests of one type can
    find an entry region, and whether they surely or maybe cannot be served.

    No entry: no live region reachable from the client may process every class the
    request touches. Surely: no entry, or (a read or a write) no live node may store the
    class it reads or writes. Maybe: besides, a partition may cut a user's ring copies
    off from the entry. A recommend without its features degrades; it fails only for
    want of an entry.
    """
    down_regions, down_nodes, cuts = state
    j = JURISDICTION[client]
    process = set(REGIONS)
    for dc in TOUCHES[rtype]:
        process &= _allowed(rules, j, dc, "process")
    entries = {r for r in process - down_regions if frozenset((client, r)) not in cuts}
    if not entries:
        return True, True, True
    if rtype not in RING_CLASS:
        return False, False, False
    store = _allowed(rules, j, RING_CLASS[rtype], "store")
    live = [n for n in NODES if n not in down_nodes and n.split("/")[0] in store - down_regions]
    return False, not live, not live or bool(cuts)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(rules(), faults(), st.booleans(), st.integers(0, 2**16))
def test_no_residency_violation_and_unservable_requests_fail_with_the_reason(
    rules: list[dict[str, Any]], fault: dict[str, Any], warm: bool, seed: int
) -> None:
    data = json.loads(json.dumps(BASE))
    data["residency"]["rules"] = rules
    # a rule may leave fewer regions than the replication factor: colocate then
    data["shards"]["users"]["allow_colocated_replicas"] = True
    data["faults"] = fault
    spec = parse_spec(json.dumps(data))  # raises if the example is not a valid spec
    result, _ = simulate_spec(
        spec,
        seed=seed,
        duration_s=DURATION_S,
        warmup_s=0.0,
        options=EngineOptions(warm_start=warm),
        workers=1,
    )
    m = result["metrics"]
    assert m["residency"]["violations"] == 0, m["residency"]["examples"]
    assert m["residency"]["checks"] > 0

    states = _known_states(fault)
    # with detection_delay_s 0 the router's belief is the truth: no request of a surely
    # unservable pair meets a dead hop first and fails as a stale route instead
    believed = fault["detection_delay_s"] == 0
    surely, maybe = 0, 0  # failures of the pairs surely / maybe unservable
    for rtype in REQUEST_TYPES:
        for client in REGIONS:
            row = m["requests"][rtype][client]
            verdicts = [_unservable(rules, s, client, rtype) for s in states]
            if all(v[0] for v in verdicts) or (believed and all(v[1] for v in verdicts)):
                assert row["count"] == 0, (rtype, client, row)
                assert row["failed"] > 0, (rtype, client, row)
                surely += row["failed"]
            if any(v[2] for v in verdicts):
                maybe += row["failed"]
    assert surely <= m["counts"]["no_allowed_region"] <= maybe, (surely, maybe, m["counts"])
