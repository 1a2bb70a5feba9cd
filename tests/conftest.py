"""Shared pytest configuration.

Fixtures that start real servers live in plugin modules beside this file, one per
server kind, so each can grow on its own:

* ``fixtures_redis``: standalone ``redis-server`` and a 3-primary / 3-replica Redis Cluster.
* ``fixtures_pg``: a PostgreSQL server from ``initdb`` / ``pg_ctl`` in a temp dir.
* ``fixtures_deploy``: a seeded local deployment (``geoshard up``) shared by a module.

Every fixture picks free loopback ports and stops its processes even when a test fails,
and when the run itself is stopped: SIGTERM (a CI timeout, ``kill``) is turned into
``KeyboardInterrupt``, so pytest unwinds and runs every fixture's teardown instead of
dying with its servers still running.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["fixtures_redis", "fixtures_pg", "fixtures_deploy"]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}: stopping, the fixtures stop their servers")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM unwinds like Ctrl-C (see the module docstring)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (examples/, benchmarks/ ...)."""
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared test data: ``$GEOSHARD_SHARED_DATA``, else the nearest
    ``shared/data`` beside the checkout or beside one of its parent folders (a checkout
    may sit one level deeper than the working copy, as CI's does)."""
    import os

    override = os.environ.get("GEOSHARD_SHARED_DATA")
    if override:
        d = Path(override)
    else:
        d = REPO.parent / "shared" / "data"
        for parent in REPO.parents:
            if (parent / "shared" / "data").is_dir():
                d = parent / "shared" / "data"
                break
    if not d.is_dir():
        pytest.skip(
            f"shared test data not found at {d}; set GEOSHARD_SHARED_DATA to the "
            "folder holding libCacheSim's sample traces"
        )
    return d
