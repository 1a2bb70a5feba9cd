"""The warm start: caches begin at their steady state, checked against a long cold run.

``examples/validation/warm.yaml`` has caches small and short-lived enough for a cold run
to reach its steady state in a few simulated minutes, with an inclusive regional level
only twice the size of L2 (where a filtered-stream model overstates it) and writes that
invalidate every shared level (where it overstates hot keys).
"""

from __future__ import annotations

from typing import Any

import pytest

from geoshard.sim.engine import EngineOptions
from geoshard.sim.run import simulate_spec
from geoshard.spec import load_spec


def _hits(result: dict[str, Any]) -> tuple[dict[str, float], float]:
    cs = result["metrics"]["caches"]
    lookups = cs["l1"]["hits"] + cs["l1"]["misses"]
    return (
        {k: v["hit_ratio"] for k, v in cs.items()},
        sum(v["hits"] for v in cs.values()) / lookups,
    )


@pytest.fixture(scope="module")
def cold_steady_state(repo_root) -> tuple[dict[str, float], float]:
    spec = load_spec(repo_root / "examples/validation/warm.yaml")
    result, _ = simulate_spec(
        spec,
        seed=1,
        duration_s=360.0,
        warmup_s=240.0,
        options=EngineOptions(warm_start=False),
        workers=1,
    )
    return _hits(result)


def test_first_seconds_after_a_warm_start_match_a_long_cold_run(
    repo_root, cold_steady_state
) -> None:
    spec = load_spec(repo_root / "examples/validation/warm.yaml")
    levels, overall = cold_steady_state
    runs = [
        _hits(simulate_spec(spec, seed=s, duration_s=10.0, warmup_s=0.0, workers=1)[0])
        for s in (2, 3)
    ]
    warm_overall = sum(o for _, o in runs) / len(runs)
    # any level answered: within 1 point of the steady state from the first second
    assert warm_overall == pytest.approx(overall, abs=0.01), (runs, cold_steady_state)
    for name, ratio in levels.items():
        warm = sum(lv[name] for lv, _ in runs) / len(runs)
        assert warm == pytest.approx(ratio, abs=0.02), (name, runs, cold_steady_state)


def test_a_cold_start_measures_a_warm_up(repo_root, cold_steady_state) -> None:
    spec = load_spec(repo_root / "examples/validation/warm.yaml")
    result, _ = simulate_spec(
        spec,
        seed=2,
        duration_s=10.0,
        warmup_s=0.0,
        options=EngineOptions(warm_start=False),
        workers=1,
    )
    _, cold_first = _hits(result)
    # the check above can fail: empty caches start far below their steady state
    assert cold_first < cold_steady_state[1] - 0.05


def test_the_calibration_replay_corrects_the_model_and_is_reported(repo_root) -> None:
    spec = load_spec(repo_root / "examples/validation/warm.yaml")
    result, _ = simulate_spec(spec, seed=2, duration_s=5.0, workers=1)
    model = result["metrics"]["cache_model"]["r1"]
    assert model["regional"]["calibrated"] and model["l2"]["calibrated"]
    assert any("calibrat" in a for a in result["assumptions"])
    plain, _ = simulate_spec(
        spec, seed=2, duration_s=5.0, workers=1, options=EngineOptions(calibrate=False)
    )
    uncal = plain["metrics"]["cache_model"]["r1"]["regional"]
    assert not uncal["calibrated"]
    # inclusive levels of comparable size: the model alone overstates the regional level
    assert uncal["model_hit_ratio"] > model["regional"]["model_hit_ratio"]
