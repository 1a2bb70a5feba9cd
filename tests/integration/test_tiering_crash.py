"""Demotion crash test: a demoting process is killed at random points; no key is lost.

A child process demotes many keys from a real redis-server to Parquet and prints a line
per batch. The parent either SIGKILLs it after a random number of progress lines, or
the child ``os._exit``\\ s between the cold write and the hot delete of a chosen key.
Afterwards every key must be readable from the hot or the cold tier, with its value.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from geoshard.cluster.local.redis_procs import RedisServer
from geoshard.keys import DataKey
from geoshard.storage.parquet_store import ParquetColdStore, ParquetColdStoreConfig
from geoshard.storage.redis_store import RedisHotStore, RedisHotStoreConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]
N_KEYS = 400
#: Seconds the parent waits for one progress line of the child (a batch takes milliseconds).
LINE_TIMEOUT_S = 60.0

CHILD = textwrap.dedent("""
    import os, sys
    from geoshard.keys import DataKey, UserKey
    from geoshard.storage.parquet_store import ParquetColdStore, ParquetColdStoreConfig
    from geoshard.storage.redis_store import RedisHotStore, RedisHotStoreConfig
    from geoshard.storage.tiering import TierManager, TieringPolicy

    url, ns, root, n, crash_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    hot = RedisHotStore(RedisHotStoreConfig(url=url, namespace=ns), region="eu-west", residency=None)
    cold = ParquetColdStore(ParquetColdStoreConfig(root=root), "eu-west", None)
    keys = [DataKey("item_catalog", f"item-{i}") for i in range(n)]

    def hook(batch):
        if crash_at >= 0 and any(k.owner == f"item-{crash_at}" for k in batch):
            os._exit(137)  # between the verified cold write and the hot delete

    mgr = TierManager(hot, cold, policy=TieringPolicy(batch_size=10))
    for start in range(0, n, 10):
        mgr.demote(keys[start:start + 10], now_s=1714550400.0, on_cold_written=hook)
        print("batch", start, flush=True)
    print("done", flush=True)
""")


def _setup(url: str, n: int) -> tuple[str, list[DataKey], RedisHotStore]:
    ns = f"crash{uuid.uuid4().hex[:8]}"
    hot = RedisHotStore(
        RedisHotStoreConfig(url=url, namespace=ns), region="eu-west", residency=None
    )
    keys = [DataKey("item_catalog", f"item-{i}") for i in range(n)]
    hot.put_many([(k, f"value-{i}".encode()) for i, k in enumerate(keys)])
    return ns, keys, hot


def _assert_no_key_lost(hot: RedisHotStore, root: Path, keys: list[DataKey]) -> tuple[int, int]:
    cold = ParquetColdStore(ParquetColdStoreConfig(root=str(root)), "eu-west", None)
    in_hot = hot.get_many(keys)
    in_cold = cold.read_many(keys)
    lost = [
        str(k) for k, h, c in zip(keys, in_hot, in_cold, strict=True) if h is None and c is None
    ]
    assert not lost, f"{len(lost)} keys lost, e.g. {lost[:5]}"
    for i, (h, c) in enumerate(zip(in_hot, in_cold, strict=True)):
        assert (h or c) == f"value-{i}".encode()
    return sum(h is not None for h in in_hot), sum(c is not None for c in in_cold)


def _progress_lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The child's stdout lines, read by a thread, so the parent can wait with a deadline
    (``get(timeout=...)``) instead of blocking on ``readline`` for ever; "" marks the end."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _child(url: str, ns: str, root: Path, crash_at: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, ns, str(root), str(N_KEYS), str(crash_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_point_loses_no_key(
    redis_server: RedisServer, tmp_path: Path, seed: int
) -> None:
    url = redis_server.url
    ns, keys, hot = _setup(url, N_KEYS)
    lines_before_kill = random.Random(seed).randint(1, N_KEYS // 10 - 2)
    proc = _child(url, ns, tmp_path, -1)
    try:
        lines = _progress_lines(proc)
        for i in range(lines_before_kill):
            try:
                line = lines.get(timeout=LINE_TIMEOUT_S)
            except queue.Empty:
                pytest.fail(
                    f"the demoting child printed no progress line {i + 1} within "
                    f"{LINE_TIMEOUT_S:g} s"
                )
            assert line.startswith("batch"), (line, proc.stderr.read() if proc.stderr else "")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    n_hot, n_cold = _assert_no_key_lost(hot, tmp_path, keys)
    assert n_hot < N_KEYS and n_cold > 0  # the kill landed mid-demotion


def test_exit_between_cold_write_and_hot_delete_loses_no_key(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url
    ns, keys, hot = _setup(url, N_KEYS)
    crash_at = 237
    proc = _child(url, ns, tmp_path, crash_at)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 137, err[-2000:]
    assert "done" not in out
    n_hot, n_cold = _assert_no_key_lost(hot, tmp_path, keys)
    # the batch of the chosen key is in both tiers; earlier ones only in cold
    assert hot.get(keys[crash_at]) is not None
    assert (
        ParquetColdStore(ParquetColdStoreConfig(root=str(tmp_path)), "eu-west", None).read(
            keys[crash_at]
        )
        == f"value-{crash_at}".encode()
    )
    assert (n_hot, n_cold) == (N_KEYS - 230, 240)
