"""Simulator building blocks: histogram error bound, the population and its slice, rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from geoshard.sim.metrics import RELATIVE_ERROR_BOUND, LogHistogram
from geoshard.sim.population import HEAD_NODE_ERROR, Population
from geoshard.sim.ringload import RegionRing, head_hashes
from geoshard.sim.workload import rate_segments, start_of_day
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
    assert (
        a.count == 2 and a.quantile(0.5) == 0.0 and a.quantile(1.0) == pytest.approx(2.0, rel=0.005)
    )


def test_population_follows_zipf_and_scrambles_ids() -> None:
    pop = Population("x", 1000, 1.0, offset=0, scale=1.0, phase=0.0)
    users, head, ranks = pop.draw(np.random.default_rng(1), 200_000)
    h = sum(1 / k for k in range(1, 1001))
    assert not head.any()  # scale 1: every user is simulated, no head
    assert np.mean(ranks == 0) == pytest.approx(1 / h, rel=0.03)
    assert users.min() >= 0 and users.max() < 1000
    # rank 0 is not id 0 (hot users spread over the ring), and the permutation inverts
    assert int(pop.user_of_rank(0)) != 0
    assert all(
        pop.rank_of(int(u)) == int(r) for u, r in zip(users[:500], ranks[:500], strict=False)
    )


def test_population_tail_of_a_huge_population_stays_in_range() -> None:
    pop = Population("x", 50_000_000, 0.8, offset=7, scale=1.0, phase=0.0)
    users, _, _ = pop.draw(np.random.default_rng(2), 100_000)
    assert users.min() >= 7 and users.max() < 50_000_007


@pytest.mark.parametrize(
    ("n", "scale"), [(600_000_000, 0.01), (600_000_000, 0.001), (100_000, 0.1), (50, 0.01)]
)
def test_slice_simulates_exactly_the_scale_share_of_requests(n: int, scale: float) -> None:
    pop = Population("x", n, 0.8, offset=0, scale=scale, phase=0.37)
    # m x head share + sampled tail share = R: pools see R of the full traffic
    assert pop.sampled_share == pytest.approx(scale, rel=1e-3)
    assert pop.head == min(n, math.ceil(16 / scale))
    # the sampled tail carries R of the tail's requests (systematic sampling by rank)
    if pop.tail_keys:
        assert pop.tail_share == pytest.approx(scale * (1 - pop.head_share), rel=0.02)
    _users, head, ranks = pop.draw(np.random.default_rng(3), 50_000)
    assert ((ranks < pop.head) == head).all()
    stride = 1 / scale
    tail = ranks[~head]
    # every tail rank is one of the sampled ranks H + floor((k + phase) / R)
    k = np.round((tail - pop.head) / stride - 0.37)
    assert (pop.head + np.floor((k + 0.37) * stride) == tail).all()


def _node_load_errors(pop: Population, ring: RegionRing) -> np.ndarray:
    """Per node of ``ring``: the slice's expected share of the load (x 1/R) against the
    full population's, as relative errors."""
    names = list(ring.shares)
    index = {n: i for i, n in enumerate(names)}

    def node_ix(ranks: np.ndarray) -> np.ndarray:
        nodes = ring.first_nodes(head_hashes(pop.user_of_rank(ranks)))
        return np.array([index[n] for n in nodes])

    # full: the first 2^20 ranks key by key, the rest by arc share (exact in expectation)
    ranks = np.arange(min(pop.n, 1 << 20))
    weights = pop.popularity(ranks)
    at = node_ix(ranks)
    full = np.bincount(at, weights=weights, minlength=len(names))
    full += (1.0 - weights.sum()) * np.array([ring.shares[n] for n in names])
    # the slice: the head thinned to m, and the sampled tail with all of its requests
    h = pop.head
    part = np.bincount(at[:h], weights=weights[:h], minlength=len(names)) * pop.materialize_head
    tail = h + np.floor((np.arange(pop.tail_count) + pop._phase) * pop._stride).astype(np.int64)
    part += np.bincount(node_ix(tail), weights=pop.popularity(tail), minlength=len(names))
    return np.asarray(part / pop.scale / full - 1.0)


def test_the_head_keeps_each_hot_nodes_sampled_load_within_its_bound() -> None:
    # 16 hot nodes, a 1 % slice of 5M users: with only the 16 / R head, a node's load is
    # the sum over a few sampled mid-popularity users and is off by several percent
    ring = RegionRing.of("r", 16, {}, 256)
    old = _node_load_errors(Population("x", 5_000_000, 0.8, offset=0, scale=0.01, phase=0.37), ring)
    new_pop = Population("x", 5_000_000, 0.8, offset=0, scale=0.01, phase=0.37, nodes=16)
    new = _node_load_errors(new_pop, ring)
    rms_old, rms_new = float(np.sqrt((old**2).mean())), float(np.sqrt((new**2).mean()))
    assert new_pop.head > 1600
    assert rms_new <= 1.5 * HEAD_NODE_ERROR, (rms_old, rms_new)
    assert rms_old >= 2 * rms_new, (rms_old, rms_new)
    assert new_pop.sampled_share == pytest.approx(0.01, rel=1e-3)


def test_start_of_day_defaults_to_the_busiest_diurnal_step(repo_root) -> None:
    spec = load_spec(repo_root / "examples/global.yaml")
    assert start_of_day(spec) == 19 * 3600.0  # multiplier 1.0 at hour 19
    w = spec.workload.model_copy(update={"start_of_day_s": 0.0})
    assert start_of_day(spec.model_copy(update={"workload": w})) == 0.0


def test_rate_segments_apply_campaigns_and_the_peak_start(repo_root) -> None:
    spec = load_spec(repo_root / "examples/global-campaign.yaml")
    segs = rate_segments(spec, 60_000.0)
    at = {a: rates for a, _, rates in segs}
    # the run starts at the peak step: the full peak rate, in requests per ms
    assert at[0.0]["us-east"] == pytest.approx(220.0)
    assert at[40_000.0]["us-east"] == pytest.approx(3 * at[0.0]["us-east"])
    assert at[40_000.0]["eu-west"] == pytest.approx(at[0.0]["eu-west"])
    # extra cuts (the fault timeline) split segments without changing rates
    cut = rate_segments(spec, 60_000.0, cuts=[10_000.0])
    assert (10_000.0, 40_000.0) in {(a, b) for a, b, _ in cut}


def test_bulk_binning_equals_one_by_one_adds() -> None:
    from geoshard.sim.metrics import bin_into as _bin_into
    from geoshard.sim.metrics import bucket
    from geoshard.sim.metrics import buckets as _buckets

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.lognormal(1.0, 2.0, 20_000), np.zeros(50), rng.exponential(0.01, 500)])
    group = rng.integers(0, 7, len(x))
    b = _buckets(x)
    assert b.tolist() == [bucket(v) for v in x.tolist()]
    bulk = [LogHistogram() for _ in range(7)]
    _bin_into(bulk, group, b, x)
    single = [LogHistogram() for _ in range(7)]
    for g, v in zip(group.tolist(), x.tolist(), strict=False):
        single[g].add(v)
    for h1, h2 in zip(bulk, single, strict=False):
        assert h1.counts == h2.counts and h1.count == h2.count
        assert h1.total == pytest.approx(h2.total, rel=1e-12)
        assert h1.quantiles([0.5, 0.99]) == h2.quantiles([0.5, 0.99])
