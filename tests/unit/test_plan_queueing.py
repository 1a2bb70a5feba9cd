"""The planner's queueing formulas and delay arithmetic against known answers.

* Erlang C reproduces sim-anchors §3.1 (M/M/8, lambda 6.4, mu 1: P(wait) 0.4576,
  Wq 0.2860) and every cell of the square-root staffing table of §3.2 (Netflix's betas at
  10, 100 and 1000 Erlangs, with the Halfin-Whitt limits).
* The M/G/c wait is Erlang C for exponential service, Pollaczek-Khinchine for one server,
  Allen-Cunneen above cs^2 = 1 and Cosmetatos' M/D/c correction below it.
* Sums and mixtures of delays on the grid give the textbook quantiles.
"""

from __future__ import annotations

import math

import pytest

from geoshard.errors import ConfigError
from geoshard.sim.delays import Delay, Grid
from geoshard.sim.queueing import (
    NETFLIX_BETAS,
    erlang_c,
    halfin_whitt_wait_probability,
    mgc_wait,
    servers_for_wait_probability,
    sqrt_staffing,
    wait_factor,
)
from geoshard.spec import LognormalDist

# sim-anchors §3.2: beta -> HW P(wait), then (c, Erlang C) at a = 10, 100, 1000
STAFFING_TABLE = {
    1.0: (0.2234, [(14, 0.1741), (110, 0.2370), (1032, 0.2231)]),
    1.16: (0.1667, [(14, 0.1741), (112, 0.1675), (1037, 0.1678)]),
    1.761: (0.0476, [(16, 0.0573), (118, 0.0516), (1056, 0.0492)]),
    2.375: (0.0100, [(18, 0.0159), (124, 0.0127), (1076, 0.0103)]),
}


def test_erlang_c_matches_the_mm8_anchor() -> None:
    w = mgc_wait(8, 6.4, 1.0, cs2=1.0)
    assert round(w.p_wait, 4) == 0.4576
    assert round(w.mean_ms, 4) == 0.2860
    # P(W > t) = C exp(-(c mu - lambda) t): the P99 is where that reaches 1 %
    assert w.quantile_ms(0.99) == pytest.approx(math.log(0.4576 / 0.01) / 1.6, rel=1e-3)


@pytest.mark.parametrize("beta", sorted(STAFFING_TABLE))
def test_square_root_staffing_reproduces_the_anchor_table(beta: float) -> None:
    hw, cells = STAFFING_TABLE[beta]
    assert round(halfin_whitt_wait_probability(beta), 4) == hw
    for a, (c, pw) in zip((10, 100, 1000), cells, strict=True):
        assert sqrt_staffing(a, beta) == c
        assert round(erlang_c(c, a), 4) == pw


def test_netflix_tier_zero_at_1000_erlangs_is_1076_servers_waiting_one_percent() -> None:
    c = sqrt_staffing(1000, NETFLIX_BETAS[0])
    assert c == 1076
    assert erlang_c(c, 1000) == pytest.approx(0.0103, abs=5e-5)
    # the fewest servers with Erlang C at or below that probability is the same count
    assert servers_for_wait_probability(1000, 0.0103) == 1076
    assert erlang_c(1075, 1000) > 0.0103


@pytest.mark.parametrize("cs2", [0.0, math.expm1(0.25), 1.0, 2.25])
def test_one_server_is_pollaczek_khinchine_exactly(cs2: float) -> None:
    lam, s = 0.7, 1.0
    w = mgc_wait(1, lam, s, cs2=cs2)
    assert w.mean_ms == pytest.approx(lam * s * s * (1 + cs2) / (2 * (1 - lam * s)))


def test_less_variable_service_waits_between_m_d_c_and_allen_cunneen() -> None:
    mm = mgc_wait(16, 13.6, 1.0, cs2=1.0)
    md = mgc_wait(16, 13.6, 1.0, cs2=0.0)
    ln = mgc_wait(16, 13.6, 1.0, cs2=math.expm1(0.25))
    gam = mgc_wait(16, 13.6, 1.0, cs2=2.25)
    assert md.p_wait == mm.p_wait == gam.p_wait  # Erlang C for the probability of waiting
    # Cosmetatos: M/D/c above half the M/M/c wait at moderate load, half in heavy traffic
    assert md.mean_ms / mm.mean_ms == pytest.approx(wait_factor(16, 0.85, 0.0))
    assert 0.5 < wait_factor(16, 0.85, 0.0) < 0.55
    assert wait_factor(16, 0.999, 0.0) == pytest.approx(0.5, abs=1e-3)
    assert md.mean_ms < ln.mean_ms < mm.mean_ms
    assert gam.mean_ms == pytest.approx(mm.mean_ms * (1 + 2.25) / 2)  # Allen-Cunneen above 1


def test_an_overloaded_pool_has_no_steady_state() -> None:
    w = mgc_wait(4, 5.0, 1.0, cs2=1.0)
    assert not w.stable and w.load == 1.25
    assert math.isinf(w.mean_ms) and math.isinf(w.quantile_ms(0.99))


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(ConfigError, match=r"servers \(=0\) must be >= 1"):
        erlang_c(0, 1.0)
    with pytest.raises(ConfigError, match=r"beta \(=-1\) must be >= 0"):
        sqrt_staffing(10, -1)


def test_a_sum_of_two_exponentials_has_the_gamma_quantiles() -> None:
    g = Grid(0.005, 8192)
    d = g.exponential(1.0).plus(g.exponential(1.0))
    # Gamma(2, 1): P99 = 6.6384, median 1.6783
    assert d.quantile(0.99) == pytest.approx(6.6384, abs=0.01)
    assert d.quantile(0.5) == pytest.approx(1.6783, abs=0.01)
    assert d.mean_ms == pytest.approx(2.0, abs=0.01)


def test_a_wait_on_the_grid_keeps_the_closed_form_tail() -> None:
    w = mgc_wait(8, 6.4, 1.0, cs2=1.0)
    d = Grid(0.002, 8192).wait(w)
    assert d.quantile(0.99) == pytest.approx(w.quantile_ms(0.99), rel=2e-3)
    assert d.mean_ms == pytest.approx(w.mean_ms, rel=2e-3)


def test_lognormal_service_keeps_its_mean_and_a_cap_moves_the_tail_to_the_budget() -> None:
    g = Grid(0.01, 8192)
    d = g.service(LognormalDist(mean_ms=4.0, sigma=0.5))
    assert d.mean_ms == pytest.approx(4.0, rel=2e-3)
    capped = d.capped(6.0)
    assert capped.survival(6.01) == 0.0
    assert d.truncated(6.0).mass == pytest.approx(1.0 - d.survival(6.0), abs=1e-3)


def test_a_mixture_of_shifted_delays_is_two_modes() -> None:
    g = Grid(0.01, 8192)
    near, far = g.constant(10.0), g.constant(40.0)
    mix = Delay.mixture([(0.7, near), (0.3, far)])
    assert mix.quantile(0.5) == pytest.approx(10.0, abs=0.01)
    assert mix.quantile(0.99) == pytest.approx(40.0, abs=0.01)
    assert mix.cdf(20.0) == pytest.approx(0.7, abs=1e-9)
