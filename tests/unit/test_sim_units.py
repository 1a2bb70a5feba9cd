"""Simulator building blocks: histogram error bound, Zipf keys, scaling, rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geoshard.errors import ConfigError
from geoshard.sim.metrics import RELATIVE_ERROR_BOUND, LogHistogram
from geoshard.sim.workload import ZipfKeys, rate_segments, scale_spec
from geoshard.spec import load_spec


def test_histogram_quantiles_within_half_a_percent() -> None:
    rng = np.random.default_rng(3)
    xs = rng.lognormal(0.0, 1.5, 50_000)
    h = LogHistogram()
    for x in xs.tolist():
        h.add(x)
    ys = np.sort(xs)
    for q in (0.5, 0.95, 0.99, 0.999):
        exact = ys[math.ceil(q * len(ys)) - 1]
        assert abs(h.quantile(q) / exact - 1) <= RELATIVE_ERROR_BOUND + 1e-12
    assert h.mean == pytest.approx(float(xs.mean()), rel=1e-9)
    assert RELATIVE_ERROR_BOUND < 0.005


def test_histogram_zero_and_merge() -> None:
    a, b = LogHistogram(), LogHistogram()
    a.add(0.0)
    b.add(2.0)
    a.merge(b)
    assert a.count == 2 and a.quantile(0.5) == 0.0 and a.quantile(1.0) == pytest.approx(2.0, rel=0.005)


def test_zipf_keys_follow_zipf_and_are_scrambled() -> None:
    z = ZipfKeys(1000, 1.0, np.random.default_rng(1))
    ranks = z.ranks(200_000)
    h = sum(1 / k for k in range(1, 1001))
    assert np.mean(ranks == 0) == pytest.approx(1 / h, rel=0.03)
    ids = z.draw(10)
    assert ids.min() >= 0 and ids.max() < 1000
    # rank 0 is not id 0: hot users spread over the ring
    assert int(z.draw(1)[0]) >= 0 and (0 * z._a + z._b) % 1000 != 0


def test_zipf_tail_of_a_huge_population_stays_in_range() -> None:
    z = ZipfKeys(50_000_000, 0.8, np.random.default_rng(2))
    ids = z.draw(100_000)
    assert ids.min() >= 0 and ids.max() < 50_000_000


def test_scale_spec_scales_nodes_traffic_and_keys(repo_root) -> None:
    spec = load_spec(repo_root / "examples/global.yaml")
    eff, notes = scale_spec(spec, 0.01)
    assert eff.regions["eu-west"].hot.nodes == 1  # round(48 x 0.01) = 0 -> at least 1
    assert eff.workload.users == 20_000_000
    assert eff.workload.peak_qps["us-east"] == pytest.approx(2200)
    assert any("not scaled" in n for n in notes)


def test_scale_out_of_range_is_a_config_error(repo_root) -> None:
    spec = load_spec(repo_root / "examples/local.yaml")
    with pytest.raises(ConfigError, match=r"--scale \(=0\) must be in \(0, 1\]"):
        scale_spec(spec, 0)


def test_rate_segments_apply_campaigns(repo_root) -> None:
    spec, _ = scale_spec(load_spec(repo_root / "examples/global.yaml"), 0.001)
    segs = rate_segments(spec, 60_000.0)
    at = {a: rates for a, _, rates in segs}
    assert at[40_000.0]["us-east"] == pytest.approx(3 * at[0.0]["us-east"])
    assert at[40_000.0]["eu-west"] == pytest.approx(at[0.0]["eu-west"])


def test_bulk_binning_equals_one_by_one_adds() -> None:
    from geoshard.sim.engine import _bin_into, _buckets
    from geoshard.sim.metrics import bucket

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.lognormal(1.0, 2.0, 20_000), np.zeros(50), rng.exponential(0.01, 500)])
    group = rng.integers(0, 7, len(x))
    b = _buckets(x)
    assert b.tolist() == [bucket(v) for v in x.tolist()]
    bulk = [LogHistogram() for _ in range(7)]
    _bin_into(bulk, group, b, x)
    single = [LogHistogram() for _ in range(7)]
    for g, v in zip(group.tolist(), x.tolist()):
        single[g].add(v)
    for h1, h2 in zip(bulk, single):
        assert h1.counts == h2.counts and h1.count == h2.count
        assert h1.total == pytest.approx(h2.total, rel=1e-12)
        assert h1.quantiles([0.5, 0.99]) == h2.quantiles([0.5, 0.99])
