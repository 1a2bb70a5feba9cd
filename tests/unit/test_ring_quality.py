"""Ring quality, the acceptance of the ring issue.

16 nodes, 1,000,000 int keys (0..999,999) and 1,000,000 string keys, 30 random node-name
sets from a seeded RNG:

* median max/mean load <= 1.05 at DEFAULT_VNODES (uhashring's defaults: ~1.14);
* bounded loads at eps=0.05: max/mean <= 1.05 for every set (also at 160 vnodes,
  where plain max/mean is ~1.14 and the cap binds);
* adding a 17th node moves <= 1.10 x 1/17 of the keys, none between two old nodes.

Keys are hashed once and every ring is evaluated on the same positions, which is what
keeps 30 x 1M lookups within seconds.
"""

from __future__ import annotations

import random
import string
from statistics import median

import numpy as np
import pytest

from geoshard.shards import DEFAULT_VNODES, HashRing, hash_keys, plan_rebalance

SETS = 30
NODES = 16
KEYS = 1_000_000
_ALPHABET = string.ascii_lowercase + string.digits


def _name(rng: random.Random) -> str:
    return "".join(rng.choices(_ALPHABET, k=rng.randint(6, 14)))


@pytest.fixture(scope="module")
def name_sets() -> list[list[str]]:
    rng = random.Random(20240601)
    sets = []
    for _ in range(SETS):
        names: set[str] = set()
        while len(names) < NODES + 1:  # the 17th joins later
            names.add(_name(rng))
        sets.append(sorted(names))
    return sets


@pytest.fixture(scope="module")
def int_hashes() -> np.ndarray:
    return hash_keys(np.arange(KEYS, dtype=np.uint64))


@pytest.fixture(scope="module")
def str_hashes() -> np.ndarray:
    return hash_keys([f"user:{i}" for i in range(KEYS)])


def _max_over_mean(ring: HashRing, hashes: np.ndarray) -> float:
    loads = np.bincount(ring.owners_of_hashes(hashes), minlength=len(ring))
    return float(loads.max() / loads.mean())


def test_median_max_over_mean_at_default_vnodes(
    name_sets: list[list[str]], int_hashes: np.ndarray, str_hashes: np.ndarray
) -> None:
    int_ratios, str_ratios = [], []
    for names in name_sets:
        ring = HashRing(names[:NODES])
        int_ratios.append(_max_over_mean(ring, int_hashes))
        str_ratios.append(_max_over_mean(ring, str_hashes))
    print(
        f"\nvnodes={DEFAULT_VNODES}: max/mean over {SETS} sets, int keys median "
        f"{median(int_ratios):.4f} worst {max(int_ratios):.4f}; str keys median "
        f"{median(str_ratios):.4f} worst {max(str_ratios):.4f}"
    )
    assert median(int_ratios) <= 1.05
    assert median(str_ratios) <= 1.05


@pytest.mark.parametrize("vnodes", [DEFAULT_VNODES, 160])
def test_bounded_loads_cap_every_set(name_sets: list[list[str]], vnodes: int) -> None:
    # At 160 vnodes (uhashring's default) plain max/mean is ~1.14, so the cap binds.
    keys = np.arange(KEYS, dtype=np.uint64)
    spills, ratios = [], []
    for names in name_sets:
        result = HashRing(names[:NODES], vnodes=vnodes).assign_bounded(keys, eps=0.05)
        assert result.loads.sum() == KEYS
        assert result.max_over_mean <= 1.05, names
        spills.append(result.spill_fraction)
        ratios.append(result.max_over_mean)
    print(
        f"\nbounded eps=0.05, vnodes={vnodes}, {SETS} sets: max/mean worst "
        f"{max(ratios):.4f}; spill median {100 * median(spills):.3f} % "
        f"worst {100 * max(spills):.3f} %"
    )


def test_adding_a_17th_node_moves_about_one_seventeenth(name_sets: list[list[str]]) -> None:
    keys = np.arange(KEYS, dtype=np.uint64)
    ratios = []
    for names in name_sets:
        old = HashRing(names[:NODES])
        new = old.with_node(names[NODES])
        plan = plan_rebalance(old, new, keys)
        assert plan.ideal_fraction == pytest.approx(1 / 17)
        assert plan.moved_between_kept_nodes == 0
        assert {dst for _, dst in plan.moves} == {names[NODES]}
        assert plan.ratio_to_ideal <= 1.10, names
        ratios.append(plan.ratio_to_ideal)
    print(
        f"\nadd 17th node over {SETS} sets: moved/ideal median {median(ratios):.4f} "
        f"worst {max(ratios):.4f}"
    )
