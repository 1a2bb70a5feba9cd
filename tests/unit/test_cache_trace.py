"""Golden replay: the cloudPhysicsIO trace through LRU, FIFO and SIEVE.

The expected miss ratios are libCacheSim's (``cachesim``, shared/data/README.md),
deterministic, compared to 4 decimals.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from geoshard.storage.cache import FIFO, LRU, Sieve

TRACE_NAME = "cloudPhysicsIO.oracleGeneral.bin"
TRACE_SHA256 = "65438dd7b2d3dec7ffe8a5c9348045da92de3311f339b7b59c9a0a44e6050dea"
ORACLE_GENERAL = np.dtype([("ts", "<u4"), ("id", "<u8"), ("sz", "<u4"), ("nxt", "<i8")])

SIZES = (500, 1_000, 2_500, 5_000, 10_000, 20_000)
OBJECT_MISS_RATIOS = {
    LRU: (0.8378, 0.8327, 0.8244, 0.8038, 0.6976, 0.6328),
    FIFO: (0.8473, 0.8388, 0.8263, 0.8042, 0.6956, 0.6343),
    Sieve: (0.8288, 0.8253, 0.8169, 0.7886, 0.7118, 0.5658),
}
MIB = 2**20
# capacity -> (miss ratio, byte miss ratio), LRU in byte-capacity mode
LRU_BYTE_ROWS = {
    16 * MIB: (0.8351, 0.9803),
    64 * MIB: (0.8273, 0.9747),
    256 * MIB: (0.7885, 0.9298),
    1024 * MIB: (0.6297, 0.7009),
}


@pytest.fixture(scope="module")
def trace(shared_data: Path) -> tuple[list[int], list[int]]:
    path = shared_data / TRACE_NAME
    assert path.is_file(), f"{TRACE_NAME} is missing from {shared_data}"
    raw = path.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == TRACE_SHA256, f"{path} is not the expected trace"
    records = np.frombuffer(raw, dtype=ORACLE_GENERAL)
    assert len(records) == 113_872
    return records["id"].tolist(), records["sz"].tolist()


@pytest.mark.parametrize("policy", list(OBJECT_MISS_RATIOS), ids=lambda c: c.name)
def test_object_count_miss_ratios_match_libcachesim(
    policy: type[LRU], trace: tuple[list[int], list[int]]
) -> None:
    ids, _ = trace
    measured = []
    for size in SIZES:
        cache = policy(capacity_items=size)
        access = cache.access
        for key in ids:
            access(key)
        assert cache.stats.requests == len(ids)
        assert len(cache) == cache.used <= size
        measured.append(round(cache.stats.miss_ratio, 4))
    assert tuple(measured) == OBJECT_MISS_RATIOS[policy]


def test_lru_byte_capacity_miss_and_byte_miss_ratios(trace: tuple[list[int], list[int]]) -> None:
    ids, sizes = trace
    total_bytes = sum(sizes)
    for capacity, (miss_ratio, byte_miss_ratio) in LRU_BYTE_ROWS.items():
        cache = LRU(capacity_bytes=capacity)
        missed_bytes = 0
        for key, size in zip(ids, sizes, strict=True):
            if not cache.access(key, size):
                missed_bytes += size
        assert cache.used <= capacity
        assert round(cache.stats.miss_ratio, 4) == miss_ratio, capacity
        assert round(missed_bytes / total_bytes, 4) == byte_miss_ratio, capacity
