"""A golden seeded run: an unintended change to simulated results shows up here.

The run is ``examples/local.yaml`` with two faults added (a hot node crash noticed after
1 s, a latency spike), as a 0.25 slice for 10 simulated seconds with seed 11: it takes
the slice, warm-start, fault, failover and residency paths in about two seconds. Its
``result.json`` and time series are committed under ``tests/data/golden/``, without
``machine`` (host, wall clock, executor) and ``versions`` (the installed packages),
the only parts that are not a function of the spec and the seed. Integers and strings
must match exactly, floats within a relative 1e-6 (results are rounded to 6 significant
digits; the tolerance only absorbs a last-bit difference in a sum before rounding).

When a change is meant to alter simulated results (or ``examples/local.yaml`` changes),
regenerate the files and review their diff with the change::

    GEOSHARD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_golden.py
    git diff tests/data/golden/
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from geoshard.sim.run import simulate_spec
from geoshard.spec import Spec, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "data" / "golden" / "local-faults"
SEED, SCALE, DURATION_S = 11, 0.25, 10.0
REL_TOL = 1e-6
#: the parts of a result that depend on the host, the clock or the installed packages
NOT_GOLDEN = ("machine", "versions")


def _spec() -> Spec:
    data = load_spec(REPO / "examples" / "local.yaml").model_dump(mode="json")
    data["faults"] = {
        "detection_delay_s": 1,
        "events": [
            {"kind": "node_crash", "target": "eu-west/hot-1", "at_s": 3, "duration_s": 3},
            {
                "kind": "latency_spike",
                "target": "us-east",
                "at_s": 2,
                "duration_s": 2,
                "extra_ms": 20,
            },
        ],
    }
    return parse_spec(json.dumps(data))


def _run(workers: int) -> dict[str, Any]:
    result, timeseries = simulate_spec(
        _spec(), seed=SEED, duration_s=DURATION_S, scale=SCALE, workers=workers
    )
    for key in NOT_GOLDEN:
        result.pop(key)
    # a JSON round trip: tuples become lists, as in the committed files
    return json.loads(json.dumps({"result": result, "timeseries": timeseries}))


def _differences(want: Any, got: Any, path: str = "") -> list[str]:
    """Where ``got`` differs from ``want`` (floats within ``REL_TOL``), as key paths."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{path}.{k}: missing" for k in sorted(set(want) - set(got))]
        out += [f"{path}.{k}: unexpected" for k in sorted(set(got) - set(want))]
        for k in sorted(set(want) & set(got)):
            out += _differences(want[k], got[k], f"{path}.{k}")
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{path}: {len(got)} items, golden has {len(want)}"]
        return [
            d
            for i, (w, g) in enumerate(zip(want, got, strict=True))
            for d in _differences(w, g, f"{path}[{i}]")
        ]
    if isinstance(want, float) or isinstance(got, float):
        if (
            isinstance(want, int | float)
            and isinstance(got, int | float)
            and not isinstance(want, bool)
            and not isinstance(got, bool)
            and math.isclose(want, got, rel_tol=REL_TOL, abs_tol=1e-12)
        ):
            return []
        return [f"{path}: {got!r}, golden has {want!r}"]
    return (
        [] if want == got and type(want) is type(got) else [f"{path}: {got!r}, golden has {want!r}"]
    )


def _write(run: dict[str, Any]) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name in ("result", "timeseries"):
        text = json.dumps(run[name], indent=2, sort_keys=True) + "\n"
        (GOLDEN / f"{name}.json").write_text(text, encoding="utf-8")


def test_the_seeded_run_matches_the_golden_result() -> None:
    run = _run(workers=1)
    if os.environ.get("GEOSHARD_UPDATE_GOLDEN") == "1":
        _write(run)
        pytest.skip(f"wrote {GOLDEN.relative_to(REPO)}; review it with git diff")
    want = {
        name: json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
        for name in ("result", "timeseries")
    }
    diffs = _differences(want, run)
    assert not diffs, (
        f"{len(diffs)} difference(s) from the golden run, e.g.:\n  "
        + "\n  ".join(diffs[:20])
        + "\nIf the change is meant, regenerate: GEOSHARD_UPDATE_GOLDEN=1 pytest "
        "tests/unit/test_golden.py"
    )
    # the run is checked for what makes a golden worth having: it has faults and results
    m = run["result"]["metrics"]
    assert m["arrivals"] > 1000 and m["counts"]["stale_route_errors"] > 0
    assert m["residency"]["violations"] == 0


def test_the_golden_run_does_not_depend_on_the_workers_setting() -> None:
    assert _run(workers=2) == _run(workers=1)


def test_the_comparison_sees_a_change_and_tolerates_rounding() -> None:
    want = {"a": [1, 2.0, "x"], "b": {"c": 0.123456}}
    assert _differences(want, {"a": [1, 2.0 * (1 + 1e-9), "x"], "b": {"c": 0.123456}}) == []
    assert _differences(want, {"a": [1, 2.0, "x"], "b": {"c": 0.123457}}) == [
        ".b.c: 0.123457, golden has 0.123456"
    ]
    assert _differences(want, {"a": [2, 2.0, "x"], "b": {}}) == [
        ".a[0]: 2, golden has 1",
        ".b.c: missing",
    ]
